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
from .progress import NoProgress, RichTransferProgress, TransferProgress
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
    with RegistryClient(registry, credentials=creds, insecure=insecure, ca_file=ca_file, retry=RetryPolicy(attempts=3)) as client:
        client.ping()
    return store_credentials(registry, creds, docker_config)


__all__ = [
    "ANONYMOUS", "BaseFacts", "Credentials", "DEFAULT_CHUNK_SIZE", "KNOWN_LIMITS", "NoProgress", "PushResult",
    "Reference", "RegistryClient", "RetryPolicy", "RichTransferProgress", "TransferProgress", "base_facts",
    "docker_config_path", "erase_credentials", "limits_for", "login", "lookup_credentials", "oversized_layers",
    "parse_challenges", "pull", "pull_image", "push", "store_credentials",
]
