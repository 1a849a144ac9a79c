"""A Compose file (Compose Specification, as docker-compose >= 1.28 and ``docker compose`` read it) for a GPU
workload: GPUs reserved through ``deploy.resources.reservations.devices`` (driver nvidia, capabilities
[gpu]), a real ``/dev/shm`` (``shm_size``) and the ulimits NVIDIA's containers recommend for deep learning
(``memlock=-1``, ``stack=67108864``).
"""

from __future__ import annotations

from dataclasses import dataclass

from .k8s import to_yaml
from .spec import DeploySpec, docker_size


@dataclass(frozen=True)
class ComposeOptions:
    #: Host port to publish the service's port on (default: the same number).
    host_port: int | None = None
    #: ``all`` GPUs instead of a count.
    all_gpus: bool = False
    restart: str = "unless-stopped"
    grace_seconds: int = 30


def compose_file(spec: DeploySpec, opts: ComposeOptions = ComposeOptions()) -> dict[str, object]:
    svc: dict[str, object] = {"image": spec.image}
    if spec.port is not None:
        svc["ports"] = [f"{opts.host_port or spec.port}:{spec.port}"]
    if spec.env:
        svc["environment"] = dict(spec.env)
    if spec.models:  # read-only bind mounts; a relative directory is beside compose.yaml
        svc["volumes"] = [f"{m.host_dir(f'./models/{m.name}')}:{m.path}:ro" for m in spec.models]
    svc["shm_size"] = docker_size(spec.shm_size)
    svc["ulimits"] = {"memlock": -1, "stack": 67108864}
    svc["restart"] = opts.restart
    svc["stop_grace_period"] = f"{opts.grace_seconds}s"
    if spec.function_runtime and spec.port is not None:
        svc["healthcheck"] = {
            "test": ["CMD", *spec.probe_argv("/readyz")],
            "interval": "10s",
            "timeout": "5s",
            "retries": 3,
            "start_period": "120s",
        }
    if spec.gpus or opts.all_gpus:
        device: dict[str, object] = {"driver": "nvidia"}
        device["count"] = "all" if opts.all_gpus else spec.gpus
        device["capabilities"] = ["gpu"]
        svc["deploy"] = {"resources": {"reservations": {"devices": [device]}}}
    return {"services": {spec.name: svc}}


def compose_yaml(spec: DeploySpec, opts: ComposeOptions = ComposeOptions()) -> str:
    return to_yaml([compose_file(spec, opts)], header=f"gpuship deploy compose {spec.image}")
