"""Running through a container engine (Docker or Podman) when one answers.

The image is loaded into the engine as a docker-archive (skipped when the engine already holds it: the tag is
derived from the config digest, which is the engine's image ID), then ``docker run`` gets the flags deep-learning
containers need: ``--shm-size`` (1g by default), ``--ulimit memlock=-1 --ulimit stack=67108864``, the GPUs
(``--gpus`` for Docker, the CDI device ``nvidia.com/gpu=…`` for Podman), ``-e``, ``-v``, ``-p``, ``--rm``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import replace

from .. import tools
from ..errors import GpushipError
from ..oci.engine import load_into_engine
from ..oci.image import Image
from ..progress import NO_PROGRESS, Progress, stage
from .gpu import GpuRequest
from .limits import find_process, possible_ulimits
from .options import RunOptions
from .process import run_forwarding

Engine = str  # "docker" | "podman"
RUN_REPOSITORY = "gpuship-run"


def engine_answers(engine: Engine, timeout: float = 15) -> bool:
    """Whether ``engine`` is installed and its daemon/service answers (quickly)."""
    exe = tools.which(engine)
    if exe is None:
        return False
    fmt = "{{.Server.Version}}" if engine == "docker" else "{{.Version}}"
    try:
        proc = subprocess.run([exe, "version", "--format", fmt], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return False
    out = proc.stdout.strip()
    return proc.returncode == 0 and bool(out) and not out.startswith("<no value>")


def format_size(n: int) -> str:
    """Bytes in the engine's short form: 1073741824 -> ``1g``."""
    for unit, factor in (("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10)):
        if n % factor == 0:
            return f"{n // factor}{unit}"
    return f"{n}b"


def engine_tag(image: Image) -> str:
    """The tag gpuship loads ``image`` under: derived from its config digest, so reloading is skipped."""
    return f"{RUN_REPOSITORY}:{hashlib.sha256(image.config_bytes()).hexdigest()[:16]}"


def engine_has(engine: Engine, ref: str, image_id: str | None = None) -> bool:
    exe = tools.require(engine)
    proc = subprocess.run([exe, "image", "inspect", "--format", "{{.Id}}", ref], capture_output=True, text=True)
    if proc.returncode != 0:
        return False
    return image_id is None or proc.stdout.strip() in (image_id, image_id.split(":", 1)[1])


def engine_labels(engine: Engine, ref: str) -> dict[str, str]:
    """The labels of an image the engine holds (``{}`` when it has none, or the engine cannot say)."""
    exe = tools.require(engine)
    fmt = "{{json .Config.Labels}}"
    proc = subprocess.run([exe, "image", "inspect", "--format", fmt, ref], capture_output=True, text=True)
    try:
        labels = json.loads(proc.stdout) if proc.returncode == 0 else None
    except ValueError:
        labels = None
    return {str(k): str(v) for k, v in (labels or {}).items()}


def ensure_loaded(engine: Engine, image: Image, progress: Progress = NO_PROGRESS) -> str:
    """Load ``image`` into the engine unless it already holds it; returns the tag to run."""
    tag = engine_tag(image)
    image_id = "sha256:" + hashlib.sha256(image.config_bytes()).hexdigest()
    if engine_has(engine, tag, image_id):
        return tag

    with stage(progress, f"loading the image into {engine}"):
        load_into_engine(image, tag, engine=engine)
    return tag


def gpu_flags(engine: Engine, request: GpuRequest) -> list[str]:
    """How to ask the engine for the GPUs: Docker's ``--gpus`` or Podman's CDI devices."""
    if request.void or not request.devices:
        return []
    if engine == "podman":
        if request.devices == ("all",):
            return ["--device", "nvidia.com/gpu=all"]
        return [x for d in request.devices for x in ("--device", f"nvidia.com/gpu={d}")]
    if request.devices == ("all",):
        return ["--gpus", "all"]
    return ["--gpus", f'"device={",".join(request.devices)}"']


def engine_argv(engine: Engine, target: str, options: RunOptions, gpus: list[str]) -> list[str]:
    """The full ``docker run`` / ``podman run`` command line."""
    argv = [tools.require(engine), "run"]
    if not options.keep:
        argv.append("--rm")
    if options.name:
        argv += ["--name", options.name]
    argv.append("-i")
    if _isatty(0) and _isatty(1):
        argv.append("-t")
    argv += ["--shm-size", format_size(options.shm_size)]
    for u in options.ulimits:
        argv += ["--ulimit", str(u)]
    argv += gpus
    for k, v in options.env.items():
        argv += ["-e", f"{k}={v}"]
    for vol in options.volumes:
        argv += ["-v", str(vol)]
    for p in options.ports:
        argv += ["-p", p]
    if options.workdir:
        argv += ["-w", options.workdir]
    if options.user is not None:
        argv += ["-u", options.user]
    if options.read_only:
        argv += ["--read-only", "--tmpfs", "/tmp"]
    command = list(options.command)
    if options.entrypoint is not None:
        argv += ["--entrypoint", options.entrypoint[0] if options.entrypoint else ""]
        command = list(options.entrypoint[1:]) + command
    argv.append(target)
    return argv + command


def run_in_engine(
    engine: Engine,
    image: Image | None,
    ref: str | None,
    options: RunOptions,
    request: GpuRequest | None,
    *,
    progress: Progress = NO_PROGRESS,
    notify: Callable[[str], None] | None = None,
) -> int:
    """Run ``image`` (loaded first) or ``ref`` (an image the engine already holds); returns the exit status."""
    if image is not None:
        target = ensure_loaded(engine, image, progress)
    elif ref is not None:
        if not engine_has(engine, ref):
            raise GpushipError(
                f"{engine} has no image {ref!r} and gpuship cannot read it",
                "give an OCI layout, an archive, or an image the engine holds",
            )
        target = ref
    else:  # pragma: no cover - callers pass one of them
        raise ValueError("run_in_engine needs an image or a ref")
    setter = find_process("dockerd") if engine == "docker" else "self"
    options = replace(options, ulimits=tuple(possible_ulimits(options.ulimits, notify, setter=setter)))
    argv = engine_argv(engine, target, options, gpu_flags(engine, request) if request else [])
    if notify and options.verbose:
        notify(" ".join(argv))
    return run_forwarding(argv)


def _isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False
