"""OCI layout / oci-archive / docker-archive: checked by skopeo and umoci, read back, refused when damaged."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest

from gpuship.cache import Cache
from gpuship.errors import GpushipError, IntegrityError
from gpuship.oci import Family, Image, Index, Platform, make_index, with_config
from gpuship.oci.archive import write_oci_archive
from gpuship.oci.docker_archive import write_docker_archive
from gpuship.oci.layout import write_oci_layout
from gpuship.oci.unpack import unpack
from gpuship.transports import read_image, write_output
from test_oci_support import busybox_image, busybox_tree, run_tool  # noqa: F401


@pytest.fixture
def image(busybox_tree: Path, cache: Cache) -> Image:
    return busybox_image(busybox_tree, cache)


def chroot_run(rootfs: Path, *argv: str) -> str:
    proc = subprocess.run(["chroot", str(rootfs), *argv], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_skopeo_reads_both_archives(image: Image, tmp_path: Path) -> None:
    oci = write_oci_archive(image, tmp_path / "i.oci.tar", tag="v1")
    dock = write_docker_archive(image, tmp_path / "i.docker.tar", tags=["gpuship-test/bb:v1"])
    for ref in (f"oci-archive:{oci}", f"oci-archive:{oci}:v1", f"oci-archive:{dock}"):
        info = json.loads(run_tool("skopeo", "inspect", ref).stdout)
        assert info["Digest"] == image.digest and info["Architecture"] == "amd64"
    info = json.loads(run_tool("skopeo", "inspect", "--config", f"docker-archive:{dock}").stdout)
    assert info["config"]["Entrypoint"] == ["/bin/busybox", "echo"]
    assert info["rootfs"]["diff_ids"] == [image.layers[0].diff_id]


def test_umoci_unpacks_the_layout(image: Image, tmp_path: Path) -> None:
    layout = write_oci_layout(image, tmp_path / "layout", tag="v1")
    run_tool("umoci", "unpack", "--image", f"{layout}:v1", str(tmp_path / "bundle"))
    config = json.loads((tmp_path / "bundle" / "config.json").read_text())
    assert config["process"]["args"] == ["/bin/busybox", "echo", "hello from gpuship"]
    assert chroot_run(tmp_path / "bundle" / "rootfs", "/bin/sh", "-c", "echo via umoci") == "via umoci\n"


def test_zstd_image_skopeo_and_round_trip(busybox_tree: Path, cache: Cache, tmp_path: Path) -> None:
    """zstd: skopeo reads it and copies it losslessly; unpacked (by gpuship: umoci 0.4.7 has no zstd) it runs."""
    img = busybox_image(busybox_tree, cache, compression="zstd")
    oci = write_oci_archive(img, tmp_path / "z.oci.tar")
    dock = write_docker_archive(img, tmp_path / "z.docker.tar", tags=["gpuship-test/z:1"])
    assert json.loads(run_tool("skopeo", "inspect", f"oci-archive:{oci}").stdout)["Digest"] == img.digest
    raw = json.loads(run_tool("skopeo", "inspect", "--raw", f"oci-archive:{oci}").stdout)
    assert raw["layers"][0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+zstd"
    run_tool("skopeo", "inspect", f"docker-archive:{dock}")
    run_tool("skopeo", "copy", f"oci-archive:{oci}", f"oci:{tmp_path / 'copied'}:z")
    back = read_image(f"oci:{tmp_path / 'copied'}:z", cache=cache)
    assert isinstance(back, Image) and back.digest == img.digest and back.layers[0].compression == "zstd"
    unpack(back, tmp_path / "rootfs")
    assert chroot_run(tmp_path / "rootfs", "/bin/busybox", "echo", "zstd ok") == "zstd ok\n"


@pytest.mark.parametrize("kind", ["oci", "oci-archive", "docker-archive", "bare-archive", "bare-dir"])
def test_read_back_keeps_digest_family_and_layers(image: Image, tmp_path: Path, kind: str) -> None:
    fresh = Cache(tmp_path / "fresh")
    target = {
        "oci": f"oci:{tmp_path / 'l'}:t",
        "oci-archive": f"oci-archive:{tmp_path / 'a.tar'}:t",
        "docker-archive": f"docker-archive:{tmp_path / 'd.tar'}:gpuship-test/x:t",
        "bare-archive": f"docker-archive:{tmp_path / 'b.tar'}",
        "bare-dir": f"oci:{tmp_path / 'bd'}",
    }[kind]
    write_output(image, target)
    source = {"bare-archive": str(tmp_path / "b.tar"), "bare-dir": str(tmp_path / "bd")}.get(kind, target)
    back = read_image(source, cache=fresh)
    assert isinstance(back, Image)
    assert back.digest == image.digest and back.family is Family.OCI
    assert back.config_bytes() == image.config_bytes()
    assert [layer.digest for layer in back.layers] == [layer.digest for layer in image.layers]
    assert back.layers[0].cache is fresh and fresh.has(back.layers[0].digest)  # imported, opens from the cache
    assert back.layers[0].uncompressed_size == image.layers[0].uncompressed_size
    names = sorted(e.path for e, _ in back.layers[0].entries())
    assert names == ["bin", "bin/busybox", "bin/sh"]


def test_docker_family_survives_a_round_trip(image: Image, tmp_path: Path, cache: Cache) -> None:
    docker_img = replace(image, family=Family.DOCKER)
    write_oci_archive(docker_img, tmp_path / "d.tar")
    back = read_image(str(tmp_path / "d.tar"), cache=cache)
    assert back.family is Family.DOCKER and back.digest == docker_img.digest
    changed = with_config(back, replace(back.config, cmd=("changed",)))  # type: ignore[arg-type]
    assert changed.family is Family.DOCKER and changed.digest != back.digest
    assert json.loads(changed.config_bytes())["config"]["Cmd"] == ["changed"]


@pytest.mark.docker
def test_legacy_docker_save_is_read(image: Image, tmp_path: Path, cache: Cache, docker) -> None:  # noqa: ANN001
    tag = docker.tag()
    try:
        write_output(image, f"docker:{tag}")
        docker.run("save", "-o", str(tmp_path / "saved.tar"), tag)
        with tarfile.open(tmp_path / "saved.tar") as tar:
            assert "index.json" not in tar.getnames()  # Docker 20.10 writes the legacy form only
        back = read_image(f"docker-archive:{tmp_path / 'saved.tar'}:{tag}", cache=cache)
        assert isinstance(back, Image) and back.family is Family.DOCKER
        image_id = json.loads(docker.run("image", "inspect", tag).stdout)[0]["Id"]
        assert back.config_descriptor()["digest"] == image_id  # the config is kept byte for byte
        assert back.layers[0].compression == "gzip" and back.layers[0].diff_id == image.layers[0].diff_id
        docker.run("rmi", tag)
        write_output(back, f"docker-archive:{tmp_path / 'again.tar'}:{tag}")
        docker.load(tmp_path / "again.tar")
        assert docker.run("run", "--rm", tag).stdout == "hello from gpuship\n"
    finally:
        docker.run("rmi", "-f", tag, check=False)


def test_index_round_trip_and_platform_pick(image: Image, tmp_path: Path, cache: Cache) -> None:
    arm = replace(image, platform=Platform.parse("linux/arm64"))
    index = make_index([image, arm])
    write_oci_archive(index, tmp_path / "idx.tar", tag="multi")
    back = read_image(f"oci-archive:{tmp_path / 'idx.tar'}:multi", cache=cache)
    assert isinstance(back, Index) and back.digest == index.digest
    assert sorted(str(i.platform) for i in back.images) == ["linux/amd64", "linux/arm64/v8"]
    one = read_image(str(tmp_path / "idx.tar"), platform="linux/arm64", cache=cache)
    assert isinstance(one, Image) and one.digest == arm.digest
    with pytest.raises(GpushipError, match="no image for linux/s390x"):
        read_image(str(tmp_path / "idx.tar"), platform="linux/s390x", cache=cache)
    raw = json.loads(run_tool("skopeo", "inspect", "--raw", f"oci-archive:{tmp_path / 'idx.tar'}").stdout)
    assert raw["mediaType"] == "application/vnd.oci.image.index.v1+json" and len(raw["manifests"]) == 2


def test_layout_gains_tags_and_umoci_sees_both(image: Image, tmp_path: Path) -> None:
    other = with_config(image, replace(image.config, cmd=("second",)))
    layout = tmp_path / "layout"
    write_oci_layout(image, layout, tag="one")
    write_oci_layout(other, layout, tag="two")
    write_oci_layout(other, layout, tag="one")  # retag: replaces, does not duplicate
    index = json.loads((layout / "index.json").read_text())
    refs = {d["annotations"]["org.opencontainers.image.ref.name"]: d["digest"] for d in index["manifests"]}
    assert refs == {"one": other.digest, "two": other.digest} and len(index["manifests"]) == 2
    run_tool("umoci", "unpack", "--image", f"{layout}:two", str(tmp_path / "b2"))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file").write_text("x")
    with pytest.raises(GpushipError, match="not empty and not an OCI layout"):
        write_oci_layout(image, tmp_path / "junk")


def test_writers_are_deterministic(image: Image, tmp_path: Path) -> None:
    for n in ("a", "b"):
        write_oci_archive(image, tmp_path / f"{n}.oci.tar")
        write_docker_archive(image, tmp_path / f"{n}.docker.tar", tags=["x:1"])
    assert (tmp_path / "a.oci.tar").read_bytes() == (tmp_path / "b.oci.tar").read_bytes()
    assert (tmp_path / "a.docker.tar").read_bytes() == (tmp_path / "b.docker.tar").read_bytes()


def test_failed_write_leaves_nothing(image: Image, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    os.unlink(image.layers[0].cache.blob_path(image.layers[0].digest))  # the layer is gone from the cache
    for target in (f"oci-archive:{out}/a.tar", f"docker-archive:{out}/d.tar", f"oci:{out}/layout"):
        with pytest.raises(GpushipError, match="not in the cache"):
            write_output(image, target)
    assert list(out.iterdir()) == []


def test_rotten_cache_blob_is_not_shipped(image: Image, tmp_path: Path) -> None:
    path = image.layers[0].cache.blob_path(image.layers[0].digest)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="does not match its content"):
        write_oci_archive(image, tmp_path / "a.tar")
    assert list(tmp_path.glob("*a.tar*")) == []


def _fresh_cache_empty(cache: Cache) -> bool:
    return not any((cache.root / "blobs" / "sha256").iterdir()) and not any((cache.root / "tmp").iterdir())


@pytest.mark.parametrize("cut", ["mid-layer", "before-end-marker"])
def test_truncated_archive_is_refused(image: Image, tmp_path: Path, cut: str) -> None:
    archive = write_docker_archive(image, tmp_path / "whole.tar")
    whole = archive.read_bytes()
    with tarfile.open(archive) as tar:
        last = tar.getmembers()[-1]
    end_of_members = last.offset_data + (last.size + 511) // 512 * 512
    # mid-layer: cut inside a blob; before-end-marker: every member whole, the zero blocks that end a tar missing
    keep = len(whole) // 2 if cut == "mid-layer" else end_of_members
    (tmp_path / "cut.tar").write_bytes(whole[:keep])
    fresh = Cache(tmp_path / "fresh")
    with pytest.raises(IntegrityError, match="truncated") as info:
        read_image(str(tmp_path / "cut.tar"), cache=fresh)
    assert "\n" not in info.value.line()
    assert _fresh_cache_empty(fresh)


def _tamper(archive: Path, member_name: str, out: Path) -> None:
    """Flip one byte in the middle of a member, keeping every size the same."""
    data = bytearray(archive.read_bytes())
    with tarfile.open(archive) as tar:
        m = tar.getmember(member_name)
    data[m.offset_data + m.size // 2] ^= 0x01
    out.write_bytes(bytes(data))


def test_tampered_layer_blob_is_refused(image: Image, tmp_path: Path) -> None:
    archive = write_oci_archive(image, tmp_path / "a.tar")
    _tamper(archive, "blobs/sha256/" + image.layers[0].digest.split(":")[1], tmp_path / "bad.tar")
    fresh = Cache(tmp_path / "fresh")
    with pytest.raises(IntegrityError, match=r"layer sha256:\w+ is corrupt|corrupt compressed layer") as info:
        read_image(f"oci-archive:{tmp_path / 'bad.tar'}", cache=fresh)
    assert "\n" not in info.value.line()
    assert _fresh_cache_empty(fresh)


@pytest.mark.docker
def test_tampered_manifest_or_legacy_layer_is_refused(image: Image, tmp_path: Path, docker) -> None:  # noqa: ANN001
    archive = write_oci_archive(image, tmp_path / "a.tar")
    _tamper(archive, "blobs/sha256/" + image.digest.split(":")[1], tmp_path / "bad-manifest.tar")
    with pytest.raises(IntegrityError, match="is corrupt"):
        read_image(str(tmp_path / "bad-manifest.tar"), cache=Cache(tmp_path / "c1"))
    # a legacy docker save has no layer digests: the diff_id catches the change
    tag = docker.tag()
    try:
        write_output(image, f"docker:{tag}")
        docker.run("save", "-o", str(tmp_path / "saved.tar"), tag)
    finally:
        docker.run("rmi", "-f", tag, check=False)
    with tarfile.open(tmp_path / "saved.tar") as tar:
        layer_member = next(n for n in tar.getnames() if n.endswith("layer.tar"))
    _tamper(tmp_path / "saved.tar", layer_member, tmp_path / "bad-saved.tar")
    fresh = Cache(tmp_path / "c2")
    with pytest.raises(IntegrityError, match="does not match the config's diff_id"):
        read_image(str(tmp_path / "bad-saved.tar"), cache=fresh)
    assert _fresh_cache_empty(fresh)


def test_read_errors_are_clear(tmp_path: Path, cache: Cache) -> None:
    with pytest.raises(GpushipError, match="no such file or directory"):
        read_image(str(tmp_path / "missing.tar"), cache=cache)
    (tmp_path / "notatar").write_bytes(b"hello, not a tar" * 100)
    with pytest.raises(IntegrityError, match="not a tar archive"):
        read_image(str(tmp_path / "notatar"), cache=cache)
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(GpushipError, match="neither index.json nor manifest.json"):
        read_image(str(tmp_path / "emptydir"), cache=cache)


def test_unknown_output_lists_the_schemes(image: Image, tmp_path: Path) -> None:
    with pytest.raises(GpushipError) as info:
        write_output(image, f"ftp:{tmp_path}/x")
    for scheme in ("oci:DIR", "oci-archive:FILE", "docker-archive:FILE", "docker:NAME", "registry:REF"):
        assert scheme in info.value.line()


def test_default_tag_names_the_outputs(image: Image, tmp_path: Path) -> None:
    write_output(image, f"docker-archive:{tmp_path / 'd.tar'}", tag="proj:0.1")
    write_output(image, f"oci:{tmp_path / 'l'}", tag="proj:0.1")
    with tarfile.open(tmp_path / "d.tar") as tar:
        assert json.load(tar.extractfile("manifest.json"))[0]["RepoTags"] == ["proj:0.1"]  # type: ignore[arg-type]
    index = json.loads((tmp_path / "l" / "index.json").read_text())
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "0.1"
    shutil.rmtree(tmp_path / "l")
