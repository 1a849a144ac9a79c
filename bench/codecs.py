"""How each layer codec would do on real layers: size against zlib level 6 (what gpuship used before) and speed.

    uv run python bench/codecs.py OCI_LAYOUT_DIR...      # every layer of the images in those layouts

The candidates are compressed the way gpuship compresses (gpuship.oci.compress): zlib-ng in 1 MiB blocks primed
with the previous block's last 32 KiB, one thread here so the speeds compare per core. The figures for the
default (level 5) are in docs/benchmarks.md ("Compression").
"""

from __future__ import annotations

import gzip
import json
import sys
import time
import zlib
from pathlib import Path

import zstandard
from zlib_ng import zlib_ng

BLOCK = 1 << 20


def blocked(level: int, data: bytes) -> int:
    out, prev = 0, b""
    for i in range(0, len(data), BLOCK):
        blk = data[i : i + BLOCK]
        args = (level, zlib_ng.DEFLATED, -15, 9, zlib_ng.Z_DEFAULT_STRATEGY) + ((prev[-32768:],) if prev else ())
        c = zlib_ng.compressobj(*args)
        out += len(c.compress(blk) + c.flush(zlib_ng.Z_SYNC_FLUSH))
        prev = blk
    return out + 20


def zlib6(data: bytes) -> int:
    c = zlib.compressobj(6, zlib.DEFLATED, 31)
    return len(c.compress(data) + c.flush())


CODECS = {
    "zlib level 6 (before)": zlib6,
    **{f"zlib-ng level {n}, blocks": (lambda d, n=n: blocked(n, d)) for n in (3, 4, 5, 6)},
    "zstd level 3": lambda d: len(zstandard.ZstdCompressor(level=3).compress(d)),
}


def layer_tars(layout: Path) -> list[bytes]:
    index = json.loads((layout / "index.json").read_text())
    out = []
    for desc in index["manifests"]:
        manifest = json.loads((layout / "blobs/sha256" / desc["digest"][7:]).read_text())
        for layer in manifest.get("layers", []):
            raw = (layout / "blobs/sha256" / layer["digest"][7:]).read_bytes()
            out.append(gzip.decompress(raw) if layer["mediaType"].endswith("gzip") else raw)
    return out


def main(argv: list[str]) -> int:
    tars = [t for arg in argv for t in layer_tars(Path(arg))]
    total = sum(len(t) for t in tars)
    print(f"{len(tars)} layers, {total / 1e6:.1f} MB of tar")
    base = None
    for name, fn in CODECS.items():
        start = time.perf_counter()
        size = sum(fn(t) for t in tars)
        secs = time.perf_counter() - start
        base = base or size
        print(f"{name:28s} ratio {size / total:.3f}  size vs zlib 6 {size / base:.3f}  {total / secs / 1e6:6.1f} MB/s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
