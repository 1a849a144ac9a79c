"""``gpuship image convert --split``: an archive in numbered parts plus a manifest of their digests, read back
directly (every part checked first) or joined with ``cat``; a missing, short or corrupted part is refused in one
line."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from gpuship.cache import Cache
from gpuship.errors import GpushipError, IntegrityError
from gpuship.oci.archive import write_oci_archive
from gpuship.oci.image import Image
from gpuship.oci.parts import load_parts, verify_parts
from gpuship.oci.sinks import write_split
from gpuship.transports import read_image
from test_oci_cli import _one_line_error, gpuship
from test_oci_support import busybox_image, busybox_tree, run_tool  # noqa: F401

PART = 256 << 10  # the busybox image is about 1 MB compressed: four or five parts


@pytest.fixture
def image(busybox_tree: Path, cache: Cache) -> Image:  # noqa: F811
    return busybox_image(busybox_tree, cache)


@pytest.fixture
def split(image: Image, cache: Cache, tmp_path: Path) -> Path:
    """The image as oci-archive parts in tmp_path/parts; returns the manifest."""
    (tmp_path / "parts").mkdir()
    proc = gpuship(
        "image", "convert", f"oci:{_layout(image, tmp_path)}", f"oci-archive:{tmp_path / 'parts' / 'bb.oci.tar'}:v1",
        "--split", "256k", cache=tmp_path / "c",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert image.digest in proc.stdout and "bb.oci.tar.parts.json" in proc.stdout, proc.stdout
    return tmp_path / "parts" / "bb.oci.tar.parts.json"


def _layout(image: Image, tmp_path: Path) -> Path:
    from gpuship.oci.layout import write_oci_layout

    return write_oci_layout(image, tmp_path / "layout")


def _sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_parts_join_to_the_archive_and_read_back_with_the_same_digests(
    split: Path, image: Image, cache: Cache, tmp_path: Path
) -> None:
    manifest = json.loads(split.read_text())
    names = [p["name"] for p in manifest["parts"]]
    assert names == [f"bb.oci.tar.{i:03d}" for i in range(len(names))] and len(names) >= 3
    assert sorted(p.name for p in split.parent.iterdir()) == sorted([*names, split.name])  # nothing else left there
    for p in manifest["parts"]:
        f = split.parent / p["name"]
        assert f.stat().st_size == p["size"] <= PART and _sha256(f) == p["digest"]
    assert all(p["size"] == PART for p in manifest["parts"][:-1])
    assert manifest["image"] == image.digest and manifest["format"] == "oci-archive"

    # `cat` joins them into exactly the archive the unsplit writer makes, whose sha256 the manifest records
    joined = tmp_path / "joined.tar"
    joined.write_bytes(b"".join((split.parent / n).read_bytes() for n in names))
    whole = write_oci_archive(image, tmp_path / "whole.tar", "v1")
    assert joined.read_bytes() == whole.read_bytes()
    assert _sha256(joined) == manifest["digest"] and joined.stat().st_size == manifest["size"]
    assert json.loads(run_tool("skopeo", "inspect", f"oci-archive:{joined}:v1").stdout)["Digest"] == image.digest

    # the manifest itself reads as the image (plain path, oci-archive: with a tag), same digests as the original
    fresh = Cache(tmp_path / "fresh")
    for ref in (str(split), f"oci-archive:{split}:v1"):
        back = read_image(ref, cache=fresh)
        assert isinstance(back, Image) and back.digest == image.digest
        assert [l.digest for l in back.layers] == [l.digest for l in image.layers]  # noqa: E741
    ls = gpuship("image", "ls", str(split), cache=tmp_path / "c2")
    assert ls.returncode == 0 and image.digest in ls.stdout, ls.stderr


def test_docker_archive_parts_and_a_resplit_removes_stale_parts(image: Image, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    target = out / "bb.docker.tar"
    small = write_split(image, f"docker-archive:{target}:bb:1", 64 << 10)
    assert small.format == "docker-archive" and len(small.parts) > 10
    back = read_image(f"docker-archive:{target}.parts.json:bb:1", cache=Cache(tmp_path / "c"))
    assert back.digest == image.digest
    big = write_split(image, f"docker-archive:{target}", 1 << 30)  # now one part: the other files go
    assert [p.name for p in big.parts] == ["bb.docker.tar.000"] and big.digest == _sha256(out / big.parts[0].name)
    assert sorted(p.name for p in out.iterdir()) == ["bb.docker.tar.000", "bb.docker.tar.parts.json"]


def test_a_missing_short_or_corrupted_part_is_refused_in_one_line(split: Path, tmp_path: Path) -> None:
    parts = load_parts(split)
    n = len(parts.parts)
    second = split.parent / parts.parts[1].name
    good = second.read_bytes()
    c = tmp_path / "refused-cache"

    second.unlink()
    _one_line_error(gpuship("image", "ls", str(split), cache=c), f"part 2 of {n}", "is missing", "copy every part")

    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF  # same size, one byte changed
    second.write_bytes(bytes(bad))
    _one_line_error(
        gpuship("run", "--runtime", "chroot", str(split), cache=c), f"part 2 of {n}", "is corrupt", "copy that part"
    )

    second.write_bytes(good[:-1])
    _one_line_error(gpuship("image", "ls", f"oci-archive:{split}", cache=c), f"part 2 of {n}", "bytes, the manifest")
    with pytest.raises(IntegrityError, match="is corrupt|bytes, the manifest"):
        verify_parts(split)
    # nothing of the refused image reached the cache
    assert [f for f in c.rglob("*") if f.is_file() and "locks" not in f.parts] == []

    second.write_bytes(good)
    assert verify_parts(split)[0] == parts
    split.write_text(split.read_text().replace('"size"', '"sighs"', 1))
    _one_line_error(gpuship("image", "ls", str(split), cache=c), "is not a gpuship parts manifest")


def test_split_user_errors(image: Image, split: Path, tmp_path: Path) -> None:
    c = tmp_path / "c"
    src = f"oci:{tmp_path / 'layout'}"
    _one_line_error(gpuship("image", "convert", src, f"oci:{tmp_path / 'o'}", "--split", "1m", cache=c), "not one")
    _one_line_error(
        gpuship("image", "convert", src, f"oci-archive:{tmp_path / 'o.tar'}", "--split", "1", cache=c), "too small"
    )
    _one_line_error(
        gpuship("image", "convert", src, f"oci-archive:{tmp_path / 'o.tar'}", "--split", "lots", cache=c), "not a size"
    )
    _one_line_error(
        gpuship("image", "convert", src, f"oci-archive:{tmp_path / 'nope' / 'o.tar'}", "--split", "1m", cache=c),
        "cannot write",
    )
    # the joined name of a split archive points at its manifest
    _one_line_error(
        gpuship("image", "ls", f"oci-archive:{split.parent / 'bb.oci.tar'}", cache=c), "was split", "parts.json"
    )
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith((".o", "o"))) == []


def test_a_failed_split_leaves_nothing(image: Image, tmp_path: Path) -> None:
    from gpuship.oci import parts as parts_mod

    def broken(fh) -> None:  # noqa: ANN001
        fh.write(b"x" * 10000)
        raise GpushipError("the writer failed")

    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(GpushipError, match="the writer failed"):
        parts_mod.write_parts(broken, out / "x.tar", 4096, format="oci-archive", image=image.digest)
    assert list(out.iterdir()) == []
