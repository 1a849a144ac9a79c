"""``registry:REF`` as a target and a source of :mod:`gpuship.transports`: a push and a pull in a session."""

from __future__ import annotations

import sys

from ..cache import Cache
from ..errors import GpushipError
from ..oci.image import Image, Index, Platform
from ..oci.layout import ImageOrIndex
from ..oci.sinks import SinkOptions
from .options import RegistryOptions
from .session import Registry


def write_registry(obj: ImageOrIndex, rest: str, opts: SinkOptions, options: RegistryOptions) -> str:
    """Push ``obj`` to ``REF`` (``rest``, else the sink's tag); returns the push's summary line."""
    ref = rest or opts.tag
    if not ref:
        raise GpushipError("output registry: names no image", "use registry:HOST/NAME[:TAG]")
    images = obj.images if isinstance(obj, Index) else (obj,)
    layer = next((first for img in images for first in img.layers), None)
    cache = layer.cache if layer is not None else None  # where the layers are: blob locations are kept there
    with Registry(options, cache) as registry:
        result = registry.push(
            obj, ref, progress=opts.progress, on_warning=lambda m: print(f"warning: {m}", file=sys.stderr)
        )
    return result.summary()


def read_registry(rest: str, platform: Platform | None, cache: Cache, options: RegistryOptions) -> Image | Index:
    """One platform's image of ``REF``, or everything the reference holds."""
    with Registry(options, cache) as registry:
        if platform is not None:
            return registry.pull_image(rest, platform)
        return registry.pull(rest)
