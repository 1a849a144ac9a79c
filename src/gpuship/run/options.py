"""What ``gpuship run`` is asked to do: one frozen value, and the parsers for the Docker-style flags."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from ..errors import GpushipError

Runtime = Literal["auto", "builtin", "runc", "chroot", "docker", "podman"]
RUNTIMES: tuple[Runtime, ...] = ("auto", "builtin", "runc", "chroot", "docker", "podman")
#: The runtimes that run an image without an engine (slimming traces the workload there).
BUILTIN_RUNTIMES: tuple[Runtime, ...] = ("builtin", "runc", "chroot")

DEFAULT_SHM_SIZE = 1 << 30  # 1g: PyTorch DataLoader workers need more than the 64 MB engines give by default


@dataclass(frozen=True)
class Ulimit:
    """An rlimit: ``-1`` is unlimited."""

    name: str
    soft: int
    hard: int

    def __str__(self) -> str:
        return f"{self.name}={self.soft}" if self.soft == self.hard else f"{self.name}={self.soft}:{self.hard}"


#: What seed 004 (and NVIDIA's own guidance for deep-learning containers) passes: unlimited locked memory
#: (pinned host buffers, NCCL) and a 64 MiB stack.
DEFAULT_ULIMITS: tuple[Ulimit, ...] = (Ulimit("memlock", -1, -1), Ulimit("stack", 67108864, 67108864))
ULIMIT_NAMES = (
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
    "as",
)


@dataclass(frozen=True)
class Volume:
    source: str
    destination: str
    readonly: bool = False

    def __str__(self) -> str:
        return f"{self.source}:{self.destination}" + (":ro" if self.readonly else "")


@dataclass(frozen=True)
class RunOptions:
    """Everything about one run except the image. ``command`` replaces the image's Cmd, ``entrypoint`` its
    Entrypoint (Docker's rules). ``gpus`` None means: every GPU the host has, unless the image says ``void``."""

    command: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    volumes: tuple[Volume, ...] = ()
    ports: tuple[str, ...] = ()
    workdir: str | None = None
    user: str | None = None
    shm_size: int = DEFAULT_SHM_SIZE
    ulimits: tuple[Ulimit, ...] = DEFAULT_ULIMITS
    gpus: str | None = None
    runtime: Runtime = "auto"
    read_only: bool = False
    keep: bool = False  # engines: keep the container (no --rm)
    name: str | None = None  # engines: the container's name
    verbose: bool = False
    #: ``--model NAME=DIR``: host directories for the image's mounted models (``[tool.gpuship] models`` mounts)
    models: Mapping[str, str] = field(default_factory=dict)

    def with_ulimits(self, extra: Iterable[Ulimit]) -> RunOptions:
        """The defaults, with same-named entries replaced by ``extra``."""
        merged = {u.name: u for u in self.ulimits}
        for u in extra:
            merged[u.name] = u
        return replace(self, ulimits=tuple(merged.values()))


def parse_runtime(value: str, allowed: tuple[Runtime, ...] = RUNTIMES, hint: str | None = None) -> Runtime:
    """``--runtime VALUE`` as a :data:`Runtime`, or a user error listing ``allowed``."""
    for runtime in allowed:
        if value == runtime:
            return runtime
    raise GpushipError(f"--runtime must be one of {', '.join(allowed)}, not {value!r}", hint)


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``1g``, ``512m``, ``64MiB``, ``1073741824`` -> bytes (binary units, as Docker's --shm-size)."""
    m = _SIZE.match(text)
    if not m:
        raise GpushipError(f"{text!r} is not a size", "use a number with an optional unit: 512m, 1g, 2G")
    number, unit = float(m.group(1)), m.group(2).lower()
    value = int(number * (1024 ** " kmgt".index(unit or " ")))
    if value <= 0:
        raise GpushipError(f"size {text!r} must be more than zero", "use e.g. 1g")
    return value


def parse_ulimit(text: str) -> Ulimit:
    """``memlock=-1``, ``stack=67108864``, ``nofile=1024:4096`` (Docker's --ulimit)."""
    name, sep, value = text.partition("=")
    name = name.strip().lower()
    if not sep or name not in ULIMIT_NAMES:
        raise GpushipError(f"--ulimit {text!r} is not NAME=SOFT[:HARD]", f"NAME is one of {', '.join(ULIMIT_NAMES)}")
    soft_s, _, hard_s = value.partition(":")
    try:
        soft = int(soft_s)
        hard = int(hard_s) if hard_s else soft
    except ValueError as exc:
        raise GpushipError(f"--ulimit {text!r}: limits must be integers (-1 for unlimited)") from exc
    if soft != -1 and hard != -1 and soft > hard:
        raise GpushipError(f"--ulimit {text!r}: the soft limit is above the hard one")
    return Ulimit(name, soft, hard)


def parse_models(items: Iterable[str]) -> dict[str, str]:
    """``NAME=DIR`` pairs (``--model``); the directory is made absolute and must exist."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise GpushipError(f"--model {item!r} is not NAME=DIR", "e.g. --model llama=/data/llama")
        if not os.path.isdir(path):
            raise GpushipError(f"--model {item!r}: {path} is not a directory", "give the directory holding the model")
        out[name] = os.path.abspath(path)
    return out


def parse_volume(text: str) -> Volume:
    """``/host/path:/container/path[:ro|rw]``; the host path is made absolute."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1].startswith("/"):
        raise GpushipError(f"-v {text!r} is not HOST_PATH:CONTAINER_PATH[:ro]", "e.g. -v ./data:/data:ro")
    mode = parts[2] if len(parts) == 3 else "rw"
    if mode not in ("ro", "rw"):
        raise GpushipError(f"-v {text!r}: the mode must be ro or rw")
    return Volume(os.path.abspath(parts[0]), parts[1], mode == "ro")


def parse_env(items: Iterable[str], host_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``KEY=VALUE`` pairs; a bare ``KEY`` takes the host's value (and is skipped if the host has none)."""
    host = os.environ if host_env is None else host_env
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not key or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", key):
            raise GpushipError(f"-e {item!r} is not KEY=VALUE", "e.g. -e CUDA_VISIBLE_DEVICES=0")
        if sep:
            out[key] = value
        elif key in host:
            out[key] = host[key]
    return out


_PORT = re.compile(
    r"^(?:(?:\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]):)?(?:(\d+)?(?:-\d+)?:)?(\d+)(?:-\d+)?(?:/(tcp|udp|sctp))?$"
)


def parse_port(text: str) -> str:
    """Docker's ``-p`` forms: ``8000``, ``8080:8000``, ``127.0.0.1:8080:8000/tcp``."""
    if not _PORT.match(text.strip()):
        raise GpushipError(f"-p {text!r} is not [IP:][HOST_PORT:]CONTAINER_PORT[/PROTO]", "e.g. -p 8000:8000")
    return text.strip()


def host_and_container_port(text: str) -> tuple[str | None, str]:
    m = _PORT.match(text)
    assert m is not None
    return m.group(1), m.group(2)
