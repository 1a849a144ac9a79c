"""A no-change rebuild to another ``docker:`` name (or ``--tag``) is answered from the last build's record with one
``docker tag`` of its image ID, the report and the SBOM naming the new image as a full build would; any other
change still builds."""

from __future__ import annotations

import io
import json
import tarfile
import uuid
from pathlib import Path

from build_support import copy_example, gpuship

UNCHANGED = "unchanged since the last build"


def _build(project: Path, tmp_path: Path, cache: Path, name: str, *args: str, env: dict[str, str] | None = None):  # noqa: ANN202
    report = tmp_path / f"{name}.json"
    proc = gpuship("build", str(project), *args, "--report", str(report), cache=cache, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(report.read_text()), proc


def _own_copy(tmp_path: Path) -> Path:
    """numpy-hello with an edit of its own: an image no other build (or benchmark) holds in the engine."""
    project = copy_example("numpy-hello", tmp_path)
    main = project / "main.py"
    main.write_text(main.read_text() + f"\n# {uuid.uuid4().hex}\n")
    return project


def _image_id(docker, tag: str) -> str:  # noqa: ANN001
    return json.loads(docker.run("image", "inspect", tag).stdout)[0]["Id"]


def _same_but_names(a: dict, b: dict) -> None:
    for key in ("image", "outputs", "written", "seconds"):
        a.pop(key), b.pop(key)
    assert a == b


def test_no_change_rebuild_to_a_new_tag_is_a_docker_tag(tmp_path: Path, build_cache: Path, docker) -> None:  # noqa: ANN001
    project = _own_copy(tmp_path)
    tags = [docker.tag() for _ in range(4)]
    try:
        first, _ = _build(project, tmp_path, build_cache, "first", "-t", tags[0], "-o", f"docker:{tags[0]}")
        second, proc = _build(project, tmp_path, build_cache, "second", "-t", tags[1], "-o", f"docker:{tags[1]}")
        assert UNCHANGED in proc.stderr, proc.stderr
        assert second["written"] == [f"loaded into Docker as {tags[1]} (the engine had the image: tagged)"]
        assert second["digest"] == first["digest"] and proc.stdout.strip() == first["digest"]
        assert _image_id(docker, tags[1]) == _image_id(docker, tags[0])
        assert second["image"] == tags[1] and second["outputs"] == [f"docker:{tags[1]}"]
        sbom = json.loads((tmp_path / "second.spdx.json").read_text())
        assert sbom["name"] == f"{tags[1]}@{first['digest']}"
        assert [p["name"] for p in sbom["packages"] if p["SPDXID"] == "SPDXRef-image"] == [tags[1]]

        # the same request built in full (another GPUSHIP_ variable: another record key) writes the same files
        full, proc = _build(
            project, tmp_path, build_cache, "full", "-t", tags[1], "-o", f"docker:{tags[1]}", env={"GPUSHIP_X": "1"}
        )
        assert UNCHANGED not in proc.stderr, proc.stderr
        assert (tmp_path / "full.spdx.json").read_text() == (tmp_path / "second.spdx.json").read_text()
        assert full["image"] == second["image"] and full["outputs"] == second["outputs"]
        _same_but_names(full, second)

        # without --tag, the docker: output's name is the engine's; the report names the project's name:version
        third, proc = _build(project, tmp_path, build_cache, "third", "-o", f"docker:{tags[2]}")
        assert UNCHANGED in proc.stderr, proc.stderr
        assert third["image"] == "numpy-hello:0.1.0" and third["outputs"] == [f"docker:{tags[2]}"]
        assert _image_id(docker, tags[2]) == _image_id(docker, tags[0])
        assert json.loads((tmp_path / "third.spdx.json").read_text())["name"] == f"numpy-hello:0.1.0@{first['digest']}"

        # the name the record was made with is gone, the image is still held (benchmark: cold1 removed, cold2 made
        # the same image from another cache): a tag
        docker.run("rmi", tags[0], tags[1])
        fourth, proc = _build(project, tmp_path, build_cache, "fourth", "-t", tags[3], "-o", f"docker:{tags[3]}")
        assert UNCHANGED in proc.stderr and _image_id(docker, tags[3]) == _image_id(docker, tags[2]), proc.stderr
    finally:
        docker.run("rmi", "-f", *tags, check=False)


def test_a_new_tag_with_other_changes_still_builds(tmp_path: Path, build_cache: Path, docker) -> None:  # noqa: ANN001
    project = _own_copy(tmp_path)
    tags = [docker.tag() for _ in range(4)]
    try:
        first, _ = _build(project, tmp_path, build_cache, "first", "-o", f"docker:{tags[0]}")
        # another output beside the engine: the tag names the archive's image, so it is part of the request
        archive = tmp_path / "x.tar"
        _, proc = _build(
            project, tmp_path, build_cache, "a", "-t", tags[1], "-o", f"docker:{tags[1]},oci-archive:{archive}"
        )
        assert UNCHANGED not in proc.stderr
        _, proc = _build(
            project, tmp_path, build_cache, "b", "-t", tags[2], "-o", f"docker:{tags[2]},oci-archive:{archive}"
        )
        assert UNCHANGED not in proc.stderr
        # the engine lost the image: loaded again under the new name
        docker.run("rmi", "-f", *tags[:3])
        again, proc = _build(project, tmp_path, build_cache, "again", "-o", f"docker:{tags[3]}")
        assert UNCHANGED not in proc.stderr and "layers sent" in again["written"][0], again["written"]
        assert again["digest"] == first["digest"]
        # a changed input, to a new name: built
        (project / "pyproject.toml").write_text((project / "pyproject.toml").read_text() + "\n# changed\n")
        edited, proc = _build(project, tmp_path, build_cache, "edited", "-o", f"docker:{tags[0]}")
        assert UNCHANGED not in proc.stderr and edited["digest"] != first["digest"]
        code = "print(open('pyproject.toml').read())"
        assert "# changed" in docker.run("run", "--rm", "--entrypoint", "python", tags[0], "-c", code).stdout
    finally:
        docker.run("rmi", "-f", *tags, check=False)


def test_a_build_from_an_empty_cache_is_remembered(tmp_path: Path, docker) -> None:  # noqa: ANN001
    """A cold build learns the host Pythons on its way (a record in the cache the key covers): its answer is
    still remembered, so the next no-change build — the benchmark's first after a cold one — is one tag."""
    project = _own_copy(tmp_path)
    cache = tmp_path / "empty-cache"
    tags = [docker.tag() for _ in range(2)]
    try:
        first, _ = _build(project, tmp_path, cache, "cold", "-t", tags[0], "-o", f"docker:{tags[0]}")
        second, proc = _build(project, tmp_path, cache, "again", "-t", tags[1], "-o", f"docker:{tags[1]}")
        assert UNCHANGED in proc.stderr, proc.stderr
        assert second["digest"] == first["digest"]
    finally:
        docker.run("rmi", "-f", *tags, check=False)


def test_the_answer_tags_through_the_engine_socket(monkeypatch, docker, tmp_path: Path) -> None:  # noqa: ANN001
    """The no-change answer tags over the engine's socket where the docker command would use it (no CLI start-up):
    201 tags, 404 says the image is gone; another host or context is left to the command."""
    from gpuship.rebuild import _socket_tag, engine_socket

    assert engine_socket() is not None
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        info = tarfile.TarInfo(f"marker-{uuid.uuid4().hex}")
        tar.addfile(info, io.BytesIO(b""))
    image_id = docker.run("import", "-", input=data.getvalue()).stdout.decode().strip()
    name = docker.tag()
    try:
        assert _socket_tag(image_id, name) is True
        assert _image_id(docker, name) == image_id
        assert _socket_tag("sha256:" + "0" * 64, docker.tag()) is False
    finally:
        docker.run("rmi", "-f", name, image_id, check=False)
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:2375")
    assert engine_socket() is None and _socket_tag(image_id, name) is None
    monkeypatch.delenv("DOCKER_HOST")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    (tmp_path / "config.json").write_text('{"currentContext": "remote"}')
    assert engine_socket() is None
    (tmp_path / "config.json").write_text('{"currentContext": "default"}')
    assert engine_socket() is not None
