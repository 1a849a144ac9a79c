"""A registry session: the options of one command, and the per-host clients they make.

As httpx's ``Client`` holds its configuration and ``httpx.get`` is a thin wrapper around one, a
:class:`Registry` holds a frozen :class:`RegistryOptions` (go-containerregistry's ``remote.Option`` values) and
the :class:`~gpuship.registry.client.RegistryClient` of each registry host it talks to, with their tokens; push,
pull and login go through it, and :func:`push`, :func:`pull`, :func:`pull_image` and :func:`login` are the
one-call wrappers. Nothing here is process-wide: a command builds its options from its flags and passes them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

from ..cache import Cache
from ..oci.image import Image, Index, Platform
from ..progress import NO_PROGRESS, Progress
from .auth import Credentials, store_credentials
from .client import RegistryClient, RetryPolicy
from .options import DEFAULT_CHUNK_SIZE, DEFAULT_JOBS, RegistryOptions
from .read import pull_from, pull_image_from
from .reference import Reference, normalize_registry
from .write import PushResult, push_to


class Registry:
    """Talks to registries with ``options``; pulled blobs go to ``cache`` (the user's cache when none is given),
    which a push also uses to remember where blobs were seen (for mounts). Use it as a context manager (or
    :meth:`close` it): it owns one client per registry host, shared by every call and thread."""

    def __init__(self, options: RegistryOptions = RegistryOptions(), cache: Cache | None = None) -> None:
        self.options = options
        self._cache = cache
        self._clients: dict[str, RegistryClient] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, typ: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    @property
    def cache(self) -> Cache:
        if self._cache is None:
            self._cache = Cache()
        return self._cache

    def client(self, registry: str) -> RegistryClient:
        """The client for ``registry`` (made on first use)."""
        host = normalize_registry(registry)
        with self._lock:
            client = self._clients.get(host)
            if client is None:
                o = self.options
                client = self._clients[host] = RegistryClient(
                    host,
                    credentials=o.credentials,
                    insecure=o.insecure,
                    ca_file=o.ca_file,
                    retry=o.retry,
                    docker_config=o.docker_config,
                    max_connections=max(8, o.jobs * 2),
                )
            return client

    def push(
        self,
        obj: Image | Index,
        ref: str | Reference,
        *,
        progress: Progress = NO_PROGRESS,
        mount_from: Sequence[str] = (),
        on_warning: Callable[[str], None] | None = None,
    ) -> PushResult:
        """Push ``obj`` to ``ref`` (see :func:`gpuship.registry.write.push_to`)."""
        target = Reference.parse(ref) if isinstance(ref, str) else ref
        client = self.client(target.registry)
        client.add_scope(target.repository, "pull,push")
        return push_to(
            client,
            obj,
            target,
            cache=self._cache,
            jobs=self.options.jobs,
            chunk_size=self.options.chunk_size,
            progress=progress,
            mount_from=mount_from,
            on_warning=on_warning,
        )

    def pull_image(self, ref: str | Reference, platform: Platform | str, *, progress: Progress = NO_PROGRESS) -> Image:
        """The ``platform`` image of ``ref``, its layers in the cache."""
        target = Reference.parse(ref) if isinstance(ref, str) else ref
        want = Platform.parse(platform) if isinstance(platform, str) else platform
        return pull_image_from(
            self.client(target.registry), target, want, self.cache, progress=progress, jobs=self.options.jobs
        )

    def pull(
        self,
        ref: str | Reference,
        *,
        platforms: Sequence[Platform] | None = None,
        progress: Progress = NO_PROGRESS,
    ) -> Image | Index:
        """``ref`` as it is: an image, or an index of every (or the given) platform."""
        target = Reference.parse(ref) if isinstance(ref, str) else ref
        return pull_from(
            self.client(target.registry),
            target,
            self.cache,
            platforms=platforms,
            progress=progress,
            jobs=self.options.jobs,
        )

    def login(self, registry: str, username: str, password: str) -> str:
        """Check ``username``/``password`` against ``registry`` (``GET /v2/``, through its token service if it
        has one), then store them like ``docker login``. Returns where they were stored."""
        creds = Credentials(username, password, "", "login")
        o = self.options
        with RegistryClient(
            registry,
            credentials=creds,
            insecure=o.insecure,
            ca_file=o.ca_file,
            retry=o.retry or RetryPolicy(attempts=3),
        ) as client:
            client.ping()
        return store_credentials(registry, creds, o.docker_config)


# -- one call, one session (httpx.get over httpx.Client) ---------------------------------------------------------
def push(
    obj: Image | Index,
    ref: str | Reference,
    *,
    cache: Cache | None = None,
    credentials: Credentials | None = None,
    insecure: bool = False,
    ca_file: Path | str | None = None,
    jobs: int = DEFAULT_JOBS,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    retry: RetryPolicy | None = None,
    docker_config: Path | None = None,
    progress: Progress = NO_PROGRESS,
    mount_from: Sequence[str] = (),
    on_warning: Callable[[str], None] | None = None,
) -> PushResult:
    """:meth:`Registry.push` in a session of its own."""
    options = _options(credentials, insecure, ca_file, jobs, chunk_size, retry, docker_config)
    with Registry(options, cache) as registry:
        return registry.push(obj, ref, progress=progress, mount_from=mount_from, on_warning=on_warning)


def pull_image(
    ref: str | Reference,
    platform: Platform | str,
    cache: Cache,
    *,
    insecure: bool = False,
    ca_file: Path | str | None = None,
    credentials: Credentials | None = None,
    progress: Progress = NO_PROGRESS,
    retry: RetryPolicy | None = None,
    jobs: int = DEFAULT_JOBS,
    docker_config: Path | None = None,
) -> Image:
    """:meth:`Registry.pull_image` in a session of its own."""
    options = _options(credentials, insecure, ca_file, jobs, DEFAULT_CHUNK_SIZE, retry, docker_config)
    with Registry(options, cache) as registry:
        return registry.pull_image(ref, platform, progress=progress)


def pull(
    ref: str | Reference,
    cache: Cache,
    *,
    platforms: Sequence[Platform] | None = None,
    insecure: bool = False,
    ca_file: Path | str | None = None,
    credentials: Credentials | None = None,
    progress: Progress = NO_PROGRESS,
    retry: RetryPolicy | None = None,
    jobs: int = DEFAULT_JOBS,
    docker_config: Path | None = None,
) -> Image | Index:
    """:meth:`Registry.pull` in a session of its own."""
    options = _options(credentials, insecure, ca_file, jobs, DEFAULT_CHUNK_SIZE, retry, docker_config)
    with Registry(options, cache) as registry:
        return registry.pull(ref, platforms=platforms, progress=progress)


def login(
    registry: str,
    username: str,
    password: str,
    *,
    insecure: bool = False,
    ca_file: Path | str | None = None,
    docker_config: Path | None = None,
) -> str:
    """:meth:`Registry.login` in a session of its own."""
    options = RegistryOptions(
        insecure=insecure, ca_file=Path(ca_file) if ca_file else None, docker_config=docker_config
    )
    with Registry(options) as session:
        return session.login(registry, username, password)


def _options(
    credentials: Credentials | None,
    insecure: bool,
    ca_file: Path | str | None,
    jobs: int,
    chunk_size: int,
    retry: RetryPolicy | None,
    docker_config: Path | None,
) -> RegistryOptions:
    return RegistryOptions(
        insecure=insecure,
        ca_file=Path(ca_file) if ca_file else None,
        jobs=jobs,
        chunk_size=chunk_size,
        retry=retry,
        docker_config=docker_config,
        credentials=credentials,
    )
