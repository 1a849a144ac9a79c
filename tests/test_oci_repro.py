"""Same input, same bytes: two builds in separate processes, with a different umask, wall clock and source
mtimes, give the same manifest digest and byte-identical archives."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from test_oci_support import busybox_tree  # noqa: F401

BUILD = r"""
import json, os, sys
from gpuship.cache import Cache
from gpuship.oci import ImageConfig, append_layers, build_layer, empty_image, entries_from_dir
from gpuship.oci.archive import write_oci_archive
from gpuship.oci.docker_archive import write_docker_archive

src, out, compression = sys.argv[1], sys.argv[2], sys.argv[3]
os.makedirs(out)
layer = build_layer(entries_from_dir(src), Cache(os.path.join(out, "cache")), compression=compression)
img = append_layers(empty_image("linux/amd64", ImageConfig(entrypoint=("/bin/busybox", "echo"))), [layer])
write_oci_archive(img, os.path.join(out, "img.oci.tar"), tag="v1")
write_docker_archive(img, os.path.join(out, "img.docker.tar"), tags=["repro:v1"])
print(json.dumps({"digest": img.digest, "layer": layer.digest}))
"""


def build_in_subprocess(src: Path, out: Path, umask: int, compression: str = "gzip") -> dict[str, str]:
    proc = subprocess.run(
        [sys.executable, "-c", BUILD, str(src), str(out), compression],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=lambda: os.umask(umask),  # noqa: PLW1509 - the point of the test
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def touch_all(root: Path, when: float) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), (when, when), follow_symlinks=False)
    os.utime(root, (when, when))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_two_builds_give_the_same_bytes(busybox_tree: Path, tmp_path: Path) -> None:  # noqa: F811
    src = tmp_path / "src"
    shutil.copytree(busybox_tree, src, symlinks=True)
    (src / "etc").mkdir()
    (src / "etc" / "motd").write_text("same content\n")
    (src / "etc" / "motd-copy").write_text("same content\n")  # identical file: stored as a hardlink

    touch_all(src, 1_000_000_000)
    first = build_in_subprocess(src, tmp_path / "one", 0o022)
    time.sleep(1.1)  # a different wall clock for the second build
    touch_all(src, 1_700_000_000)
    second = build_in_subprocess(src, tmp_path / "two", 0o077)

    assert first == second
    for name in ("img.oci.tar", "img.docker.tar"):
        assert sha(tmp_path / "one" / name) == sha(tmp_path / "two" / name)
    # and the output files get the caller's ordinary permissions, not the temp file's 0600
    assert (tmp_path / "one" / "img.oci.tar").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "two" / "img.oci.tar").stat().st_mode & 0o777 == 0o600


def test_zstd_builds_are_reproducible_too(busybox_tree: Path, tmp_path: Path) -> None:  # noqa: F811
    a = build_in_subprocess(busybox_tree, tmp_path / "a", 0o022, "zstd")
    b = build_in_subprocess(busybox_tree, tmp_path / "b", 0o027, "zstd")
    assert a == b
    assert sha(tmp_path / "a" / "img.oci.tar") == sha(tmp_path / "b" / "img.oci.tar")
