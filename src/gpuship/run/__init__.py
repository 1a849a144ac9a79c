"""Run an image: through Docker or Podman when one answers, else the built-in daemonless runner (runc, or a
namespaced chroot), with the NVIDIA driver injected the way the NVIDIA container toolkit does it.

Standard library plus ``gpuship.oci`` / ``gpuship.cache`` only (no Rich), so ``python3 -m gpuship run`` works
from a bare bootstrap on a GPU host.
"""

from .gpu import GpuRequest, HostDriver, HostGpus, Injection, check_requirements, discover, gpu_request, plan_injection
from .options import DEFAULT_SHM_SIZE, DEFAULT_ULIMITS, RunOptions, Ulimit, Volume
from .runner import check_image, resolve_runtime, run_image

__all__ = [
    "DEFAULT_SHM_SIZE",
    "DEFAULT_ULIMITS",
    "HostDriver",
    "GpuRequest",
    "HostGpus",
    "Injection",
    "RunOptions",
    "Ulimit",
    "Volume",
    "check_image",
    "check_requirements",
    "discover",
    "gpu_request",
    "plan_injection",
    "resolve_runtime",
    "run_image",
]
