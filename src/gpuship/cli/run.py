"""``gpuship run IMAGE [-- CMD...]`` and ``gpuship check IMAGE``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import typer

from ..oci.image import Image, Index
from ..run import RunOptions, check_image, run_image
from ..run.options import (
    DEFAULT_ULIMITS,
    parse_env,
    parse_models,
    parse_port,
    parse_runtime,
    parse_size,
    parse_ulimit,
    parse_volume,
)
from .app import app
from .console import cli_progress, handles_errors, info, state
from .regopts import CA_FILE, INSECURE, registry_options

IMAGE_HELP = (
    "The image: oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:NAME:TAG], a plain path to any of "
    "them, registry:REF, or (with Docker/Podman) an image the engine already holds."
)


def _opened(image: str, insecure: bool, ca_file: Path | None) -> str | Image | Index:
    """A ``registry:REF`` read here with the command's registry options; anything else as given (the runner
    reads local images itself, and leaves names it cannot read to the engine)."""
    if not image.startswith("registry:"):
        return image
    from ..transports import read_image  # when the command runs, not for --help

    return read_image(image, registry=registry_options(insecure, ca_file))


RUNTIME_HELP = (
    "Where to run it. auto: Docker or Podman if one answers, else runc if installed, else a namespaced chroot. "
    "builtin: the daemonless runner (runc if installed, else chroot; needs root). runc, chroot: that flavour of "
    "it. docker, podman: that engine."
)
GPUS_HELP = (
    "GPUs for the container: all, none, or indices/UUIDs (0,1). Default: what the image's NVIDIA_VISIBLE_DEVICES "
    "says, else all the host has; on a host without an NVIDIA driver the image runs on the CPU (with a note). "
    "The image's NVIDIA_REQUIRE_CUDA is checked against the host driver first (NVIDIA_DISABLE_REQUIRE=1 skips)."
)
DEFAULT_ULIMIT_TEXT = " ".join(f"--ulimit {u}" for u in DEFAULT_ULIMITS)


def container_options(
    *,
    command: tuple[str, ...],
    entrypoint: tuple[str, ...] | None,
    env: list[str] | None,
    volume: list[str] | None,
    publish: list[str] | None,
    workdir: str | None,
    user: str | None,
    shm_size: str,
    gpus: str | None,
    runtime: str,
    read_only: bool = False,
    keep: bool = False,
    name: str | None = None,
    models: Mapping[str, str] | None = None,
) -> RunOptions:
    """:class:`RunOptions` from the container options ``gpuship run`` and ``gpuship dev`` share, as typed."""
    return RunOptions(
        command=command,
        entrypoint=entrypoint,
        env=parse_env(env or ()),
        volumes=tuple(parse_volume(v) for v in volume or ()),
        ports=tuple(parse_port(p) for p in publish or ()),
        workdir=workdir,
        user=user,
        shm_size=parse_size(shm_size),
        gpus=gpus,
        runtime=parse_runtime(runtime),
        verbose=state.verbose > 0,
        read_only=read_only,
        keep=keep,
        name=name,
        models=dict(models or {}),
    )


@app.command(
    "run",
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Example: gpuship run oci:out/app -- python -c 'import torch; print(torch.cuda.is_available())'",
)
@handles_errors
def run(
    image: str = typer.Argument(..., help=IMAGE_HELP),
    command: list[str] | None = typer.Argument(
        None, help="The command, after --: it replaces the image's Cmd (the Entrypoint stays, as with docker run)."
    ),
    runtime: str = typer.Option("auto", "--runtime", help=RUNTIME_HELP),
    gpus: str | None = typer.Option(None, "--gpus", help=GPUS_HELP),
    env: list[str] = typer.Option(
        [], "--env", "-e", help="Set KEY=VALUE in the container (KEY alone: the host's value). Repeatable."
    ),
    volume: list[str] = typer.Option([], "--volume", "-v", help="Bind-mount HOST:CONTAINER[:ro]. Repeatable."),
    model: list[str] = typer.Option(
        [],
        "--model",
        help="Mount a host directory, read-only, where the image expects the model NAME (its [tool.gpuship] models "
        "mounts): NAME=DIR. Default: the image's own host directory for it, if any. Repeatable.",
    ),
    publish: list[str] = typer.Option(
        [],
        "--publish",
        "-p",
        help="Publish [IP:][HOST:]PORT. Engines map it; the built-in runner shares the host's network, so the port "
        "is served as it is (HOST must equal PORT). Repeatable.",
    ),
    workdir: str | None = typer.Option(None, "--workdir", "-w", help="Working directory (default: the image's)."),
    user: str | None = typer.Option(None, "--user", "-u", help="USER[:GROUP] or UID[:GID] (default: the image's)."),
    entrypoint: str | None = typer.Option(None, "--entrypoint", help='Replace the image\'s Entrypoint ("" clears it).'),
    shm_size: str = typer.Option(
        "1g", "--shm-size", help="Size of /dev/shm (engines give 64m, too small for PyTorch DataLoader workers)."
    ),
    ulimit: list[str] = typer.Option(
        [],
        "--ulimit",
        help=f"NAME=SOFT[:HARD] (-1: unlimited), on top of the defaults {DEFAULT_ULIMIT_TEXT}. Repeatable.",
    ),
    read_only: bool = typer.Option(
        False,
        "--read-only",
        help="Read-only root filesystem, with tmpfs on /tmp (and /var/tmp, /run in the built-in runner).",
    ),
    keep: bool = typer.Option(False, "--keep", help="Engines: keep the container after it exits (no --rm)."),
    name: str | None = typer.Option(None, "--name", help="Engines: name the container."),
    insecure: bool = INSECURE,
    ca_file: Path = CA_FILE,
) -> None:
    """Run IMAGE (its command, or the one after --) and exit with the command's exit code.

    Through Docker or Podman when one answers (the image is loaded first), else with the built-in daemonless runner: the image is unpacked once into the cache and run with runc or in a namespaced chroot, as root, on the host's network.

    Both give the container the host's NVIDIA GPUs the way the NVIDIA container toolkit does (device nodes, the driver's libraries, nvidia-smi), --shm-size 1g and unlimited memlock by default.
    """
    options = container_options(
        command=tuple(command or ()),
        entrypoint=None if entrypoint is None else ((entrypoint,) if entrypoint else ()),
        env=env,
        volume=volume,
        publish=publish,
        workdir=workdir,
        user=user,
        shm_size=shm_size,
        gpus=gpus,
        runtime=runtime,
        read_only=read_only,
        keep=keep,
        name=name,
        models=parse_models(model),
    ).with_ulimits(parse_ulimit(u) for u in ulimit)
    with cli_progress() as progress:
        code = run_image(_opened(image, insecure, ca_file), options, notify=info, progress=progress)
    raise typer.Exit(code)


@app.command("check", context_settings={"help_option_names": ["-h", "--help"]})
@handles_errors
def check(
    image: str = typer.Argument(..., help=IMAGE_HELP),
    args: list[str] | None = typer.Argument(None, help="Arguments for gpuship-check, after --."),
    runtime: str = typer.Option("auto", "--runtime", help=RUNTIME_HELP),
    gpus: str | None = typer.Option(None, "--gpus", help=GPUS_HELP),
    env: list[str] = typer.Option([], "--env", "-e", help="Set KEY=VALUE in the container. Repeatable."),
    insecure: bool = INSECURE,
    ca_file: Path = CA_FILE,
) -> None:
    """Run the image's own GPU self-test (/usr/local/bin/gpuship-check) on this host; its exit code is ours.

    The same as `gpuship run IMAGE --entrypoint /usr/local/bin/gpuship-check`: it reports what the image carries (CUDA libraries, GPU architectures) against the GPUs and driver it finds.
    """
    options = RunOptions(env=parse_env(env), gpus=gpus, runtime=parse_runtime(runtime), verbose=state.verbose > 0)
    with cli_progress() as progress:
        code = check_image(
            _opened(image, insecure, ca_file), tuple(args or ()), options, notify=info, progress=progress
        )
    raise typer.Exit(code)
