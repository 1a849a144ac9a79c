"""The pinned layer compressors: valid streams, the same bytes whatever the thread count, cached once."""

from __future__ import annotations

import gzip
import io
import os
import random

import pytest
import zstandard

from gpuship.cache import Cache
from gpuship.oci import Entry, build_layer
from gpuship.oci.compress import BLOCK, compressor, compressor_id, for_transport
from gpuship.oci.image import append_layers, empty_image
from gpuship.oci.layer import recompress


class _Sink:
    def __init__(self) -> None:
        self.buf = io.BytesIO()

    def write(self, data: bytes) -> int:
        return self.buf.write(data)


def _data(n: int) -> bytes:
    rnd = random.Random(n)
    words = [bytes(rnd.choices(range(97, 123), k=rnd.randint(2, 9))) for _ in range(500)]
    out = bytearray()
    while len(out) < n:  # compressible text with some random bytes in between
        out += b" ".join(rnd.choices(words, k=64)) + (os.urandom(64) if rnd.random() < 0.1 else b"\n")
    return bytes(out[:n])


def _compress(codec: str, data: bytes, threads: int, piece: int) -> bytes:
    sink = _Sink()
    c = compressor(codec, sink, threads)  # type: ignore[arg-type]
    for i in range(0, len(data), piece):
        c.write(data[i : i + piece])
    c.close()
    return sink.buf.getvalue()


@pytest.mark.parametrize("size", [0, 1, BLOCK - 1, BLOCK, 5 * BLOCK + 12345])
def test_gzip_is_valid_and_the_same_for_any_thread_count_and_write_size(size: int) -> None:
    data = _data(size)
    outs = {_compress("gzip", data, t, piece) for t in (1, 2, 5) for piece in (4096, 65537, BLOCK + 3)}
    assert len(outs) == 1
    out = outs.pop()
    assert gzip.decompress(out) == data
    assert out[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # no name, mtime 0
    if size > BLOCK:
        assert len(out) < 0.6 * size


def test_zstd_is_the_same_for_any_thread_count() -> None:
    data = _data(3 * BLOCK)
    outs = {_compress("zstd", data, t, 100_000) for t in (1, 2, 4)}
    assert len(outs) == 1
    assert zstandard.ZstdDecompressor().decompressobj().decompress(outs.pop()) == data


def test_layers_are_plain_and_compressed_once_per_codec(tmp_path) -> None:  # noqa: ANN001
    cache = Cache(tmp_path / "c")
    layer = build_layer([Entry.file("a/b.txt", _data(300_000))], cache)
    assert layer.compression == "none" and layer.digest == layer.diff_id and layer.size == layer.uncompressed_size
    img = append_layers(empty_image("linux/amd64"), [layer])
    gz = for_transport(img, "gzip")
    assert gz.layers[0].compression == "gzip" and gz.layers[0].diff_id == layer.diff_id
    assert gz.layers[0].size < layer.size
    again = recompress(layer, "gzip")
    assert again.reused and again.digest == gz.layers[0].digest  # remembered by (diff_id, codec)
    assert for_transport(gz, "zstd") == gz  # compressed layers keep their bytes
    assert gzip.decompress(cache.read(gz.layers[0].digest)) == cache.read(layer.digest)
    assert "level5" in compressor_id("gzip")


def test_a_layer_is_known_from_its_input_key_without_its_blobs(tmp_path) -> None:  # noqa: ANN001
    """input key -> (diff_id, digest, size) for the plain and the compressed blob, from the records alone."""
    from gpuship.oci.layer import cached_layer, known_layer

    cache = Cache(tmp_path / "c")
    assert known_layer(cache, "app:v1") is None
    layer = cached_layer(cache, "app:v1", lambda: [Entry.file("app/main.py", b"print('hi')\n" * 1000)])
    plain = known_layer(cache, "app:v1", "none")
    assert plain is not None and (plain.diff_id, plain.digest, plain.size) == (layer.diff_id, layer.digest, layer.size)
    assert known_layer(cache, "app:v1", "gzip") is None  # never compressed on this machine
    gz = recompress(layer, "gzip")
    for d in (layer.digest, gz.digest):
        cache.blob_path(d).unlink()  # the records are knowledge, not content
    got = known_layer(cache, "app:v1", "gzip")
    assert got is not None and (got.diff_id, got.digest, got.size) == (layer.diff_id, gz.digest, gz.size)
    assert known_layer(cache, "app:v2", "gzip") is None
