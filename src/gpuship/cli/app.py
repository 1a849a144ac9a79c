"""The Typer app and its global options. Verb modules add their commands to it when imported.

``gpuship VERB ...`` imports only the module of VERB (:data:`COMMANDS`): a rebuild does not pay for importing
every other command's libraries. ``gpuship --help`` (or an unknown verb) imports them all, as
:mod:`gpuship.cli.main` does for code that uses ``app`` directly.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable, Sequence

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

#: The verb modules, in the order ``--help`` lists their commands.
MODULES = (
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
)
#: Which module adds each top-level command or group (tests/test_cli_lazy.py checks it against the modules).
COMMANDS = {
    "build": "build",
    "dockerfile": "dockerfile",
    "run": "run",
    "check": "run",
    "dev": "dev",
    "explain": "gpu",
    "doctor": "gpu",
    "login": "registry",
    "logout": "registry",
    "push": "registry",
    "export": "deploy",
    "deploy": "deploy",
    "inspect": "inspect",
    "slim": "slim",
    "libdeps": "debian",
    "debian": "debian",
    "image": "image",
    "cache": "cache",
}


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
    from ..cache import Cache  # when the command runs, not for --help
    from ..errors import GpushipError  # when the command runs, not for --help

    try:
        ctx.with_resource(Cache().in_use())
    except (GpushipError, OSError):
        pass  # an unusable cache is reported by the command that needs it


def register(names: Iterable[str] = MODULES) -> None:
    """Import verb modules; each adds its commands to ``app``. A missing module is skipped."""
    for name in names:
        try:
            importlib.import_module(f"gpuship.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"gpuship.cli.{name}":
                raise


def verb_module(argv: Sequence[str]) -> str | None:
    """The module of the verb ``argv`` names (the first word that is not a global option), if it is known."""
    for arg in argv:
        if not arg.startswith("-"):
            return COMMANDS.get(arg)
    return None


def main() -> None:
    module = verb_module(sys.argv[1:])
    register([module] if module else MODULES)
    app()
