"""The Debian base, built from packages: no base image, no daemon, no maintainer scripts.

Public API::

    build_base(profile, platform, extra_packages=(), cache=None, mirror=None, progress=None) -> DebianBase
    libdeps_for_layers(layers, base, cache=None) -> list[LibDep]
    PROFILES: dict[str, Profile]
"""

from .base import DebianBase, build_base
from .libdeps import LibDep, libdeps_for_layers, libdeps_for_tree
from .profiles import PROFILES, Profile, PythonInfo, get_profile
from .slim import SlimReport

__all__ = [
    "PROFILES",
    "DebianBase",
    "LibDep",
    "Profile",
    "PythonInfo",
    "SlimReport",
    "build_base",
    "get_profile",
    "libdeps_for_layers",
    "libdeps_for_tree",
]
