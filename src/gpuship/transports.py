"""Where images come from and go to, by name: the one table of schemes (skopeo's transports).

``read_image(ref)`` and ``write_output(obj, target)`` take what the CLI takes: ``oci:DIR``, ``oci-archive:FILE``,
``docker-archive:FILE``, ``docker:NAME`` (targets only) from :mod:`gpuship.oci`, and ``registry:REF`` from
:mod:`gpuship.registry`. This module sits above both, so neither imports the other's half: the table is written
out here, not filled in by imports.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

from .cache import Cache
from .oci.compress import for_transport
from .oci.image import Image, Index, Platform
from .oci.layout import ImageOrIndex
from .oci.media import Compression
from .oci.readers import read_local
from .oci.sinks import SINKS, Sink, SinkOptions, parse_target
from .progress import NO_PROGRESS, Progress
from .registry.options import RegistryOptions

REGISTRY_USAGE = "registry:REF"


def _write_registry(obj: ImageOrIndex, rest: str, opts: SinkOptions, options: RegistryOptions) -> str:
    from .registry.transport import write_registry  # the registry client loads httpx: only for registry: targets

    return write_registry(obj, rest, opts, options)


def sinks(registry: RegistryOptions = RegistryOptions()) -> Mapping[str, Sink]:
    """Every target scheme; ``registry`` pushes with ``registry`` options."""
    return {**SINKS, "registry": Sink("registry", partial(_write_registry, options=registry), REGISTRY_USAGE)}


def sink_schemes() -> list[str]:
    """Usage lines of every target scheme."""
    return [s.usage for s in sinks().values()]


def write_output(
    obj: ImageOrIndex,
    target: str,
    *,
    platform: Platform | str | None = None,
    tag: str | None = None,
    compression: Compression = "gzip",
    progress: Progress = NO_PROGRESS,
    registry: RegistryOptions = RegistryOptions(),
) -> str:
    """Send ``obj`` to ``target``; returns a short line saying what was written.

    ``platform`` picks the image of an Index where the target holds only one (``docker:``, and the
    ``manifest.json`` part of ``docker-archive:``). ``tag`` (``name[:tag]``) names the image where the target
    does not: the RepoTag of a docker-archive, the engine's name for ``docker:``, the ref name in an OCI layout
    or oci-archive, the reference of ``registry:``. ``compression``: what plain layers get where bytes travel
    (every target but an engine: :func:`gpuship.oci.compress.for_transport`). ``progress`` hears a push's bytes.
    """
    sink, rest = parse_target(target, sinks(registry))
    p = Platform.parse(platform) if isinstance(platform, str) else platform
    if sink.compresses:
        obj = for_transport(obj, compression)
    return sink.write(obj, rest, SinkOptions(p, tag, compression, progress))


def target_compresses(target: str) -> bool:
    """Whether ``target``'s sink gets compressed layers (an engine does not)."""
    return parse_target(target, sinks())[0].compresses


def read_image(
    ref: str,
    platform: Platform | str | None = None,
    cache: Cache | None = None,
    *,
    registry: RegistryOptions = RegistryOptions(),
) -> Image | Index:
    """The image or index at ``ref`` (``registry:REF``, or what :func:`gpuship.oci.readers.read_local` reads);
    ``platform`` picks one image of an index."""
    cache = cache or Cache()
    p = Platform.parse(platform) if isinstance(platform, str) else platform
    scheme, sep, rest = ref.partition(":")
    if sep and scheme == "registry":
        from .registry.transport import read_registry  # the registry client loads httpx: only for registry: refs

        return read_registry(rest, p, cache, registry)
    return read_local(ref, p, cache)


__all__ = ["read_image", "sink_schemes", "sinks", "target_compresses", "write_output"]
