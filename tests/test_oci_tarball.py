"""The reproducible tar writer and its safe reader."""

from __future__ import annotations

import io
import os
import random
import stat
import tarfile
from pathlib import Path

import pytest

from gpuship.errors import ConfigError, IntegrityError
from gpuship.oci import Entry, entries_from_dir
from gpuship.oci.tarball import iter_tar, write_tar
from test_oci_support import member, raw_tar


def tar_bytes(entries: list[Entry], **kw: object) -> bytes:
    buf = io.BytesIO()
    write_tar(entries, buf, **kw)  # type: ignore[arg-type]
    return buf.getvalue()


def members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getmembers()


ENTRIES = [
    Entry.file("usr/bin/b", b"bee", mode=0o755),
    Entry.file("usr/bin/a", b"ay"),
    Entry.symlink("bin", "usr/bin"),
    Entry.dir("etc", mode=0o700),
    Entry.file("etc/conf", b"x=1", uid=1000, gid=1000),
    Entry.file("usr/lib/x.so", b"lib"),
]


def test_sorted_with_parents_and_same_bytes_whatever_the_order() -> None:
    shuffled = ENTRIES[:]
    random.Random(7).shuffle(shuffled)
    a, b = tar_bytes(ENTRIES), tar_bytes(shuffled)
    assert a == b
    names = [m.name for m in members(a)]
    assert names == ["bin", "etc", "etc/conf", "usr", "usr/bin", "usr/bin/a", "usr/bin/b", "usr/lib", "usr/lib/x.so"]
    by = {m.name: m for m in members(a)}
    assert by["usr"].isdir() and stat.S_IMODE(by["usr"].mode) == 0o755  # made-up parent
    assert stat.S_IMODE(by["etc"].mode) == 0o700 and stat.S_IMODE(by["usr/bin/b"].mode) == 0o755
    assert (by["etc/conf"].uid, by["etc/conf"].gid) == (1000, 1000)
    assert all(m.uname == "" and m.gname == "" for m in by.values())


def test_mtime_is_the_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    assert {m.mtime for m in members(tar_bytes(ENTRIES))} == {0}
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert {m.mtime for m in members(tar_bytes(ENTRIES))} == {1700000000}
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(ConfigError, match="SOURCE_DATE_EPOCH"):
        tar_bytes(ENTRIES)


def test_identical_files_become_hardlinks() -> None:
    data = tar_bytes(
        [
            Entry.file("a/one", b"same", mode=0o755),
            Entry.file("b/two", b"same", mode=0o755),
            Entry.file("c/other-mode", b"same", mode=0o644),
            Entry.file("d/empty1", b""),
            Entry.file("d/empty2", b""),
        ]
    )
    by = {m.name: m for m in members(data)}
    assert by["a/one"].isreg()
    assert by["b/two"].islnk() and by["b/two"].linkname == "a/one"
    assert by["c/other-mode"].isreg()  # a different mode is a different file
    assert by["d/empty1"].isreg() and by["d/empty2"].isreg()
    no_links = {
        m.name: m for m in members(tar_bytes([Entry.file("a", b"s"), Entry.file("b", b"s")], link_identical=False))
    }
    assert no_links["b"].isreg()


def test_whiteouts_are_empty_marker_files() -> None:
    by = {m.name: m for m in members(tar_bytes([Entry.whiteout("etc/gone"), Entry.opaque("var/cache")]))}
    assert by["etc/.wh.gone"].isreg() and by["etc/.wh.gone"].size == 0
    assert by["var/cache/.wh..wh..opq"].isreg() and by["var/cache/.wh..wh..opq"].size == 0


@pytest.mark.parametrize(
    "entries",
    [
        [Entry.file("x", b"1"), Entry.file("x", b"2")],
        [Entry.file("x", b"1"), Entry.dir("x")],
        [Entry.symlink("x", "a"), Entry.symlink("x", "b")],
        [Entry.symlink("lib", "usr/lib"), Entry.file("lib/libc.so", b"c")],
    ],
    ids=["two-files", "file-and-dir", "two-symlinks", "file-under-symlink"],
)
def test_conflicting_paths_are_refused(entries: list[Entry]) -> None:
    with pytest.raises(IntegrityError):
        tar_bytes(entries)


def test_agreeing_duplicates_are_merged() -> None:
    names = [
        m.name
        for m in members(tar_bytes([Entry.dir("d"), Entry.dir("d"), Entry.symlink("l", "d"), Entry.symlink("l", "d")]))
    ]
    assert names == ["d", "l"]


@pytest.mark.parametrize("path", ["../x", "a/../../x", ".."])
def test_escaping_paths_refused_when_made(path: str) -> None:
    with pytest.raises(IntegrityError, match="escapes"):
        Entry.file(path, b"x")


def test_reader_refuses_dotdot_and_cleans_absolute_paths() -> None:
    with pytest.raises(IntegrityError, match="escapes"):
        list(iter_tar(io.BytesIO(raw_tar([member("ok", data=b"1"), member("../../etc/passwd", data=b"x")]))))
    with pytest.raises(IntegrityError, match="escapes"):
        list(iter_tar(io.BytesIO(raw_tar([member("h", tarfile.LNKTYPE, linkname="../outside")]))))
    got = [
        (e.path, e.kind)
        for e, _ in iter_tar(io.BytesIO(raw_tar([member("/etc/abs", data=b"1"), member("./rel/./x", data=b"2")])))
    ]
    assert got == [("etc/abs", "file"), ("rel/x", "file")]


def test_reader_drops_device_files() -> None:
    data = raw_tar(
        [
            member("dev/null", tarfile.CHRTYPE),
            member("dev/sda", tarfile.BLKTYPE),
            member("p", tarfile.FIFOTYPE),
            member("f", data=b"x"),
        ]
    )
    assert [e.path for e, _ in iter_tar(io.BytesIO(data))] == ["f"]


def test_reader_refuses_truncated_stream() -> None:
    data = tar_bytes([Entry.file("big", os.urandom(100_000))])
    with pytest.raises(IntegrityError, match="corrupt or truncated"):
        for _, fh in iter_tar(io.BytesIO(data[:50_000])):
            if fh is not None:
                fh.read()


def test_walking_a_tree_refuses_devices_and_fifos(tmp_path: Path) -> None:
    (tmp_path / "ok").write_text("fine")
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(IntegrityError, match="device, socket or fifo"):
        list(entries_from_dir(tmp_path))
    os.unlink(tmp_path / "pipe")
    if os.geteuid() == 0:
        os.mknod(tmp_path / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        with pytest.raises(IntegrityError, match="device, socket or fifo"):
            list(entries_from_dir(tmp_path))


def test_walking_a_tree_keeps_hardlinks_and_symlinks(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("content")
    os.link(tmp_path / "a", tmp_path / "b")
    (tmp_path / "s").symlink_to("/etc/passwd")
    by = {m.name: m for m in members(tar_bytes(list(entries_from_dir(tmp_path))))}
    assert by["b"].islnk() and by["b"].linkname == "a"
    assert by["s"].issym() and by["s"].linkname == "/etc/passwd"


def test_a_file_that_shrinks_while_archived_is_an_error(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"x" * 1000)
    e = Entry.file("f", f)
    f.write_bytes(b"x" * 10)
    with pytest.raises(IntegrityError, match="shrank"):
        tar_bytes([e])
