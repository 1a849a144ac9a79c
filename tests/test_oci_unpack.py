"""unpack: layers applied in order with whiteouts, links and type changes, never writing outside dest."""

from __future__ import annotations

import os
import stat
import tarfile
from pathlib import Path

import pytest

from gpuship.cache import Cache
from gpuship.errors import GpushipError, IntegrityError
from gpuship.oci import Entry, build_layer
from gpuship.oci.unpack import unpack
from test_oci_support import (  # noqa: F401
    busybox_image,
    busybox_tree,
    layer_from_tar,
    member,
    raw_tar,
)


def tree(root: Path) -> dict[str, str]:
    """path -> 'd' | 'f:<content>' | 'l:<target>' for everything under root."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "l:" + os.readlink(p)
            elif p.is_dir():
                out[rel] = "d"
            else:
                out[rel] = "f:" + p.read_text()
    return out


def test_whiteouts_opaque_and_type_changes(cache: Cache, tmp_path: Path) -> None:
    base = build_layer(
        [
            Entry.file("etc/a", "A"),
            Entry.file("etc/b", "B"),
            Entry.file("opt/x/old", "old"),
            Entry.file("opt/x/sub/deep", "deep"),
            Entry.file("var/f2d", "file"),
            Entry.file("var/d2f/inner", "i"),
            Entry.file("keep/me", "kept"),
        ],
        cache,
    )
    top = build_layer(
        [
            Entry.whiteout("etc/a"),
            Entry.opaque("opt/x"),
            Entry.file("opt/x/new", "new"),
            Entry.file("var/f2d/now", "now a dir"),
            Entry.file("var/d2f", "now a file"),
        ],
        cache,
    )
    absent = layer_from_tar(raw_tar([member("nothing/.wh.there"), member("etc/.wh.zzz")]), cache)
    summary = unpack([base, top, absent], tmp_path / "root")
    t = tree(tmp_path / "root")
    assert "etc/a" not in t and t["etc/b"] == "f:B"
    assert t["opt/x/new"] == "f:new" and "opt/x/old" not in t and "opt/x/sub" not in t
    assert t["var/f2d"] == "d" and t["var/f2d/now"] == "f:now a dir"
    assert t["var/d2f"] == "f:now a file"
    assert t["keep/me"] == "f:kept"
    assert not any(".wh." in p for p in t)
    assert "nothing" not in t  # a whiteout of something absent creates nothing
    assert summary.layers == 3 and summary.whiteouts == 4


def test_whiteout_never_deletes_same_layer_content(cache: Cache, tmp_path: Path) -> None:
    """Opaque and plain whiteouts apply to lower layers only, wherever they sort in the tar."""
    base = build_layer([Entry.file("d/lower", "l"), Entry.file("d/-early", "lower early")], cache)
    top = layer_from_tar(
        raw_tar(
            [
                member("d/", tarfile.DIRTYPE, mode=0o755),
                member("d/-early", data=b"upper early"),  # sorts before .wh..wh..opq
                member("d/.wh..wh..opq"),
                member("d/same", data=b"s"),
                member("d/.wh.same"),
            ]
        ),
        cache,
    )
    unpack([base, top], tmp_path / "r")
    assert tree(tmp_path / "r") == {"d": "d", "d/-early": "f:upper early", "d/same": "f:s"}


def test_links_modes_and_mtimes(cache: Cache, tmp_path: Path) -> None:
    layer = build_layer(
        [
            Entry.file("bin/tool", b"x" * 10, mode=0o4755),
            Entry.file("bin/copy", b"x" * 10, mode=0o4755),
            Entry.symlink("bin/alias", "tool"),
            Entry.dir("ro", mode=0o555),
            Entry.file("ro/inside", "in", mode=0o600),
        ],
        cache,
    )
    unpack([layer], tmp_path / "r")
    r = tmp_path / "r"
    tool, copy = (r / "bin/tool").stat(), (r / "bin/copy").stat()
    assert (tool.st_ino, tool.st_nlink) == (copy.st_ino, 2)  # the writer hard-linked identical files
    assert stat.S_IMODE(tool.st_mode) == 0o4755
    assert os.readlink(r / "bin/alias") == "tool"
    assert stat.S_IMODE((r / "ro").stat().st_mode) == 0o555
    assert (r / "ro/inside").read_text() == "in"
    assert {p.lstat().st_mtime for p in [r / "bin", r / "bin/tool", r / "bin/alias", r / "ro"]} == {0}


def test_symlinks_never_lead_outside(cache: Cache, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("untouched")
    lower = layer_from_tar(
        raw_tar(
            [
                member("abs", tarfile.SYMTYPE, linkname=str(outside)),
                member("rel", tarfile.SYMTYPE, linkname="../../../../" + str(outside)),
                member("file-link", tarfile.SYMTYPE, linkname=str(outside / "secret")),
            ]
        ),
        cache,
    )
    upper = layer_from_tar(
        raw_tar(
            [  # no directory entries: the writer must resolve abs/ and rel/ itself
                member("abs/secret", data=b"via abs"),
                member("rel/secret", data=b"via rel"),
                member("file-link", data=b"replaces the link"),
                member("hl", tarfile.LNKTYPE, linkname="abs/secret"),
            ]
        ),
        cache,
    )
    dest = tmp_path / "root"
    unpack([lower, upper], dest)
    assert (outside / "secret").read_text() == "untouched"
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    inside = dest / str(outside).lstrip("/") / "secret"  # symlinks resolve as if dest were /
    assert inside.read_text() == "via rel"  # both links lead to the same place inside dest
    assert (dest / "file-link").read_text() == "replaces the link" and not (dest / "file-link").is_symlink()
    assert (dest / "hl").stat().st_ino == inside.stat().st_ino


@pytest.mark.parametrize(
    "bad",
    [
        [member("../escape", data=b"x")],
        [member("a/../../escape", data=b"x")],
        [member("ok", data=b"x"), member("hl", tarfile.LNKTYPE, linkname="../../etc/passwd")],
    ],
    ids=["dotdot", "nested-dotdot", "hardlink-dotdot"],
)
def test_traversal_members_are_refused_and_leave_nothing(cache: Cache, tmp_path: Path, bad: list) -> None:
    layer = layer_from_tar(raw_tar(bad), cache)
    with pytest.raises(IntegrityError, match="escapes the image root"):
        unpack([layer], tmp_path / "root")
    assert not (tmp_path / "escape").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]  # no dest, no temp dir left


def test_absolute_members_are_cleaned_and_devices_dropped(cache: Cache, tmp_path: Path) -> None:
    layer = layer_from_tar(
        raw_tar(
            [
                member("/abs/file", data=b"cleaned"),
                member("dev/null", tarfile.CHRTYPE),
                member("dev/sda", tarfile.BLKTYPE),
                member("fifo", tarfile.FIFOTYPE),
            ]
        ),
        cache,
    )
    unpack([layer], tmp_path / "root")
    assert tree(tmp_path / "root") == {"abs": "d", "abs/file": "f:cleaned"}


def test_hardlink_to_missing_or_directory_is_refused(cache: Cache, tmp_path: Path) -> None:
    missing = layer_from_tar(raw_tar([member("hl", tarfile.LNKTYPE, linkname="nope")]), cache)
    with pytest.raises(IntegrityError, match="not in the image"):
        unpack([missing], tmp_path / "a")
    to_dir = layer_from_tar(
        raw_tar([member("d/", tarfile.DIRTYPE), member("hl", tarfile.LNKTYPE, linkname="d")]), cache
    )
    with pytest.raises(IntegrityError, match="directory"):
        unpack([to_dir], tmp_path / "b")


def test_dest_must_be_new_or_empty(cache: Cache, tmp_path: Path) -> None:
    layer = build_layer([Entry.file("f", "x")], cache)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "old").write_text("o")
    with pytest.raises(GpushipError, match="not an empty directory"):
        unpack([layer], tmp_path / "full")
    (tmp_path / "empty").mkdir()
    unpack([layer], tmp_path / "empty")
    assert (tmp_path / "empty" / "f").read_text() == "x"


def test_unpacked_busybox_runs(busybox_tree: Path, cache: Cache, tmp_path: Path) -> None:
    import subprocess

    img = busybox_image(busybox_tree, cache)
    unpack(img, tmp_path / "rootfs")
    out = subprocess.run(
        ["chroot", str(tmp_path / "rootfs"), "/bin/sh", "-c", "echo unpacked ok"], capture_output=True, text=True
    )
    assert out.stdout == "unpacked ok\n", out.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to other users needs root")
def test_owners_kept_as_root_or_mapped(cache: Cache, tmp_path: Path) -> None:
    layer = build_layer(
        [Entry.file("home/u/f", "x", uid=1000, gid=1001), Entry.dir("home/u", uid=1000, gid=1001)], cache
    )
    unpack([layer], tmp_path / "kept")
    st = (tmp_path / "kept/home/u/f").stat()
    assert (st.st_uid, st.st_gid) == (1000, 1001)
    assert (tmp_path / "kept/home/u").stat().st_uid == 1000
    unpack([layer], tmp_path / "mapped", owner=(4321, 4322))
    st = (tmp_path / "mapped/home/u/f").stat()
    assert (st.st_uid, st.st_gid) == (4321, 4322)
