"""A Slurm batch script that runs the image with pyxis + enroot (``srun --container-image=FILE.sqsh``).

The squashfs file comes from ``gpuship export IMAGE --format squashfs``. The script spells out the image's
ENTRYPOINT + CMD and WORKDIR rather than relying on pyxis' ``--container-entrypoint`` (off by default and
missing before pyxis 0.12). pyxis keeps the image's own environment over the job's, so variables the script
sets are named in ``--container-env`` to win.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import GpushipError
from .spec import DeploySpec


@dataclass(frozen=True)
class SlurmOptions:
    image_file: str = ""  # default: <name>.sqsh in the submit directory
    mounts: tuple[str, ...] = ()  # SRC:DST[:FLAGS], added to the results mount
    time: str | None = None
    partition: str | None = None
    account: str | None = None
    cpus_per_task: int | None = None
    memory: str | None = None
    nodes: int = 1


_SAFE = re.compile(r"[A-Za-z0-9_./@%+=:-]+")


def _check_mount(m: str) -> str:
    parts = m.split(":")
    if len(parts) not in (2, 3) or not all(parts[:2]) or not parts[1].startswith("/") or not _SAFE.fullmatch(m):
        raise GpushipError(f"--mount {m!r} is not SRC:DST[:FLAGS]", "e.g. --mount /data:/data:ro")
    return m


def _sbatch(key: str, value: object) -> str:
    text = str(value)
    if any(c.isspace() for c in text):
        raise GpushipError(f"--{key} {text!r} may not contain spaces")
    return f"#SBATCH --{key}={text}"


def _quote_argv(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


def slurm_script(spec: DeploySpec, opts: SlurmOptions = SlurmOptions()) -> str:
    if not spec.command:
        raise GpushipError(
            f"{spec.image} has no ENTRYPOINT or CMD", "build it with an entrypoint, or write the srun line yourself"
        )
    image_file = opts.image_file or f"{spec.name}.sqsh"
    if not _SAFE.fullmatch(image_file):
        raise GpushipError(
            f"image file name {image_file!r} has characters a shell would read", "use letters, digits, . _ - /"
        )
    lines = [
        "#!/bin/bash",
        f"# gpuship deploy slurm: runs {spec.image} with pyxis/enroot.",
        "# Make the image file first, next to this script:",
        f"#   gpuship export {spec.image} --format squashfs -o {image_file}",
        f"# then submit: sbatch {spec.name}.sbatch",
        _sbatch("job-name", spec.name),
        _sbatch("nodes", opts.nodes),
        _sbatch("ntasks-per-node", 1),
    ]
    if spec.gpus:
        lines.append(_sbatch("gpus-per-node", spec.gpus))
    if opts.cpus_per_task:
        lines.append(_sbatch("cpus-per-task", opts.cpus_per_task))
    if opts.memory:
        lines.append(_sbatch("mem", opts.memory))
    if opts.time:
        lines.append(_sbatch("time", opts.time))
    if opts.partition:
        lines.append(_sbatch("partition", opts.partition))
    if opts.account:
        lines.append(_sbatch("account", opts.account))
    lines.append(_sbatch("output", f"{spec.name}-%j.out"))
    lines += [
        "set -euo pipefail",
        "",
        'SUBMIT_DIR="${SLURM_SUBMIT_DIR:-$PWD}"',
        'IMAGE_FILE="${IMAGE_FILE:-'
        + (image_file if image_file.startswith("/") else "$SUBMIT_DIR/" + image_file)
        + '}"',
        'RESULTS_DIR="${RESULTS_DIR:-$SUBMIT_DIR/results}"',
        'mkdir -p "$RESULTS_DIR"',
        'if [ ! -f "$IMAGE_FILE" ]; then',
        '    echo "no image file $IMAGE_FILE: run gpuship export first (see the top of this script)" >&2',
        "    exit 1",
        "fi",
    ]
    env_names = []
    if spec.env:
        lines.append("")
        for k, v in spec.env:
            if "$" in v or "`" in v:
                lines.append("# shellcheck disable=SC2016  # a literal value, not expanded here")
            lines.append(f"export {k}={shlex.quote(v)}")
            env_names.append(k)
    if spec.function_runtime and spec.port is not None:
        lines.append("")
        lines.append(f'echo "{spec.name}: serving on http://$(hostname):{spec.port} (POST /invoke, GET /status)"')
    models = [(m, m.host_dir("")) for m in spec.models]
    if any(not src for _, src in models):
        lines.append('MODELS_DIR="${MODELS_DIR:-$SUBMIT_DIR/models}"')
    model_mounts = [
        _check_mount(f"{src}:{m.path}:ro") if src else f"$MODELS_DIR/{m.name}:{m.path}:ro" for m, src in models
    ]
    mounts = ",".join(["$RESULTS_DIR:/results", *(_check_mount(m) for m in opts.mounts), *model_mounts])
    srun = ["srun", '--container-image="$IMAGE_FILE"', f'--container-mounts="{mounts}"', "--no-container-mount-home"]
    if spec.workdir:
        srun.append(f"--container-workdir={shlex.quote(spec.workdir)}")
    if env_names:
        srun.append(f"--container-env={','.join(env_names)}")
    srun.append(_quote_argv(spec.command))
    lines.append("")
    if any("$" in a or "`" in a for a in spec.command):
        lines.append("# shellcheck disable=SC2016  # the image's command, quoted: the container expands it")
    lines.append(" \\\n    ".join(srun))
    return "\n".join(lines) + "\n"
