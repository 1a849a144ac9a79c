"""``gpuship dev [PATH] [-- CMD...]``: run the project's image with the project mounted, for edits without rebuilds."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from .app import app
from .console import cli_progress, handles_errors, info, when_verbose
from .regopts import CA_FILE, INSECURE, registry_options
from .run import GPUS_HELP, RUNTIME_HELP, container_options


@app.command(
    "dev",
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Example: gpuship dev . -- python -m mypkg --debug   (edit, run again: no rebuild)",
)
@handles_errors
def dev(
    path: Path = typer.Argument(Path("."), help="The project directory (default: the current one)."),
    command: list[str] | None = typer.Argument(
        None,
        help="The command to run, after -- (e.g. -- pytest -x): it replaces the image's Entrypoint and Cmd. "
        "Without it the image runs its own command.",
    ),
    image: str | None = typer.Option(
        None,
        "--image",
        help="Run this prebuilt image instead of building the dev image (oci:DIR, oci-archive:FILE, docker-archive:FILE, "
        "or an image the engine holds); the mounted source then goes first on PYTHONPATH.",
    ),
    base: str | None = typer.Option(
        None, "--base", help="Base profile or registry image; overrides [tool.gpuship] base."
    ),  # noqa: UP007
    extra: list[str] = typer.Option([], "--extra", help="Optional-dependency group(s) of the project to include."),
    runtime: str = typer.Option("auto", "--runtime", help=RUNTIME_HELP),
    gpus: str | None = typer.Option(None, "--gpus", help=GPUS_HELP),
    env: list[str] = typer.Option(
        [], "--env", "-e", help="Set KEY=VALUE in the container (KEY alone: the host's value). Repeatable."
    ),
    volume: list[str] = typer.Option([], "--volume", "-v", help="Also bind-mount HOST:CONTAINER[:ro]. Repeatable."),
    publish: list[str] = typer.Option(
        [],
        "--publish",
        "-p",
        help="Publish [IP:][HOST:]PORT (the built-in runner serves on the host's network). Repeatable.",
    ),
    workdir: str | None = typer.Option(
        None, "--workdir", "-w", help="Working directory (default: the image's, the app directory)."
    ),
    user: str | None = typer.Option(None, "--user", "-u", help="USER[:GROUP] or UID[:GID] (default: the image's)."),
    shm_size: str = typer.Option("1g", "--shm-size", help="Size of /dev/shm."),
    insecure: bool = INSECURE,
    ca_file: Path = CA_FILE,
) -> None:
    """Run the project's image with the project directory mounted over the app directory (/app, or [tool.gpuship] workdir) and the project installed in editable mode: edit, run again, no rebuild.

    gpuship builds the dev image first: the project's image without its project-wheel and app layers, plus a small editable-install layer (a .pth file pointing at /app/src or /app, and launchers for [project.scripts]). Only a change of dependencies or configuration makes a new image; code edits do not. Runs through Docker or Podman when one answers, else the built-in runner (root). The exit code is the command's.
    """
    project = path
    cmd = list(command or ())
    if "--" in sys.argv and not path.exists() and str(path) != ".":
        # `gpuship dev -- python x.py`: no PATH was given, the first word after -- landed in it
        cmd = [str(path), *cmd]
        project = Path(".")
    options = container_options(
        command=tuple(cmd),
        entrypoint=() if cmd else None,  # a dev command is the whole command line, not arguments to the entrypoint
        env=env,
        volume=volume,
        publish=publish,
        workdir=workdir,
        user=user,
        shm_size=shm_size,
        gpus=gpus,
        runtime=runtime,
    )
    from ..dev import dev_image, dev_run_options  # when the command runs, not for --help

    with cli_progress(log_step=when_verbose) as progress:
        progress.step("building the dev image…")
        made = dev_image(
            project,
            image=image,
            base=base,
            extras=tuple(extra),
            progress=progress,
            registry=registry_options(insecure, ca_file),
        )
    if made.digest:
        info(f"dev image {made.digest} ({made.new_layers} new layers); {project.resolve()} mounted at {made.workdir}")
    else:
        info(f"{image}: {project.resolve()} mounted at {made.workdir}, PYTHONPATH={made.source}")
    from ..run import run_image  # when the command runs, not for --help

    with cli_progress() as progress:
        code = run_image(made.image, dev_run_options(made, project, options), notify=info, progress=progress)
    raise typer.Exit(code)
