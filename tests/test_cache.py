"""The content-addressed cache: verified writes, nothing half-written, safe for two writers, info and prune."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from gpuship.cache import Cache
from gpuship.errors import IntegrityError


def _put(root: str, seed: int) -> str:
    data = hashlib.sha256(str(seed % 3).encode()).digest() * 40000  # 3 distinct blobs, written 12 times
    return Cache(root).put_bytes(data)


def test_blob_roundtrip_and_expected_digest(cache: Cache) -> None:
    digest = cache.put_bytes(b"hello")
    assert digest == "sha256:" + hashlib.sha256(b"hello").hexdigest()
    assert cache.read(digest) == b"hello" and cache.has(digest)
    with pytest.raises(IntegrityError):
        cache.put_bytes(b"tampered", expected=digest.replace(digest[-4:], "0000"))
    assert list((cache.root / "tmp").iterdir()) == []  # the failed write left nothing behind


def test_concurrent_writers_never_see_partial_blobs(tmp_path: Path) -> None:
    root = str(tmp_path / "c")
    with ProcessPoolExecutor(4) as pool:
        digests = list(pool.map(_put, [root] * 12, range(12)))
    cache = Cache(root)
    assert len(set(digests)) == 3
    for d in set(digests):
        data = cache.read(d)
        assert "sha256:" + hashlib.sha256(data).hexdigest() == d
    assert list((cache.root / "tmp").iterdir()) == []


def test_failed_directory_build_leaves_nothing(cache: Cache) -> None:
    with pytest.raises(RuntimeError):
        with cache.directory("unpacked", "k") as (path, ready):
            assert not ready
            (path / "half").write_text("x")
            raise RuntimeError("boom")
    with cache.directory("unpacked", "k") as (path, ready):
        assert not ready and not (path / "half").exists()
    with cache.directory("unpacked", "k") as (path, ready):
        assert ready


def test_cli_info_and_prune(tmp_path: Path) -> None:
    env = {"GPUSHIP_CACHE": str(tmp_path / "c")}
    Cache(tmp_path / "c").put_bytes(b"x" * 1000)

    def run(*a: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gpuship", "cache", *a],
            capture_output=True,
            text=True,
            env={**__import__("os").environ, **env},
        )

    info = run("info")
    assert info.returncode == 0 and "blobs   1" in info.stdout
    assert run("prune", "--older-than", "1").stdout.startswith("removed 0")
    assert run("prune").stdout.startswith("removed 1")
    assert "blobs   0" in run("info").stdout


def test_unpacked_images_are_counted_and_pruned_by_last_use(tmp_path: Path) -> None:
    """Unpacked images (cached directories) show in info, count their bytes, and go with prune --older-than
    when unused that long; using one makes it recent again."""
    import os
    import time

    cache = Cache(tmp_path / "c")
    for key in ("old", "used"):
        with cache.directory("rootfs", key) as (path, ready):
            assert not ready
            (path / "usr").mkdir()
            (path / "usr" / "lib.so").write_bytes(b"x" * 5000)
            os.link(path / "usr" / "lib.so", path / "usr" / "again.so")  # a hard link is counted once
    info = cache.info()
    assert (info.dirs, info.dir_bytes, info.refs) == (2, 10_000, 0)
    month_ago = time.time() - 30 * 86400
    for key in ("old", "used"):
        os.utime(cache.root / "refs" / "dirs-rootfs" / key, (month_ago, month_ago))
    with cache.directory("rootfs", "used") as (path, ready):  # the built-in runner uses it again
        assert ready
    assert cache.prune(older_than_days=7) == (1, 5000)
    assert [p.name for p in (cache.root / "refs" / "dirs-rootfs").iterdir()] == ["used"]
    assert cache.prune() == (1, 5000) and cache.info().dirs == 0


def _another_command_starts(root: Path) -> None:
    """What every gpuship command does first, in a process of its own: take the in-use lock (and, finding no
    other holder, clean ``tmp/``)."""
    code = "import sys\nfrom gpuship.cache import Cache\nwith Cache(sys.argv[1]).in_use(): pass"
    subprocess.run([sys.executable, "-c", code, str(root)], check=True)


def _age(path: Path) -> None:
    """As a long step leaves it: its mtime an hour old (work deep inside a directory does not touch it)."""
    old = time.time() - 3600
    os.utime(path, (old, old))


def test_tmp_cleanup_removes_leftovers_but_not_the_work_of_a_caller_without_in_use(cache: Cache) -> None:
    # what a killed process left: removed by the next command that finds the cache idle
    dead_dir, dead_file = cache.root / "tmp" / "lock-killed", cache.root / "tmp" / "ref-killed"
    dead_dir.mkdir()
    (dead_dir / "requirements.in").write_text("numpy\n")
    dead_file.write_text("{}")
    _age(dead_dir)
    _age(dead_file)
    # a library caller (no in-use lock: gpuship.dockerfile.export_dockerfile, gpuship.build.build) in a long step
    with cache.temp_dir("lock-") as work, cache.directory("unpacked", "k") as (filling, ready):
        assert not ready and work.parent == filling.parent == cache.root / "tmp"
        (work / "requirements.in").write_text("numpy\n")
        (filling / "usr").mkdir()
        _age(work)
        _age(filling)
        _another_command_starts(cache.root)
        assert (work / "requirements.in").is_file() and (filling / "usr").is_dir()
        assert cache.clean_tmp(min_age=0) == (0, 0)  # what prune cleans: not these either
        assert (work / "requirements.in").is_file() and (filling / "usr").is_dir()
    assert not dead_dir.exists() and not dead_file.exists()
    with cache.directory("unpacked", "k") as (done, ready):
        assert ready and (done / "usr").is_dir()  # the directory was committed
    assert list((cache.root / "tmp").iterdir()) == []  # and the temp directory removed
