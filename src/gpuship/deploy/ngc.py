"""The ``ngc batch run`` command that submits the image as an NVIDIA Base Command (NGC) job.

Base Command runs ``--commandline`` in a shell inside the container instead of the image's ENTRYPOINT, so
the command spells the ENTRYPOINT + CMD out (with the WORKDIR and any extra environment). ``--result``
names the directory whose content is kept as the job's result; ``--port`` opens the runtime's port.
The image must be in the NGC registry the job's org can pull from (``nvcr.io/ORG[/TEAM]/NAME:TAG``).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from ..errors import GpushipError
from .spec import DeploySpec


@dataclass(frozen=True)
class NgcOptions:
    #: The instance type (``ngc base-command ace info`` lists them); default from the GPU count.
    instance: str | None = None
    ace: str | None = None
    org: str | None = None
    team: str | None = None
    result: str = "/results"
    total_runtime: str | None = None  # e.g. 1h, 2D


def default_instance(gpus: int) -> str:
    return f"dgxa100.80g.{max(gpus, 1)}.norm"


def commandline(spec: DeploySpec) -> str:
    """The shell text the job runs: env exports, cd WORKDIR, exec ENTRYPOINT CMD."""
    if not spec.command:
        raise GpushipError(f"{spec.image} has no ENTRYPOINT or CMD", "build it with an entrypoint")
    parts = [f"export {k}={shlex.quote(v)}" for k, v in spec.env]
    if spec.workdir:
        parts.append(f"cd {shlex.quote(spec.workdir)}")
    parts.append("exec " + " ".join(shlex.quote(a) for a in spec.command))
    return " && ".join(parts)


def ngc_image(ref: str) -> str:
    """NGC names images without the registry host: ``nvcr.io/org/team/app:1`` -> ``org/team/app:1``."""
    return ref.removeprefix("nvcr.io/")


def ngc_script(spec: DeploySpec, opts: NgcOptions = NgcOptions()) -> str:
    instance = opts.instance or default_instance(spec.gpus)
    if not re.fullmatch(r"[A-Za-z0-9._-]+", instance):
        raise GpushipError(f"--instance {instance!r} is not an instance name", "e.g. dgxa100.80g.1.norm")
    args = [
        "ngc batch run",
        f"--name {shlex.quote(spec.name)}",
        f"--image {shlex.quote(ngc_image(spec.image))}",
        f"--instance {instance}",
        f"--result {shlex.quote(opts.result)}",
    ]
    if spec.port is not None:
        args.append(f"--port {spec.port}")
    if opts.total_runtime:
        args.append(f"--total-runtime {shlex.quote(opts.total_runtime)}")
    for flag, value in (("--ace", opts.ace), ("--org", opts.org), ("--team", opts.team)):
        if value:
            args.append(f"{flag} {shlex.quote(value)}")
    args.append(f"--commandline {shlex.quote(commandline(spec))}")
    lines = [
        "#!/bin/bash",
        f"# gpuship deploy ngc: submits {spec.image} as an NGC Base Command job.",
        f"# Push the image to the NGC registry first (gpuship build -o registry:nvcr.io/{ngc_image(spec.image)}),",
        "# and log in with `ngc config set`.",
        "set -euo pipefail",
        "# The command line is quoted for the job's shell, which expands it; this one must not.",
        "# shellcheck disable=SC2016",
        " \\\n    ".join(args),
    ]
    return "\n".join(lines) + "\n"
