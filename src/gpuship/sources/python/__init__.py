"""The image's Python environment: lock with uv, install the locked wheels for a target platform, prune -> Layers.

Public API::

    lock_project(project, platforms, python_version, cache, *, locked=False, extra_requirements=(),
                 constraints=(), progress=None, glibc="2.36") -> Lock
    python_layers(lock, platform, python, cache, *, prune=PruneRules(), progress=None, venv="/opt/venv",
                  compression="none") -> PythonEnv
    install_project(project, python, cache, *, platform=None, venv="/opt/venv", prune=PruneRules()) -> ProjectInstall

``python`` is anything with ``version`` ("3.11" / "3.11.2") and ``executable`` ("/usr/bin/python3.11"), such as
:class:`PythonInfo`. See docs/python-env.md for the lock file, the layer groups, the
pruning rules and the bytecode policy.
"""

from ...project.entrypoint import VENV
from ..debian.profiles import PythonInfo
from .env import Distribution, PythonEnv, python_layers
from .groups import GROUPS, group_of
from .lock import LOCK_NAME, Lock, LockedPackage, LockedTarget, NoWheelError, lock_project, read_lock
from .project import ProjectInstall, install_project
from .prune import JIT_PACKAGES, PruneReport, PruneRules

__all__ = [
    "GROUPS",
    "JIT_PACKAGES",
    "LOCK_NAME",
    "VENV",
    "Distribution",
    "Lock",
    "LockedPackage",
    "LockedTarget",
    "NoWheelError",
    "ProjectInstall",
    "PruneReport",
    "PruneRules",
    "PythonEnv",
    "PythonInfo",
    "group_of",
    "install_project",
    "lock_project",
    "python_layers",
    "read_lock",
]
