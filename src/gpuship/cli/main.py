"""Entry point: the Typer app and its global options. Verb groups register themselves here."""

from __future__ import annotations

import typer

from .. import __version__
from .console import state

app = typer.Typer(
    name="gpuship",
    help="Ship Python GPU workloads as minimal, reproducible OCI images, without a Docker daemon.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help text is plain: Rich markup ate "[tool.gpuship]"
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"gpuship {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More detail; -v shows tracebacks on errors."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only errors and the final result."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    state.verbose = verbose
    state.quiet = quiet
    _hold_cache(ctx)


def _hold_cache(ctx: typer.Context) -> None:
    """Every command holds the cache's in-use lock while it runs, so `gpuship cache prune` elsewhere never
    deletes what it needs (and cleans what killed commands left behind in its tmp/)."""
    from ..cache import Cache
    from ..errors import GpushipError

    try:
        ctx.with_resource(Cache().in_use())
    except (GpushipError, OSError):
        pass  # an unusable cache is reported by the command that needs it


def _register() -> None:
    """Import each verb module; each adds its commands to ``app``. A missing module is skipped."""
    import importlib

    for name in (
        "build",
        "dockerfile",
        "run",
        "dev",
        "gpu",
        "registry",
        "deploy",
        "inspect",
        "slim",
        "debian",
        "image",
        "cache",
    ):
        try:
            importlib.import_module(f"gpuship.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"gpuship.cli.{name}":
                raise


_register()


def main() -> None:
    app()
