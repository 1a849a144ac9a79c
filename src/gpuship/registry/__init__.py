"""The OCI distribution client: push images and indexes, pull base images, log in.

Built on httpx rather than a registry library (see docs/registry.md for why). Public API::

    push(obj, ref, *, cache=None, insecure=False, ca_file=None, jobs=4, chunk_size=32 MiB, progress=None, ...) -> PushResult
    pull_image(ref, platform, cache, *, insecure=False, ca_file=None, ...) -> Image
    pull(ref, cache, *, platforms=None, ...) -> Image | Index
    base_facts(image) -> BaseFacts
    login(registry, username, password, *, insecure=False, ca_file=None) -> str
    lookup_credentials(registry) -> Credentials
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from .auth import (
    ANONYMOUS,
    Credentials,
    docker_config_path,
    erase_credentials,
    lookup_credentials,
    parse_challenges,
    store_credentials,
)
from .client import RegistryClient, RetryPolicy
from .facts import BaseFacts, base_facts
from .limits import KNOWN_LIMITS, limits_for, oversized_layers
from .pull import pull, pull_image
from .push import DEFAULT_CHUNK_SIZE, PushResult, push
from .reference import Reference


def login(
    registry: str,
    username: str,
    password: str,
    *,
    insecure: bool = False,
    ca_file: Path | str | None = None,
    docker_config: Path | None = None,
) -> str:
    """Check ``username``/``password`` against ``registry`` (``GET /v2/``, through its token service if it
    has one), then store them like ``docker login``. Returns where they were stored."""
    creds = Credentials(username, password, "", "login")
    with RegistryClient(
        registry, credentials=creds, insecure=insecure, ca_file=ca_file, retry=RetryPolicy(attempts=3)
    ) as client:
        client.ping()
    return store_credentials(registry, creds, docker_config)


@dataclass
class RegistrySettings:
    """Process-wide settings for ``registry:`` outputs and sources (the CLI sets them from its flags)."""

    insecure: bool = False
    ca_file: Path | None = None
    jobs: int = 4
    chunk_size: int = DEFAULT_CHUNK_SIZE


settings = RegistrySettings()


def configure(
    *,
    insecure: bool | None = None,
    ca_file: Path | str | None = None,
    jobs: int | None = None,
    chunk_size: int | None = None,
) -> RegistrySettings:
    """Set what ``registry:REF`` targets and sources use (``--insecure``, ``--ca-file`` of a build command)."""
    if insecure is not None:
        settings.insecure = insecure
    if ca_file is not None:
        settings.ca_file = Path(ca_file)
    if jobs is not None:
        settings.jobs = jobs
    if chunk_size is not None:
        settings.chunk_size = chunk_size
    return settings


def _registry_sink(obj, rest: str, opts) -> str:
    """``write_output(img, "registry:REF")``: push, reporting to ``opts.progress``."""
    from ..cache import Cache
    from ..oci.image import Index as _Index

    ref = rest or opts.tag
    if not ref:
        from ..errors import GpushipError

        raise GpushipError("output registry: names no image", "use registry:HOST/NAME[:TAG]")
    images = obj.images if isinstance(obj, _Index) else (obj,)
    layer = next((first for img in images for first in img.layers), None)
    cache = layer.cache if layer is not None else Cache()
    result = push(
        obj,
        ref,
        cache=cache,
        insecure=settings.insecure,
        ca_file=settings.ca_file,
        jobs=settings.jobs,
        chunk_size=settings.chunk_size,
        progress=opts.progress,
        on_warning=lambda m: print(f"warning: {m}", file=sys.stderr),
    )
    return result.summary()


def _registry_source(rest: str, platform, cache):
    """``read_image("registry:REF")``: one platform's image, or everything the reference holds."""
    if platform is not None:
        return pull_image(
            rest, platform, cache, insecure=settings.insecure, ca_file=settings.ca_file, jobs=settings.jobs
        )
    return pull(rest, cache, insecure=settings.insecure, ca_file=settings.ca_file, jobs=settings.jobs)


def _register() -> None:
    from ..oci import readers, sinks

    sinks.register_sink("registry", _registry_sink, "registry:REF")
    readers.register_source("registry", _registry_source)


_register()


__all__ = [
    "ANONYMOUS",
    "BaseFacts",
    "Credentials",
    "DEFAULT_CHUNK_SIZE",
    "KNOWN_LIMITS",
    "PushResult",
    "Reference",
    "RegistryClient",
    "RetryPolicy",
    "base_facts",
    "docker_config_path",
    "erase_credentials",
    "limits_for",
    "login",
    "lookup_credentials",
    "oversized_layers",
    "parse_challenges",
    "pull",
    "pull_image",
    "push",
    "store_credentials",
    "configure",
    "settings",
    "RegistrySettings",
]
