"""An edit of the app's Python sources, into Docker, is built from the last build's record (:mod:`gpuship.editbuild`):
the image, the build report and the SBOM are those a full build of the same inputs makes; an edit the record
cannot vouch for (a new file, an executable, a private key, the project's inputs) runs the full build."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from build_support import copy_example, gpuship

EDIT_PATH = "changed since the last build"
UNCHANGED = "unchanged since the last build"


def _own_copy(tmp_path: Path) -> Path:
    """numpy-hello with an edit of its own: an image no other build (or benchmark) holds in the engine."""
    project = copy_example("numpy-hello", tmp_path)
    _append(project / "main.py", f"# {uuid.uuid4().hex}")
    return project


def _append(path: Path, line: str) -> None:
    path.write_text(path.read_text() + f"\n{line}\n")


def _build(project: Path, tmp_path: Path, cache: Path, name: str, tag: str, env: dict[str, str] | None = None):  # noqa: ANN202
    report = tmp_path / f"{name}.json"
    proc = gpuship(
        "build", str(project), "-t", tag, "-o", f"docker:{tag}", "--report", str(report), cache=cache, env=env
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(report.read_text()), proc


def _comparable(report: dict) -> dict:
    out = {k: v for k, v in report.items() if k not in ("seconds", "written")}
    out["platforms"] = [
        dict(p, layers=[{k: v for k, v in layer.items() if k != "reused"} for layer in p["layers"]])
        for p in report["platforms"]
    ]
    return out


def test_an_app_edit_builds_the_image_a_full_build_makes(tmp_path: Path, build_cache: Path, docker) -> None:  # noqa: ANN001
    project = _own_copy(tmp_path)
    tags = [docker.tag() for _ in range(3)]
    try:
        first, _ = _build(project, tmp_path, build_cache, "first", tags[0])
        _append(project / "main.py", "print('edited by the test')")
        edited, proc = _build(project, tmp_path, build_cache, "edited", tags[1])
        assert "only main.py " + EDIT_PATH in proc.stderr, proc.stderr
        assert edited["digest"] != first["digest"] and proc.stdout.strip() == edited["digest"]
        layers = edited["platforms"][0]["layers"]
        assert [x["group"] for x in layers if not x["reused"]] == ["app"], layers
        assert "1 of 7 layers sent" in edited["written"][0], edited["written"]
        assert "edited by the test" in docker.run("run", "--rm", tags[1]).stdout

        # the same inputs built in full (another GPUSHIP_ variable: no record): the same image, report and SBOM
        full, proc = _build(project, tmp_path, build_cache, "full", tags[1], env={"GPUSHIP_X": "1"})
        assert EDIT_PATH not in proc.stderr and UNCHANGED not in proc.stderr, proc.stderr
        assert full["digest"] == edited["digest"]
        assert _comparable(full) == _comparable(edited)
        assert (tmp_path / "full.spdx.json").read_text() == (tmp_path / "edited.spdx.json").read_text()

        # the edit build is remembered: no change is a tag; the next edit starts from it, even once the engine
        # lost the image (then what it lacks is sent)
        again, proc = _build(project, tmp_path, build_cache, "again", tags[2])
        assert UNCHANGED in proc.stderr and again["digest"] == edited["digest"], proc.stderr
        docker.run("rmi", "-f", *tags)
        _append(project / "main.py", "print('edited twice')")
        twice, proc = _build(project, tmp_path, build_cache, "twice", tags[2])
        assert EDIT_PATH in proc.stderr and "layers sent" in twice["written"][0], twice["written"]
        assert "edited twice" in docker.run("run", "--rm", tags[2]).stdout
        full, _ = _build(project, tmp_path, build_cache, "full2", tags[2], env={"GPUSHIP_X": "2"})
        assert full["digest"] == twice["digest"]
    finally:
        docker.run("rmi", "-f", *tags, check=False)


def test_edits_the_record_cannot_vouch_for_build_in_full(tmp_path: Path, build_cache: Path, docker) -> None:  # noqa: ANN001
    project = _own_copy(tmp_path)
    helper = project / "helper.py"
    helper.write_text("X = 1\n")
    tag = docker.tag()
    key = (
        "-----BEGIN "
        + "PRIVATE KEY-----\n"
        + "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMx\n" * 4
        + "-----END "
        + "PRIVATE KEY-----\n"
    )
    try:
        _build(project, tmp_path, build_cache, "first", tag)
        edits = [
            ("a private key", lambda: _append(helper, f'KEY = """{key}"""')),
            ("an executable", lambda: (project / "main.py").chmod(0o755)),
            ("a new file", lambda: (project / "extra.py").write_text("Y = 2\n")),
            ("the project's inputs", lambda: _append(project / "pyproject.toml", "# edited")),
        ]
        for what, edit in edits:
            edit()
            report, proc = _build(project, tmp_path, build_cache, "x", tag)
            assert EDIT_PATH not in proc.stderr and UNCHANGED not in proc.stderr, (what, proc.stderr)
            assert report["secrets_skipped"] == ["helper.py"]  # the private key: left out by the full build
        # and from the full build, an edit of an app source takes the short way again
        _append(project / "extra.py", "Z = 3")
        _, proc = _build(project, tmp_path, build_cache, "y", tag)
        assert "only extra.py " + EDIT_PATH in proc.stderr, proc.stderr
    finally:
        docker.run("rmi", "-f", tag, check=False)


def test_a_gpu_app_shipping_a_library_builds_the_same_image(tmp_path: Path, build_cache: Path, docker) -> None:  # noqa: ANN001
    """A GPU image (gpuship-check, find-libdeps over the app's own kernel library): an edit of main.py takes the
    short way when the app layer is as made (prune-archs off) and the full one when pruning rewrote it."""
    project = copy_example("cuda-kernel-lib", tmp_path)
    _append(project / "main.py", f"# {uuid.uuid4().hex}")
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('targets = ["H100"]', 'targets = ["H100"]\nprune-archs = false'))
    tag = docker.tag()
    try:
        first, _ = _build(project, tmp_path, build_cache, "first", tag)
        assert [x["group"] for x in first["platforms"][0]["layers"]][-2:] == ["gpu-check", "app"]
        _append(project / "main.py", "# edited")
        edited, proc = _build(project, tmp_path, build_cache, "edited", tag)
        assert "only main.py " + EDIT_PATH in proc.stderr, proc.stderr
        full, _ = _build(project, tmp_path, build_cache, "full", tag, env={"GPUSHIP_X": "1"})
        assert full["digest"] == edited["digest"] and _comparable(full) == _comparable(edited)
        assert (tmp_path / "full.spdx.json").read_text() == (tmp_path / "edited.spdx.json").read_text()

        pyproject.write_text(pyproject.read_text().replace("prune-archs = false", "prune-archs = true"))
        pruned, _ = _build(project, tmp_path, build_cache, "pruned", tag)
        assert pruned["platforms"][0]["layers"][-1]["what"].endswith("(GPU code pruned)")
        _append(project / "main.py", "# edited again")
        _, proc = _build(project, tmp_path, build_cache, "again", tag)
        assert EDIT_PATH not in proc.stderr and UNCHANGED not in proc.stderr, proc.stderr
    finally:
        docker.run("rmi", "-f", tag, check=False)
