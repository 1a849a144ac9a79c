"""``gpuship dockerfile``: write the build plan as a multi-stage Dockerfile (for teams that build with Docker)."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import typer

from ..errors import GpushipError
from .app import app
from .console import cli_progress, err, handles_errors, info, out, state, when_verbose
from .regopts import CA_FILE, INSECURE, registry_options

HELP = (
    "Write a multi-stage Dockerfile equivalent to `gpuship build`'s plan, and its .dockerignore.\n\n"
    "Files written into PATH (the build context): the Dockerfile; .dockerignore (gpuship's app-file rules; a "
    "project's own .dockerignore lines are kept); requirements.lock.txt (gpuship.lock with hashes, installed with "
    "`uv pip install --require-hashes --no-deps`); .gpuship/docker/ (gpuship's own layer files and, with "
    "--ca-bundle, a CA bundle that only the build stages trust).\n\n"
    "The Dockerfile's base is a build argument (BASE, default debian:<codename>-slim). Where no registry can be "
    "reached, --import-base TAG makes an equivalent image from the Debian mirror (debootstrap, needs root) and "
    "loads it into the Docker Engine; then build with --build-arg BASE=TAG."
)


@app.command("dockerfile", help=HELP)
@handles_errors
def dockerfile(
    path: Path = typer.Argument(Path("."), help="The project directory (it becomes the Docker build context)."),
    file: str = typer.Option("Dockerfile", "--file", "-f", help="Name of the Dockerfile written in PATH."),
    platform: list[str] = typer.Option(
        None,
        "--platform",
        help="Platform(s) whose locked files requirements.lock.txt lists, e.g. linux/amd64,linux/arm64. Default: as gpuship build.",
    ),
    extra: list[str] = typer.Option(None, "--extra", help="Optional-dependency group(s) of the project to include."),
    base: str = typer.Option(
        None, "--base", help="Base profile (debian-bookworm, debian-trixie); overrides the project's configured base."
    ),
    variant: str = typer.Option(
        "pip",
        "--variant",
        help="pip (default): PyPI wheels from gpuship.lock. micromamba: an environment.yml project's conda packages, "
        "created by micromamba (needs the conda channels and the micromamba image at build time).",
    ),
    ca_bundle: Path = typer.Option(
        None,
        "--ca-bundle",
        help="CA bundle (PEM) the build stages trust for outbound TLS, e.g. a proxy's. Default: $SSL_CERT_FILE when set.",
    ),
    no_ca_bundle: bool = typer.Option(False, "--no-ca-bundle", help="Do not put a CA bundle into the build context."),
    no_libdeps: bool = typer.Option(
        False,
        "--no-libdeps",
        help="Skip find-libdeps (which installs the environment into gpuship's cache to scan its libraries).",
    ),
    locked: bool = typer.Option(False, "--locked", help="Refuse to change gpuship.lock (for CI): fail if it is stale."),
    force: bool = typer.Option(
        False, "--force", help="Replace a Dockerfile or requirements.lock.txt that gpuship did not write."
    ),
    import_base: str = typer.Option(
        None,
        "--import-base",
        metavar="TAG",
        help="Also make a debian:<codename>-slim equivalent from the Debian mirror and load it into Docker as TAG (kept if it exists).",
    ),
    insecure: bool = INSECURE,
    ca_file: Path = CA_FILE,
) -> None:
    from ..dockerfile import export_dockerfile, import_debian_base  # when the command runs, not for --help
    from ..dockerfile.spec import VARIANTS  # when the command runs, not for --help

    if variant not in VARIANTS:
        raise GpushipError(f"--variant must be pip or micromamba, not {variant!r}")

    ca: Path | None = None
    if not no_ca_bundle:
        ca = ca_bundle or (Path(os.environ["SSL_CERT_FILE"]) if os.environ.get("SSL_CERT_FILE") else None)
    platforms = tuple(p.strip() for item in (platform or []) for p in item.split(",") if p.strip())

    with cli_progress(log_step=when_verbose) as progress:
        progress.step("planning the Dockerfile…")
        result = export_dockerfile(
            path,
            dockerfile_name=file,
            platforms=platforms,
            extras=tuple(extra or ()),
            base=base,
            variant=VARIANTS[variant],
            libdeps=not no_libdeps,
            locked=locked,
            ca_bundle=ca,
            force=force,
            progress=progress,
            registry=registry_options(insecure, ca_file),
        )
    spec = result.spec
    for note in spec.notes:
        info(f"[yellow]note:[/] {note}")
    if not state.quiet:
        for p in result.written:
            err.print(f"wrote {p}", soft_wrap=True, markup=False, highlight=False)
    if import_base:
        codename = spec.codename
        with cli_progress(log_step=when_verbose) as progress:
            progress.step(f"making {import_base} (debootstrap {codename})…")
            import_debian_base(import_base, codename, progress=progress)
        info(f"base image {import_base} is in the Docker Engine")
    info("build it with:")
    out.print(shlex.join(result.build_command(base=import_base)), soft_wrap=True, markup=False)
