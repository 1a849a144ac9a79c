"""The image's root filesystem, unpacked once into the cache and shared (read-only) by every run.

Keyed by the manifest digest; built in the cache's temp area and renamed into place, so a crash or a failed
unpack leaves nothing behind and two runs at once never see half a tree. Runs never write here: the launcher
puts a per-run overlay (or copy) on top.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..cache import Cache
from ..errors import GpushipError
from ..oci.image import Image
from ..oci.unpack import unpack
from ..progress import NO_PROGRESS, Progress, stage


def _unpacker() -> Callable[[Image, Path], object]:
    return unpack


def unpacked_rootfs(image: Image, cache: Cache, progress: Progress = NO_PROGRESS) -> Path:
    """The directory holding ``image``'s root filesystem (unpacked on first use)."""
    key = image.digest.split(":", 1)[1]  # no ':' in the path: overlayfs would read it as a separator
    with cache.directory("rootfs", key) as (path, ready):
        if not ready:
            unpack = _unpacker()
            short = key[:12]
            with stage(progress, f"unpacking image {short} (first run only)"):
                unpack(image, path / "rootfs")
            (path / "digest").write_text(image.digest + "\n")
    with cache.directory("rootfs", key) as (path, ready):
        if not ready:  # pragma: no cover - removed between the two looks (a concurrent prune)
            raise GpushipError("the unpacked image vanished from the cache", "run it again")
        return path / "rootfs"
