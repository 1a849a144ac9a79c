"""The content-addressed cache: verified writes, nothing half-written, safe for two writers, info and prune."""

from __future__ import annotations

import hashlib
import subprocess
import sys
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
