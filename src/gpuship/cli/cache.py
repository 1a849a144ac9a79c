"""``gpuship cache info|prune``."""

from __future__ import annotations

import typer

from ..cache import Cache
from .app import app
from .console import handles_errors, out

cache_app = typer.Typer(help="Look at or clean the content-addressed cache (GPUSHIP_CACHE overrides its place).")
app.add_typer(cache_app, name="cache")


@cache_app.command("info")
@handles_errors
def info() -> None:
    """Where the cache is and how much it holds."""
    i = Cache().info()
    out.print(
        f"cache   {i.root}\nblobs   {i.blobs} ({i.blob_bytes / 1e6:.1f} MB)\n"
        f"unpacked {i.dirs} (images for the built-in runner, trees; {i.dir_bytes / 1e6:.1f} MB)\nrecords {i.refs}"
    )


@cache_app.command("prune")
@handles_errors
def prune(
    older_than: float = typer.Option(
        None, "--older-than", help="Only blobs and unpacked images unused for this many days."
    ),
) -> None:
    """Delete cached blobs and unpacked images (all of them, or those unused for --older-than days)."""
    removed, freed = Cache().prune(older_than)
    out.print(f"removed {removed} files, freed {freed / 1e6:.1f} MB")
