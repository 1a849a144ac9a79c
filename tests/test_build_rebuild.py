"""Same inputs, same digest; an app edit rebuilds only the app layer; --locked refuses a stale lock."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from build_support import copy_example, gpuship, one_error_line


def _build(project: Path, tmp_path: Path, cache: Path, name: str, *extra: str) -> dict:
    report = tmp_path / f"{name}.json"
    proc = gpuship(
        "build", str(project), "-o", f"oci-archive:{tmp_path / name}.tar", "--report", str(report), *extra, cache=cache
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(report.read_text())


def test_rebuild_reuses_layers_and_app_edit_rebuilds_only_app(tmp_path: Path, build_cache: Path) -> None:
    cache = build_cache
    project = copy_example("numpy-hello", tmp_path)
    first = _build(project, tmp_path, cache, "first")
    second = _build(project, tmp_path, cache, "second")
    assert first["digest"] == second["digest"]
    assert all(layer["reused"] for layer in second["platforms"][0]["layers"]), second["platforms"][0]["layers"]

    main = project / "main.py"
    # an edit no earlier run made: a reused GPUSHIP_TEST_CACHE would otherwise hold its app layer already
    main.write_text(main.read_text() + f"\nprint('edited {uuid.uuid4().hex}')\n")
    third = _build(project, tmp_path, cache, "third")
    assert third["digest"] != first["digest"]
    layers = third["platforms"][0]["layers"]
    rebuilt = [layer["group"] for layer in layers if not layer["reused"]]
    assert rebuilt == ["app"], layers
    before = [layer["digest"] for layer in first["platforms"][0]["layers"]]
    after = [layer["digest"] for layer in layers]
    assert before[:-1] == after[:-1] and before[-1] != after[-1]


def test_locked_refuses_a_stale_lock(tmp_path: Path, build_cache: Path) -> None:
    cache = build_cache
    project = copy_example("numpy-hello", tmp_path)
    _build(project, tmp_path, cache, "first")
    assert (project / "gpuship.lock").is_file()
    _build(project, tmp_path, cache, "again", "--locked")  # unchanged inputs: the lock is accepted
    pyproject = project / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace('dependencies = ["numpy>=1.26"]', 'dependencies = ["numpy>=1.26", "packaging"]')
    )
    proc = gpuship("build", str(project), "--locked", "-o", f"oci-archive:{tmp_path}/x.tar", cache=cache)
    line = one_error_line(proc)
    assert "gpuship.lock is out of date" in line and "without --locked" in line
    assert not (tmp_path / "x.tar").exists()


def test_layers_built_side_by_side_match_one_at_a_time(tmp_path: Path, build_cache: Path) -> None:
    """The environment's groups (cuda, deps) and their pruning run on parallel threads (GPUSHIP_JOBS); the image
    is the same bytes as when they are built one at a time, and as a warm cache's."""
    import shutil
    import subprocess

    project = copy_example("cuda-ptx-matmul", tmp_path)
    warm = _build(project, tmp_path, build_cache, "warm")  # downloads go into build_cache once
    digests = {}
    for jobs in ("1", "2"):
        cache = tmp_path / f"cache-{jobs}"
        subprocess.run(["cp", "-al", str(build_cache), str(cache)], check=True)  # the downloads, not the layers
        for kind in ("layers", "python-groups", "prune-reports"):
            shutil.rmtree(cache / "refs" / kind, ignore_errors=True)
        report = tmp_path / f"jobs-{jobs}.json"
        proc = gpuship(
            "build",
            str(project),
            "-o",
            f"oci-archive:{tmp_path / jobs}.tar",
            "--report",
            str(report),
            cache=cache,
            env={"GPUSHIP_JOBS": jobs},
        )
        assert proc.returncode == 0, proc.stderr
        data = json.loads(report.read_text())
        assert not any(
            layer["reused"] for layer in data["platforms"][0]["layers"] if layer["group"] in ("cuda", "deps")
        )
        digests[jobs] = data["digest"]
    assert digests == {"1": warm["digest"], "2": warm["digest"]}


def test_edit_rebuild_to_docker_sends_only_the_app_layer(tmp_path: Path, build_cache: Path, docker) -> None:  # noqa: ANN001
    """Into the Docker Engine: a no-change rebuild is answered from the last build's record (one docker tag), an
    edit rebuild sends a partial archive (the app layer alone) and the container runs the edited code; an image
    removed from the engine is loaded again."""
    project = copy_example("numpy-hello", tmp_path)
    tag = docker.tag()
    try:
        first, _ = _build_to(project, tmp_path, build_cache, "first", f"docker:{tag}")
        again, proc = _build_to(project, tmp_path, build_cache, "again", f"docker:{tag}")
        assert again["digest"] == first["digest"]
        assert "unchanged since the last build" in proc.stderr, proc.stderr
        assert again["written"] == [f"loaded into Docker as {tag} (the engine had the image: tagged)"]
        assert (tmp_path / "again.spdx.json").read_text() == (tmp_path / "first.spdx.json").read_text()

        main = project / "main.py"
        main.write_text(main.read_text() + "\nprint('edited by the test')\n")
        edited, proc = _build_to(project, tmp_path, build_cache, "edited", f"docker:{tag}")
        assert "unchanged since the last build" not in proc.stderr
        n = len(edited["platforms"][0]["layers"])
        assert f"1 of {n} layers sent" in edited["written"][0], edited["written"]
        assert "edited by the test" in docker.run("run", "--rm", tag).stdout

        image_id = json.loads(docker.run("image", "inspect", tag).stdout)[0]["Id"]
        docker.run("rmi", "-f", image_id)
        back, proc = _build_to(project, tmp_path, build_cache, "back", f"docker:{tag}")
        assert "unchanged since the last build" not in proc.stderr
        assert back["digest"] == edited["digest"] and "layers sent" in back["written"][0]
        assert "edited by the test" in docker.run("run", "--rm", tag).stdout
    finally:
        docker.run("rmi", "-f", tag, check=False)


def _build_to(project: Path, tmp_path: Path, cache: Path, name: str, output: str) -> tuple[dict, object]:
    report = tmp_path / f"{name}.json"
    proc = gpuship("build", str(project), "-o", output, "--report", str(report), cache=cache)
    assert proc.returncode == 0, proc.stderr
    return json.loads(report.read_text()), proc
