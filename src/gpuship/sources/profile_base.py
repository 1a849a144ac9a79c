"""A Debian profile as a :class:`~gpuship.sources.base.Base`: planned from its name, built when the image is
assembled (:func:`~gpuship.sources.debian.build_base`), with the packages find-libdeps finds the environment
needs. Its Python is the profile's; it keeps no Python packages, so the lock has nothing of it to respect."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..cache import Cache
from ..errors import GpushipError
from ..oci import ImageConfig, Layer, Platform, append_layers, empty_image
from ..progress import Progress
from .base import BaseLock, EnvOf, Started
from .debian.base import BASE_CONFIG, DebianBase, build_base
from .debian.libdeps import LibDep, libdeps_for_layers, scan_layer
from .debian.profiles import PROFILES, PythonInfo
from .debian.usrmerge import merged_usr_links
from .python.lock import Lock


@dataclass(frozen=True)
class ProfileBase:
    """The Debian profile ``profile`` for ``platform``; ``mirror`` / ``security_mirror`` as in
    :func:`~gpuship.sources.debian.build_base` (None: the host's apt sources)."""

    profile: str
    platform: Platform
    mirror: str | None = None
    security_mirror: str | None = None

    @property
    def name(self) -> str:
        return self.profile

    @property
    def python(self) -> PythonInfo:
        return PROFILES[self.profile].python_info()

    @property
    def config(self) -> ImageConfig:
        return BASE_CONFIG

    @property
    def remote(self) -> bool:
        return False

    @property
    def keeps_packages(self) -> bool:
        return False

    def explain(self) -> list[str]:
        return []

    def lock_inputs(self, requirements: Sequence[str], replace: Sequence[str], cache: Cache) -> BaseLock:
        return BaseLock()

    def resolve_error(self, exc: GpushipError, replace: Sequence[str]) -> GpushipError | None:
        return None

    def installed(self, lock: Lock, replace: Sequence[str]) -> Lock:
        return lock

    def system_libraries(
        self, layers: Sequence[Layer], packages: Sequence[str], cache: Cache, env_of: EnvOf, progress: Progress
    ) -> tuple[LibDep, ...]:
        progress.step(f"[{self.platform}] find-libdeps: scanning shared libraries")
        before = self._build(packages, cache)
        return tuple(libdeps_for_layers(list(layers), before, cache=cache, env=env_of(before.config)))

    def scan_ahead(self, layer: Layer, cache: Cache) -> None:
        scan_layer(layer, cache, merged_usr_links(self.platform.architecture))

    def floor(self, cache: Cache, progress: Progress) -> tuple[Layer, ...]:
        base = self._build((), cache)
        return base.layers[: base.floor]

    def start(self, packages: Sequence[str], cache: Cache, progress: Progress) -> Started:
        """The core and Python layers to grow on; the extra packages and the system files (the dpkg database,
        users) that list them go above the environment (``Started.top``)."""
        progress.step(f"[{self.platform}] assembling the Debian base")
        base = self._build(packages, cache)
        floor, top = base.layers[: base.floor], base.layers[base.floor :]
        image = append_layers(empty_image(self.platform), floor, created_by="gpuship: debian base")
        return Started(image, floor, base.config, base.packages, base.dropped, top=top)

    def _build(self, packages: Sequence[str], cache: Cache) -> DebianBase:
        return build_base(
            self.profile,
            self.platform,
            extra_packages=tuple(packages),
            cache=cache,
            mirror=self.mirror,
            security_mirror=self.security_mirror,
            compression="none",  # layers are plain tars: outputs compress where bytes travel
        )
