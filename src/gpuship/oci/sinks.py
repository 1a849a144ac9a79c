"""Where an image goes on this machine: one string names a target, and the table below says who writes it.

Targets (the part after the scheme follows skopeo's transports: the first ``:`` after the path starts the
optional name)::

    oci:DIR[:TAG]                  an OCI image layout directory (added to if it exists)
    oci-archive:FILE[:TAG]         the OCI layout as one tar file
    docker-archive:FILE[:NAME:TAG] what docker load reads (Docker 25+'s combined form)
    docker:NAME[:TAG]              loaded into the local Docker Engine (streamed into docker load)

Each writer is deterministic (same image, same bytes) and leaves nothing behind on failure. Layers are compressed
only for the targets whose bytes travel (every one but ``docker:``), once per layer and codec
(:func:`gpuship.oci.compress.for_transport`); an engine gets the plain tars it stores anyway. :func:`write_split`
writes an archive target in numbered parts with a manifest of their digests (:mod:`gpuship.oci.parts`).
``registry:REF`` sits one level up, in :mod:`gpuship.transports`, which adds it to this table (the registry
client builds on these values, so they never import it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..errors import GpushipError
from ..progress import NO_PROGRESS, Progress
from .archive import write_oci_archive, write_oci_archive_to
from .compress import for_transport
from .docker_archive import DockerTag, write_docker_archive, write_docker_archive_to
from .engine import load_image, load_into_engine
from .image import Platform
from .layout import ImageOrIndex, _check_layout_tag, write_oci_layout
from .media import Compression
from .parts import Parts, write_parts

__all__ = [
    "SINKS",
    "Sink",
    "SinkOptions",
    "load_into_engine",
    "parse_target",
    "write_docker_archive",
    "write_oci_archive",
    "write_oci_layout",
    "write_split",
]


@dataclass(frozen=True)
class SinkOptions:
    """What every sink may use besides the target: ``platform`` picks one image of an Index where the target
    holds one; ``tag`` (``name:tag``) names the image where the target does not; ``progress`` hears the
    bytes a sink moves (a push)."""

    platform: Platform | None = None
    tag: str | None = None
    compression: Compression = "gzip"
    progress: Progress = NO_PROGRESS


#: ``(image_or_index, rest_of_target, options) -> a short description of what was written``
SinkFn = Callable[[ImageOrIndex, str, SinkOptions], str]


@dataclass(frozen=True)
class Sink:
    scheme: str
    write: SinkFn
    usage: str
    #: False for a container engine: it stores layers uncompressed, so it gets them so
    compresses: bool = True


def _split_name(rest: str) -> tuple[str, str | None]:
    path, sep, name = rest.partition(":")
    return path, (name if sep and name else None)


def parse_target(target: str, sinks: Mapping[str, Sink]) -> tuple[Sink, str]:
    """The sink of ``sinks`` for ``target`` and the rest of the string after ``SCHEME:``."""
    scheme, sep, rest = target.partition(":")
    sink = sinks.get(scheme) if sep else None
    if sink is None:
        raise GpushipError(f"unknown output {target!r}", "use one of: " + ", ".join(s.usage for s in sinks.values()))
    return sink, rest


def _need_path(rest: str, usage: str) -> None:
    if not rest or rest.startswith(":"):
        raise GpushipError(f"output names no path: use {usage}")


def _tag_part(tag: str | None) -> str | None:
    return DockerTag.parse(tag).tag if tag else None


def _oci(obj: ImageOrIndex, rest: str, opts: SinkOptions) -> str:
    _need_path(rest, "oci:DIR[:TAG]")
    path, tag = _split_name(rest)
    tag = tag or _tag_part(opts.tag)
    return f"OCI layout {write_oci_layout(obj, path, tag)}" + (f" (tag {tag})" if tag else "")


def _oci_archive(obj: ImageOrIndex, rest: str, opts: SinkOptions) -> str:
    _need_path(rest, "oci-archive:FILE[:TAG]")
    path, tag = _split_name(rest)
    tag = tag or _tag_part(opts.tag)
    return f"oci-archive {write_oci_archive(obj, path, tag)}" + (f" (tag {tag})" if tag else "")


def _docker_archive(obj: ImageOrIndex, rest: str, opts: SinkOptions) -> str:
    _need_path(rest, "docker-archive:FILE[:NAME:TAG]")
    path, name = _split_name(rest)
    name = name or opts.tag
    out = write_docker_archive(obj, path, [name] if name else [], opts.platform)
    return f"docker-archive {out}" + (f" ({DockerTag.parse(name)})" if name else "")


def _docker(obj: ImageOrIndex, rest: str, opts: SinkOptions) -> str:
    name = rest or opts.tag
    if not name:
        raise GpushipError("output docker: names no image", "use docker:NAME[:TAG]")
    return f"loaded into Docker as {load_image(obj, name, platform=opts.platform).describe()}"


def write_split(
    obj: ImageOrIndex,
    target: str,
    part_size: int,
    *,
    platform: Platform | str | None = None,
    tag: str | None = None,
    compression: Compression = "gzip",
) -> Parts:
    """Write ``obj`` as the archive ``target`` names (``oci-archive:FILE[:TAG]`` or
    ``docker-archive:FILE[:NAME:TAG]``), cut into parts of at most ``part_size`` bytes plus ``FILE.parts.json``
    (see :mod:`gpuship.oci.parts`); FILE itself is not written."""
    scheme, _, rest = target.partition(":")
    p = Platform.parse(platform) if isinstance(platform, str) else platform
    obj = for_transport(obj, compression)  # archives travel: plain layers are compressed
    if scheme == "oci-archive":
        _need_path(rest, "oci-archive:FILE[:TAG]")
        path, name = _split_name(rest)
        name = name or _tag_part(tag)
        if name is not None:
            _check_layout_tag(name)
        return write_parts(
            lambda fh: write_oci_archive_to(obj, fh, name), path, part_size, format=scheme, image=obj.digest
        )
    if scheme == "docker-archive":
        _need_path(rest, "docker-archive:FILE[:NAME:TAG]")
        path, name = _split_name(rest)
        name = name or tag
        tags = [name] if name else []
        return write_parts(
            lambda fh: write_docker_archive_to(obj, fh, tags, p), path, part_size, format=scheme, image=obj.digest
        )
    raise GpushipError(
        f"--split cuts an archive into parts, and {target!r} is not one",
        "write to oci-archive:FILE or docker-archive:FILE",
    )


#: The targets on this machine, by scheme.
SINKS: Mapping[str, Sink] = {
    sink.scheme: sink
    for sink in (
        Sink("oci", _oci, "oci:DIR[:TAG]"),
        Sink("oci-archive", _oci_archive, "oci-archive:FILE[:TAG]"),
        Sink("docker-archive", _docker_archive, "docker-archive:FILE[:NAME:TAG]"),
        Sink("docker", _docker, "docker:NAME[:TAG]", compresses=False),
    )
}
