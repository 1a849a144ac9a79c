"""The seam where an image starts: a :class:`Base`, for one platform.

Two kinds implement it, and the build and the Dockerfile export only talk to the protocol:

* :class:`gpuship.sources.profile_base.ProfileBase` -- a Debian profile (``debian-bookworm``), built from signed .debs
  when the image is assembled, with the packages find-libdeps says the environment needs;
* :class:`gpuship.sources.registry_base.RegistryBase` -- a registry image, pulled while planning and used as it
  is (its layers byte for byte), whose Python packages the lock keeps.

As go-containerregistry's ``v1.Image`` lets ``remote``, ``tarball`` and ``layout`` images be used alike, a Base
answers the questions a build asks of "the base": its Python, its config, what the lock must keep, what the
environment's libraries need from it, and the image to grow on (:meth:`Base.start`). "Nothing to keep" and
"nothing to check" are answers of a Debian base, not branches of its callers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol  # Any: a base's lock options, passed to the locker as keywords

from ..cache import Cache
from ..errors import GpushipError
from ..oci import Image, ImageConfig, Layer, Platform
from ..progress import Progress

if TYPE_CHECKING:  # types only: the base kinds import this module
    from .debian.libdeps import LibDep
    from .debian.profiles import PythonInfo
    from .debian.slim import SlimReport
    from .python.lock import Lock


@dataclass(frozen=True)
class BaseLock:
    """What the lock must respect on a base: ``constraints`` (``name==version`` of what it keeps) and keyword
    arguments for :func:`gpuship.sources.python.lock_project` (its glibc, stand-in wheels)."""

    constraints: tuple[str, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Started:
    """The image a build grows on: the base's layers (with their history and media-type family), its config,
    and for the report the system packages it holds and what slimming dropped.

    ``top``: the base's layers that go *above* the Python environment — those that depend on the system packages
    find-libdeps chose (a Debian profile's ``extra`` packages and the dpkg database, users and CA bundle that list
    them). Below the environment sit only ``layers``, which do not change with those packages, so the environment's
    layers keep their chain IDs (what engines key stored layers on) whatever system packages a project needs, and
    an engine can load them while the rest of the image is still being built."""

    image: Image
    layers: tuple[Layer, ...]
    config: ImageConfig
    packages: tuple[tuple[str, str, str], ...] = ()
    dropped: SlimReport | None = None
    top: tuple[Layer, ...] = ()


#: The image environment a config gives (the build's ``image_env``): find-libdeps reads LD_LIBRARY_PATH from it.
EnvOf = Callable[[ImageConfig], Mapping[str, str]]


class Base(Protocol):
    """Where an image starts (see the module doc)."""

    @property
    def name(self) -> str:
        """As the user wrote it: a profile name or a registry reference."""

    @property
    def platform(self) -> Platform: ...

    @property
    def python(self) -> PythonInfo: ...

    @property
    def config(self) -> ImageConfig:
        """The base's own config (its ENV starts the image's)."""

    @property
    def remote(self) -> bool:
        """Pulled from a registry: its tag may move between builds (the no-change answer is not kept)."""

    @property
    def keeps_packages(self) -> bool:
        """Its Python packages stay: the venv sees its site-packages, and the lock keeps their versions."""

    def explain(self) -> list[str]: ...

    def lock_inputs(self, requirements: Sequence[str], replace: Sequence[str], cache: Cache) -> BaseLock:
        """What the lock must keep; refuses (one line) a requirement the base's own version does not meet."""

    def resolve_error(self, exc: GpushipError, replace: Sequence[str]) -> GpushipError | None:
        """A failed lock said in terms of the base, when the base's packages are the cause."""

    def installed(self, lock: Lock, replace: Sequence[str]) -> Lock:
        """The part of ``lock`` the build installs (what the base has in the same version is not)."""

    def system_libraries(
        self, layers: Sequence[Layer], packages: Sequence[str], cache: Cache, env_of: EnvOf, progress: Progress
    ) -> tuple[LibDep, ...]:
        """The system packages ELF files of ``layers`` need from the base (find-libdeps); raises when a needed
        library cannot be had on this base."""

    def scan_ahead(self, layer: Layer, cache: Cache) -> None:
        """Read now what :meth:`system_libraries` will need of ``layer`` (remembered by its digest), on the thread
        that made it, while other layers are still being made."""

    def floor(self, cache: Cache, progress: Progress) -> tuple[Layer, ...]:
        """The layers :meth:`start` puts below the environment whatever the system packages (``Started.layers``),
        known before find-libdeps has run: what an engine may load ahead of the rest."""

    def start(self, packages: Sequence[str], cache: Cache, progress: Progress) -> Started:
        """The image to grow on, with the system ``packages`` in it."""
