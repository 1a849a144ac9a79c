"""How to talk to registries: one frozen value a command builds from its flags (no httpx here, so a build plan
can carry it without loading the client)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # types only: the client modules import httpx
    from .auth import Credentials
    from .client import RetryPolicy

MiB = 1 << 20
DEFAULT_CHUNK_SIZE = 32 * MiB
DEFAULT_JOBS = 4


@dataclass(frozen=True)
class RegistryOptions:
    """TLS (``insecure``, ``ca_file``), how many blobs at once (``jobs``), the upload chunk size, retries, where
    Docker's config is, and credentials that override the stored ones (go-containerregistry's ``remote.Option``
    values, as one value)."""

    insecure: bool = False
    ca_file: Path | None = None
    jobs: int = DEFAULT_JOBS
    chunk_size: int = DEFAULT_CHUNK_SIZE
    retry: RetryPolicy | None = None
    docker_config: Path | None = None
    credentials: Credentials | None = None
