"""The OCI distribution client: push images and indexes, pull base images, log in.

Built on httpx rather than a registry library (see docs/registry.md for why). Public API::

    Registry(options=RegistryOptions(...), cache=None)   a session: one client per host, closed together
        .push(obj, ref, *, progress=NO_PROGRESS, mount_from=(), on_warning=None) -> PushResult
        .pull_image(ref, platform, *, progress=NO_PROGRESS) -> Image
        .pull(ref, *, platforms=None, progress=NO_PROGRESS) -> Image | Index
        .login(registry, username, password) -> str
    push / pull_image / pull / login                     the same, one call in a session of its own
    base_facts(image) -> BaseFacts
    lookup_credentials(registry) -> Credentials
"""

from __future__ import annotations

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
from .push import DEFAULT_CHUNK_SIZE, PushResult, push_to
from .reference import Reference
from .session import Registry, RegistryOptions, login, pull, pull_image, push

__all__ = [
    "ANONYMOUS",
    "base_facts",
    "BaseFacts",
    "Credentials",
    "DEFAULT_CHUNK_SIZE",
    "docker_config_path",
    "erase_credentials",
    "KNOWN_LIMITS",
    "limits_for",
    "login",
    "lookup_credentials",
    "oversized_layers",
    "parse_challenges",
    "pull",
    "pull_image",
    "push",
    "push_to",
    "PushResult",
    "Reference",
    "Registry",
    "RegistryClient",
    "RegistryOptions",
    "RetryPolicy",
    "store_credentials",
]
