"""``run_image`` / ``check_image``: pick the runtime, settle the GPUs, run, return the command's exit status."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Literal

from .. import tools
from ..cache import Cache
from ..errors import GpuError, GpushipError
from ..oci.docker_archive import pick_image
from ..oci.image import Image, Index, Platform
from ..progress import NO_PROGRESS, Progress
from ..sources.models import mounts_from_labels
from ..transports import read_image
from . import gpu as gpu_mod
from .builtin import CHECK_PATH, Flavor, run_rootfs
from .engines import engine_answers, engine_has, engine_labels, run_in_engine
from .gpu import GpuRequest, HostGpus, Injection
from .options import RunOptions, Volume
from .rootfs import unpacked_rootfs

Notify = Callable[[str], None]
ImageRef = Image | Index | str


def _stderr(msg: str) -> None:
    print(f"gpuship: {msg}", file=sys.stderr, flush=True)


def resolve_runtime(requested: str) -> Literal["docker", "podman"] | Flavor:
    """``auto``: Docker, then Podman, if one answers; else runc if installed; else the namespaced chroot."""
    if requested == "docker" or requested == "podman":
        if not engine_answers(requested):
            raise GpushipError(f"no {requested} engine answers", f"start {requested}, or use --runtime builtin")
        return "docker" if requested == "docker" else "podman"
    if requested == "runc":
        tools.require("runc")
        return "runc"
    if requested == "chroot":
        return "chroot"
    if requested == "builtin":
        return "runc" if tools.which("runc") else "chroot"
    if requested == "auto":
        if engine_answers("docker"):
            return "docker"
        if engine_answers("podman"):
            return "podman"
        return "runc" if tools.which("runc") else "chroot"
    raise GpushipError(f"unknown runtime {requested!r}", "use auto, builtin, runc, chroot, docker or podman")


def open_image(ref: ImageRef, cache: Cache | None = None) -> Image:
    """An :class:`Image` for the host's platform from a value or a reference gpuship can read."""

    obj: Image | Index
    if isinstance(ref, str):
        obj = read_image(ref, None, cache)
    else:
        obj = ref
    if isinstance(obj, Index):
        return pick_image(obj, Platform.host())
    return obj


def settle_gpus(
    image_env: dict[str, str], options: RunOptions, host: HostGpus | None, notify: Notify
) -> tuple[GpuRequest, Injection | None]:
    """What GPUs the container gets: raises a :class:`GpuError` for an impossible ask, notes a CPU-only run."""
    request = gpu_mod.gpu_request(image_env, options.env, options.gpus)
    merged = dict(image_env)
    merged.update(options.env)
    # none or void: said where the image asks for CUDA, else its code may quietly fall back to the CPU
    note = gpu_mod.no_gpu_note(request, options.gpus, merged)
    if note:
        notify(note)
    if request.void:
        return request, None
    host = host if host is not None else gpu_mod.discover()
    if host.driver is None:
        if request.explicit and options.gpus is not None and request.devices:
            raise GpuError(
                f"--gpus {options.gpus} asks for GPUs, but {host.reason}{gpu_mod.requirement_note(merged)}",
                "run without --gpus to use the CPU, or on a host with the NVIDIA driver",
            )
        if not note:
            notify(f"note: {host.reason}; running on the CPU without GPU support{gpu_mod.requirement_note(merged)}")
        return request, None
    gpu_mod.check_requirements(host.driver, merged)
    return request, gpu_mod.plan_injection(host.driver, request)


def run_image(
    image: ImageRef,
    options: RunOptions = RunOptions(),
    *,
    cache: Cache | None = None,
    notify: Notify | None = None,
    progress: Progress = NO_PROGRESS,
    host: HostGpus | None = None,
) -> int:
    """Run ``image`` (a value, or a reference gpuship reads) and return its command's exit status.

    ``host`` overrides GPU discovery (tests bring a fake driver); ``notify`` gets one-line notes;
    ``progress`` hears of the long steps (unpacking, loading into an engine), cleared before the container runs.
    """
    notify = notify or _stderr
    cache = cache or Cache()
    runtime = resolve_runtime(options.runtime)
    if runtime == "docker" or runtime == "podman":
        img: Image | None = None
        ref: str | None = None
        try:
            img = open_image(image, cache)
        except (GpushipError, OSError) as exc:
            if not isinstance(image, str):
                raise
            if not engine_has(runtime, image):
                why = exc.message if isinstance(exc, GpushipError) else (exc.strerror or str(exc))
                raise GpushipError(
                    f"{image!r} is not an image gpuship can read ({why}), nor one {runtime} holds",
                    "give oci:DIR, oci-archive:FILE, docker-archive:FILE, or the name of an image in the engine",
                ) from exc
            ref = image  # an image the engine holds already
        env = img.config.env_dict() if img is not None else {}
        labels = img.config.labels if img is not None else engine_labels(runtime, ref or "")
        options = with_model_mounts(options, labels, notify)
        request, injection = settle_gpus(env, options, host, notify)
        return run_in_engine(
            runtime, img, ref, options, request if injection is not None else None, progress=progress, notify=notify
        )
    img = open_image(image, cache)
    options = with_model_mounts(options, img.config.labels, notify)
    _, injection = settle_gpus(img.config.env_dict(), options, host, notify)
    rootfs = unpacked_rootfs(img, cache, progress)
    return run_rootfs(
        rootfs,
        img.config,
        options,
        runtime,
        injection or Injection(),
        cache=cache,
        notify=notify,
    )


def with_model_mounts(options: RunOptions, labels: Mapping[str, str], notify: Notify) -> RunOptions:
    """The image's mounted models as read-only volumes: ``--model NAME=DIR``, else the image's own ``host``
    directory for it; a model left without one is noted (its directory in the image stays empty)."""

    mounts = mounts_from_labels(labels)
    names = {m.name for m in mounts}
    for name in options.models:
        if name not in names:
            have = ", ".join(sorted(names)) or "none"
            raise GpushipError(
                f"--model {name}: the image mounts no model of that name (it has: {have})",
                "declare it in [tool.gpuship] models = [{ mount = ... }] and rebuild",
            )
    taken = {v.destination for v in options.volumes}
    volumes = []
    for m in mounts:
        source = options.models.get(m.name) or m.host
        if m.path in taken:
            continue  # the user's own -v wins
        if not source:
            notify(f"note: nothing is mounted at {m.path} for model {m.name} (pass --model {m.name}=DIR)")
            continue
        volumes.append(Volume(source, m.path, readonly=True))
    return replace(options, volumes=options.volumes + tuple(volumes))


def check_image(
    image: ImageRef,
    args: Sequence[str] = (),
    options: RunOptions = RunOptions(),
    **kw: object,
) -> int:
    """``gpuship check``: run the image's ``gpuship-check`` (with ``args``) and return its exit status."""
    return run_image(image, replace(options, entrypoint=(CHECK_PATH,), command=tuple(args)), **kw)  # type: ignore[arg-type]  # kw: run_image's own keywords, passed through
