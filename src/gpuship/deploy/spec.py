"""``DeploySpec``: what every deploy writer needs to know about one workload, taken from the image config
and the user's options. The writers (k8s, compose, slurm, ngc) only turn a spec into text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ..errors import GpushipError
from ..oci import Image
from ..serve import DEFAULT_PORT, RUNTIME_PATH, is_runtime_image
from ..sources.models import mounts_from_labels

#: A label an image may carry to say how much /dev/shm it wants (e.g. "8Gi"); --shm-size wins over it.
SHM_LABEL = "dev.gpuship.shm-size"
DEFAULT_SHM = "1Gi"

_UNITS = {
    "": 1,
    "k": 1000,
    "m": 1000**2,
    "g": 1000**3,
    "t": 1000**4,
    "ki": 1 << 10,
    "mi": 1 << 20,
    "gi": 1 << 30,
    "ti": 1 << 40,
    "kb": 1 << 10,
    "mb": 1 << 20,
    "gb": 1 << 30,
    "tb": 1 << 40,
    "b": 1,
}


def parse_quantity(text: str | int, what: str = "size") -> int:
    """``1Gi``, ``512Mi``, ``2g`` (Docker: binary), ``1G`` (Kubernetes: decimal), ``1073741824`` -> bytes.

    A deployment's sizes are Kubernetes quantities as well as Docker sizes, hence a rule of its own:
    :func:`gpuship.run.options.parse_size` reads Docker's only (``1G`` is binary there).

    Docker's single letters (``g``, ``m``) are binary and Kubernetes' capitals (``G``, ``M``) decimal; a
    lowercase single letter is read the Docker way, since that is where people write it.
    """
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    unit = m.group(2) if m else ""
    if m and unit in ("k", "m", "g", "t"):
        factor = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[unit]
    elif m and unit in ("K", "M", "G", "T"):
        factor = _UNITS[unit.lower()]
    elif m and unit.lower() in _UNITS:
        factor = _UNITS[unit.lower()]
    else:
        raise GpushipError(f"{what} {text!r} is not a size", "write it like 1Gi, 512Mi or 2g")
    value = int(float(m.group(1)) * factor)
    if value <= 0:
        raise GpushipError(f"{what} {text!r} must be more than zero")
    return value


def k8s_quantity(n: int) -> str:
    """Bytes as a Kubernetes quantity, in the largest binary unit that divides them (``1Gi``)."""
    for unit, size in (("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


def docker_size(n: int) -> str:
    """Bytes the way Docker and Compose write them (``1g``; binary units)."""
    for unit, size in (("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10)):
        if n % size == 0:
            return f"{n // size}{unit}"
    return f"{n}b"


def dns_name(text: str) -> str:
    """A DNS-1123 label (Kubernetes object names, compose service names): lowercase, digits, '-', <= 63."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    name = re.sub(r"-{2,}", "-", name)[:63].strip("-")
    if not name or not name[0].isalpha():
        name = ("app-" + name)[:63].strip("-")
    return name


def name_from_ref(ref: str) -> str:
    """``registry:5000/team/my_app:1.0@sha256:...`` -> ``my-app``."""
    base = ref.split("@", 1)[0]
    last = base.rsplit("/", 1)[-1]
    return dns_name(last.split(":", 1)[0])


def check_name(name: str) -> str:
    if not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", name):
        raise GpushipError(
            f"{name!r} is not a usable name", "use lowercase letters, digits and '-', start with a letter, at most 63"
        )
    return name


def parse_env_pairs(pairs: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """``KEY=VALUE`` pairs for a manifest, in order. Unlike ``gpuship run -e`` (:func:`gpuship.run.options.parse_env`)
    a bare ``KEY`` is refused: the deploying machine's environment never leaks into a manifest."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise GpushipError(f"--env {pair!r} is not KEY=VALUE", "e.g. --env LOG_LEVEL=DEBUG")
        out[key] = value
    return tuple(out.items())


@dataclass(frozen=True)
class ModelVolume:
    """A model the image expects mounted at ``path`` (``[tool.gpuship] models = [{ mount = ... }]``), and where
    it comes from: ``pvc:CLAIM`` or a host directory, from ``--model NAME=SOURCE`` or the image's defaults
    (``claim``, ``host``); "" leaves the choice to the writer."""

    name: str
    path: str
    env: str
    source: str = ""
    claim: str = ""
    host: str = ""

    @property
    def volume_name(self) -> str:
        return dns_name(f"model-{self.name}")

    def host_dir(self, default: str) -> str:
        """For bind mounts (compose, slurm, run): the directory given, else the image's ``host``, else
        ``default``."""
        if self.source.startswith("pvc:"):
            raise GpushipError(
                f"--model {self.name}={self.source}: a PersistentVolumeClaim is for Kubernetes",
                f"give a host directory: --model {self.name}=/path/to/{self.name}",
            )
        return self.source or self.host or default


def model_volumes(labels: Mapping[str, str], sources: Iterable[str]) -> tuple[ModelVolume, ...]:
    """The image's mounted models with ``--model NAME=SOURCE`` applied (a name the image lacks is an error)."""
    mounts = mounts_from_labels(dict(labels))
    given: dict[str, str] = {}
    for pair in sources:
        name, sep, source = pair.partition("=")
        if not sep or not source:
            raise GpushipError(f"--model {pair!r} is not NAME=SOURCE", "e.g. --model llama=pvc:llama-weights")
        if name not in {m.name for m in mounts}:
            have = ", ".join(m.name for m in mounts) or "none"
            raise GpushipError(
                f"--model {name}: the image mounts no model of that name (it has: {have})",
                "declare it in [tool.gpuship] models = [{ mount = ... }] and rebuild",
            )
        if not (source.startswith("pvc:") and len(source) > 4) and not source.startswith(("/", "./", "../")):
            raise GpushipError(f"--model {pair!r}: SOURCE must be pvc:CLAIM or a directory path", "e.g. /data/llama")
        given[name] = source
    return tuple(ModelVolume(m.name, m.path, m.env, given.get(m.name, ""), m.claim, m.host) for m in mounts)


@dataclass(frozen=True)
class DeploySpec:
    """One workload: the image reference a cluster pulls and how to run it."""

    name: str
    image: str
    gpus: int = 1
    replicas: int = 1
    shm_size: int = 1 << 30
    port: int | None = None
    env: tuple[tuple[str, str], ...] = ()
    #: The image's ENTRYPOINT + CMD (what Slurm and NGC must spell out; Kubernetes and Compose use the image's).
    command: tuple[str, ...] = ()
    workdir: str = ""
    #: The image runs the gpuship function runtime: probes on /healthz and /readyz, metrics on /metrics.
    function_runtime: bool = False
    #: The runtime's Python inside the image (for a Compose health check).
    python: str = "python3"
    image_env: Mapping[str, str] = field(default_factory=dict)
    #: Models the image expects mounted (read-only) and where each comes from.
    models: tuple[ModelVolume, ...] = ()

    def __post_init__(self) -> None:
        check_name(self.name)
        if self.gpus < 0:
            raise GpushipError(f"--gpus {self.gpus} is negative", "give 0 (no GPU) or more")
        if self.replicas < 0:
            raise GpushipError(f"--replicas {self.replicas} is negative")
        if self.port is not None and not 0 < self.port < 65536:
            raise GpushipError(f"port {self.port} is out of range", "give 1-65535")
        if not self.image:
            raise GpushipError("no image reference", "pass --ref REGISTRY/NAME:TAG")

    @property
    def env_dict(self) -> dict[str, str]:
        return dict(self.env)

    def probe_argv(self, path: str) -> list[str]:
        """The in-container health check: the runtime's own ``--probe`` mode (no curl in minimal images)."""
        return [self.python, RUNTIME_PATH, "--probe", path]


def _port_from_image(image: Image) -> int | None:
    env = image.config.env_dict()
    if is_runtime_image(image.config) and env.get("PORT", "").isdigit():
        return int(env["PORT"])
    tcp = sorted(
        int(p.split("/")[0])
        for p in image.config.exposed_ports
        if p.split("/")[0].isdigit() and (p.endswith("/tcp") or "/" not in p)
    )
    if tcp:
        return tcp[0]
    return DEFAULT_PORT if is_runtime_image(image.config) else None


def spec_from_image(
    image: Image,
    ref: str,
    *,
    name: str | None = None,
    gpus: int = 1,
    replicas: int = 1,
    shm_size: str | int | None = None,
    port: int | None = None,
    env: Iterable[str] = (),
    models: Iterable[str] = (),
) -> DeploySpec:
    """A :class:`DeploySpec` from an image's config, with the options on top."""
    cfg = image.config
    runtime = is_runtime_image(cfg)
    python = "python3"
    if runtime and len(cfg.entrypoint) >= 2 and cfg.entrypoint[1] == RUNTIME_PATH:
        python = cfg.entrypoint[0]
    shm = shm_size if shm_size is not None else cfg.labels.get(SHM_LABEL, DEFAULT_SHM)
    extra = parse_env_pairs(env)
    chosen_port = port if port is not None else _port_from_image(image)
    if runtime and chosen_port is not None and cfg.env_dict().get("PORT") != str(chosen_port):
        # the runtime listens where PORT says: keep it and the manifests' port the same
        extra = tuple(kv for kv in extra if kv[0] != "PORT") + (("PORT", str(chosen_port)),)
    return DeploySpec(
        name=check_name(name) if name else name_from_ref(ref),
        image=ref,
        gpus=gpus,
        replicas=replicas,
        shm_size=parse_quantity(shm, "--shm-size"),
        port=chosen_port,
        env=extra,
        command=tuple(cfg.entrypoint) + tuple(cfg.cmd),
        workdir=cfg.working_dir,
        function_runtime=runtime,
        python=python,
        image_env=cfg.env_dict(),
        models=model_volumes(cfg.labels, models),
    )
