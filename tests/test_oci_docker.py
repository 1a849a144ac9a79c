"""docker-archive and engine loading, against the real Docker Engine and skopeo."""

from __future__ import annotations

import json
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest

from gpuship.cache import Cache
from gpuship.errors import GpushipError
from gpuship.oci.docker_archive import DockerTag, write_docker_archive
from gpuship.oci.engine import load_into_engine
from gpuship.oci.image import Platform, make_index
from test_oci_support import busybox_image, busybox_tree, run_tool  # noqa: F401  (fixture)

pytestmark = pytest.mark.docker


@pytest.fixture
def docker_tag(docker):  # noqa: ANN001
    tag = docker.tag()
    yield tag
    docker.run("rmi", "-f", tag, check=False)


def test_docker_archive_is_combined_form_and_loads(
    busybox_tree: Path, cache: Cache, tmp_path: Path, docker, docker_tag: str
) -> None:
    img = busybox_image(busybox_tree, cache)
    out = write_docker_archive(img, tmp_path / "img.tar", tags=[docker_tag])
    with tarfile.open(out) as tar:
        names = tar.getnames()
        assert names == sorted(names, key=lambda n: n.split("/"))
        assert {"oci-layout", "index.json", "manifest.json", "repositories"} <= set(names)
        assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in tar.getmembers())
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
    assert manifest[0]["RepoTags"] == [docker_tag]
    assert manifest[0]["Layers"] == ["blobs/sha256/" + img.layers[0].digest.split(":")[1]]
    assert index["manifests"][0]["digest"] == img.digest
    assert index["manifests"][0]["annotations"]["io.containerd.image.name"] == "docker.io/" + docker_tag
    assert not list(tmp_path.glob(".*tmp"))  # no temp file left beside it

    raw = json.loads(run_tool("skopeo", "inspect", "--raw", f"docker-archive:{out}").stdout)
    assert len(raw["layers"]) == 1
    assert json.loads(run_tool("skopeo", "inspect", f"oci-archive:{out}").stdout)["Digest"] == img.digest

    assert docker.load(out) == docker_tag
    assert docker.run("run", "--rm", docker_tag).stdout == "hello from gpuship\n"


def test_load_into_engine_streams_and_runs(busybox_tree: Path, cache: Cache, docker, docker_tag: str) -> None:
    img = busybox_image(busybox_tree, cache, cmd=("streamed", "in"))
    assert load_into_engine(img, docker_tag) == docker_tag
    assert docker.run("run", "--rm", docker_tag).stdout == "streamed in\n"
    cfg = json.loads(docker.run("image", "inspect", docker_tag).stdout)[0]
    assert cfg["Id"] == img.config_descriptor()["digest"]


def test_zstd_docker_archive_loads_in_old_engines(
    busybox_tree: Path, cache: Cache, tmp_path: Path, docker, docker_tag: str
) -> None:
    """Docker < 23 cannot read zstd layers: manifest.json points at an uncompressed copy named by diff_id."""
    img = busybox_image(busybox_tree, cache, compression="zstd", cmd=("zstd ok",))
    out = write_docker_archive(img, tmp_path / "z.tar", tags=[docker_tag])
    with tarfile.open(out) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        assert manifest[0]["Layers"] == ["blobs/sha256/" + img.layers[0].diff_id.split(":")[1]]
        assert "blobs/sha256/" + img.layers[0].digest.split(":")[1] in tar.getnames()  # the OCI part keeps zstd
    docker.run("rmi", "-f", docker_tag, check=False)
    assert load_into_engine(img, docker_tag) == docker_tag
    assert docker.run("run", "--rm", docker_tag).stdout == "zstd ok\n"
    run_tool("skopeo", "inspect", f"docker-archive:{out}")


def test_index_lists_host_platform_in_manifest_json(
    busybox_tree: Path, cache: Cache, tmp_path: Path, docker, docker_tag: str
) -> None:
    amd = busybox_image(busybox_tree, cache, cmd=("amd64 picked",))
    arm = replace(busybox_image(busybox_tree, cache, cmd=("arm64 picked",)), platform=Platform.parse("linux/arm64"))
    index = make_index([arm, amd])
    out = write_docker_archive(index, tmp_path / "idx.tar", tags=[docker_tag])
    with tarfile.open(out) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        idx = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        names = set(tar.getnames())
    assert manifest[0]["Config"] == "blobs/sha256/" + amd.config_descriptor()["digest"].split(":")[1]
    assert idx["manifests"][0]["digest"] == index.digest
    for img in (amd, arm):
        assert "blobs/sha256/" + img.digest.split(":")[1] in names
    docker.load(out)
    assert docker.run("run", "--rm", docker_tag).stdout == "amd64 picked\n"


def test_no_engine_is_one_clear_error(
    busybox_tree: Path, cache: Cache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/nothing.sock")
    img = busybox_image(busybox_tree, cache)
    with pytest.raises(GpushipError, match="no docker engine answers") as info:
        load_into_engine(img, "gpuship-test/never:latest")
    assert "\n" not in info.value.line()


@pytest.mark.parametrize(
    ("ref", "expect"),
    [
        ("app", "app:latest"),
        ("team/app:1.0", "team/app:1.0"),
        ("localhost:5000/app", "localhost:5000/app:latest"),
        ("reg.example:5000/a/b:v2", "reg.example:5000/a/b:v2"),
    ],
)
def test_docker_tag_parse(ref: str, expect: str) -> None:
    assert str(DockerTag.parse(ref)) == expect


@pytest.mark.parametrize("ref", ["App:1", "app@sha256:" + "0" * 64, "app:", "-app", "a b"])
def test_docker_tag_refuses(ref: str) -> None:
    with pytest.raises(GpushipError, match="not a valid image name"):
        DockerTag.parse(ref)
