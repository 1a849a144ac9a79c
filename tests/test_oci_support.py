"""Shared helpers for the OCI tests (fixtures are imported by the test_oci_* modules; no tests here).

The busybox tree comes from Debian's ``busybox-static`` package, downloaded at test time with the host's apt
sources (``apt-get download``) and unpacked with ``dpkg-deb -x``: a real static binary, nothing committed.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from gpuship.cache import Cache
from gpuship.oci import (
    Image,
    ImageConfig,
    Layer,
    append_layers,
    build_layer,
    empty_image,
    entries_from_dir,
)


@pytest.fixture(scope="session")
def busybox_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root tree holding ``bin/busybox`` (static) and ``bin/sh`` -> busybox."""
    work = tmp_path_factory.mktemp("busybox-deb")
    proc = subprocess.run(
        ["apt-get", "download", "busybox-static"], cwd=work, capture_output=True, text=True, timeout=300
    )
    debs = list(work.glob("busybox-static_*.deb"))
    if proc.returncode != 0 or not debs:
        pytest.fail(f"apt-get download busybox-static failed: {proc.stderr.strip()[-500:]}")
    unpacked = work / "x"
    subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(unpacked)], check=True, timeout=120)
    root = tmp_path_factory.mktemp("busybox-root")
    (root / "bin").mkdir()
    shutil.copy2(unpacked / "bin" / "busybox", root / "bin" / "busybox")
    (root / "bin" / "sh").symlink_to("busybox")
    return root


def busybox_image(tree: Path, cache: Cache, compression: str = "gzip", **config: object) -> Image:
    """An image whose entrypoint is ``busybox echo`` (``cmd`` defaults to ``hello from gpuship``)."""
    cfg = ImageConfig(
        entrypoint=tuple(config.get("entrypoint", ("/bin/busybox", "echo"))),  # type: ignore[arg-type]
        cmd=tuple(config.get("cmd", ("hello from gpuship",))),  # type: ignore[arg-type]
        env=("PATH=/bin",),
    )
    layer: Layer = build_layer(entries_from_dir(tree), cache, compression=compression)  # type: ignore[arg-type]
    return append_layers(empty_image("linux/amd64", cfg), [layer])


def run_tool(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def raw_tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    """A tar built by hand (any names, any types): what a hostile or foreign archive may hold."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def member(
    name: str, kind: bytes = tarfile.REGTYPE, data: bytes | None = b"", linkname: str = "", mode: int = 0o644
) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, linkname, mode
    return info, (data if kind == tarfile.REGTYPE else None)


def layer_from_tar(data: bytes, cache: Cache) -> Layer:
    """A gzip layer holding exactly the tar ``data`` (no normalisation), stored in ``cache``."""
    gz = gzip.compress(data, mtime=0)
    digest = cache.put_bytes(gz)
    diff_id = "sha256:" + hashlib.sha256(data).hexdigest()
    return Layer(digest, diff_id, len(gz), len(data), "gzip", cache=cache)


def test_apply_whiteout() -> None:
    from gpuship.oci.entry import apply_whiteout

    below = {"etc": 1, "etc/a": 1, "etc/a/b": 1, "etc/ab": 1, "opt/x": 1, "opt/x/y": 1}
    assert not apply_whiteout("etc/c", below) and len(below) == 6
    assert apply_whiteout("etc/.wh.a", below)  # the path and what is under it, not its prefix-sharing sibling
    assert sorted(below) == ["etc", "etc/ab", "opt/x", "opt/x/y"]
    assert apply_whiteout("opt/x/.wh..wh..opq", below)  # opaque: the folder stays, its contents go
    assert sorted(below) == ["etc", "etc/ab", "opt/x"]
