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

import importlib
from typing import TYPE_CHECKING

from .options import DEFAULT_CHUNK_SIZE, DEFAULT_JOBS, RegistryOptions

if TYPE_CHECKING:
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
    from .reference import Reference
    from .session import Registry, login, pull, pull_image, push
    from .write import PushResult, push_to

#: The rest of the API, imported on first use: the client loads httpx, which a build that pulls nothing (or a
#: plan that only carries :class:`RegistryOptions`) never needs.
_LAZY = {
    "ANONYMOUS": ".auth",
    "Credentials": ".auth",
    "docker_config_path": ".auth",
    "erase_credentials": ".auth",
    "lookup_credentials": ".auth",
    "parse_challenges": ".auth",
    "store_credentials": ".auth",
    "RegistryClient": ".client",
    "RetryPolicy": ".client",
    "BaseFacts": ".facts",
    "base_facts": ".facts",
    "KNOWN_LIMITS": ".limits",
    "limits_for": ".limits",
    "oversized_layers": ".limits",
    "PushResult": ".write",
    "push_to": ".write",
    "Reference": ".reference",
    "Registry": ".session",
    "login": ".session",
    "pull": ".session",
    "pull_image": ".session",
    "push": ".session",
}


def __getattr__(name: str) -> object:  # the names are typed by the TYPE_CHECKING imports above
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)


__all__ = [
    "ANONYMOUS",
    "base_facts",
    "BaseFacts",
    "Credentials",
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_JOBS",
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
