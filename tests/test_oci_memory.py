"""Layers of any size pass through in bounded memory: build, write, read back and unpack a big layer in a
subprocess and read its peak RSS (VmHWM)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = r'''
import io, json, os, random, resource, sys
from gpuship.cache import Cache
from gpuship.oci import Entry, append_layers, build_layer, empty_image
from gpuship.oci.archive import write_oci_archive
from gpuship.transports import read_image
from gpuship.oci.unpack import unpack

work, size = sys.argv[1], int(sys.argv[2])

class PseudoRandom(io.RawIOBase):
    """``size`` incompressible bytes, made lazily: never held in memory."""
    def __init__(self):
        self.rng, self.left = random.Random(42), size
    def readable(self):
        return True
    def read(self, n=-1):
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return self.rng.randbytes(n)

def rss_mb():
    # VmHWM: this process's own peak RSS. (ru_maxrss would carry over the peak of the process that forked us,
    # which Linux keeps across execve, so a big pytest parent would be counted.)
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) for l in fh if l.startswith("VmHWM:")) // 1024

layer = build_layer([Entry.stream("data/big.bin", size, PseudoRandom)], Cache(os.path.join(work, "c1")))
after_build = rss_mb()
img = append_layers(empty_image(), [layer])
write_oci_archive(img, os.path.join(work, "big.oci.tar"))
after_write = rss_mb()
os.unlink(layer.cache.blob_path(layer.digest))  # the archive is now the only copy
back = read_image(os.path.join(work, "big.oci.tar"), cache=Cache(os.path.join(work, "c2")))
os.unlink(os.path.join(work, "big.oci.tar"))
after_read = rss_mb()
summary = unpack(back, os.path.join(work, "rootfs"))
print(json.dumps({
    "uncompressed": layer.uncompressed_size, "digest_kept": back.digest == img.digest,
    "unpacked_bytes": summary.bytes, "file_size": os.path.getsize(os.path.join(work, "rootfs/data/big.bin")),
    "rss_build": after_build, "rss_write": after_write, "rss_read": after_read, "rss_peak": rss_mb(),
}))
'''


def run_big(tmp_path: Path, size: int) -> dict[str, int]:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path), str(size)], capture_output=True, text=True, timeout=1800
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def check(result: dict[str, int], size: int) -> None:
    assert result["uncompressed"] > size  # the tar around the file
    assert result["digest_kept"]
    assert result["unpacked_bytes"] == size and result["file_size"] == size
    assert result["rss_peak"] < 200, result  # MB, whatever the layer size


def test_300mb_layer_in_bounded_memory(tmp_path: Path) -> None:
    size = 300 * 1000 * 1000
    check(run_big(tmp_path, size), size)


@pytest.mark.slow
def test_2gb_layer_in_bounded_memory(tmp_path: Path) -> None:
    size = 2 * 1000 * 1000 * 1000
    check(run_big(tmp_path, size), size)
