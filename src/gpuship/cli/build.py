"""``gpuship build``: a project in, an image out."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from ..build import BuildResult, layer_table_rows
from ..build import build as run_build
from ..oci.media import parse_compression
from ..plan import BuildOptions
from ..rebuild import human_size
from .app import app
from .console import cli_progress, err, handles_errors, info, out, state
from .regopts import CA_FILE, INSECURE, registry_options

OUTPUT_HELP = (
    "Where the image goes (comma-separated for several): oci:DIR, oci-archive:FILE, docker-archive:FILE, "
    "docker:NAME:TAG (load into the Docker Engine), registry:REF (push). Default: oci-archive:<name>.oci.tar "
    "in the current directory."
)


@app.command()
@handles_errors
def build(
    path: Path = typer.Argument(
        Path("."), help="The project directory (pyproject.toml, requirements*.txt or environment.yml)."
    ),
    output: str = typer.Option(None, "--output", "-o", help=OUTPUT_HELP),
    platform: list[str] = typer.Option(
        None,
        "--platform",
        help="Target platform(s), e.g. linux/amd64,linux/arm64 (no emulation needed). Default: [tool.gpuship] platforms, else linux/amd64.",
    ),
    extra: list[str] = typer.Option(None, "--extra", help="Optional-dependency group(s) of the project to include."),
    locked: bool = typer.Option(False, "--locked", help="Refuse to change gpuship.lock (for CI): fail if it is stale."),
    report: Path = typer.Option(
        None, "--report", help="Write the full build report (JSON) here, and an SPDX 2.3 SBOM beside it."
    ),
    compression: str = typer.Option(
        None,
        "--compression",
        help="Compression of the layers where bytes travel (OCI layouts, archives, registries): gzip (default) or zstd. A docker: output gets plain layers, which every engine takes.",
    ),
    tag: str = typer.Option(None, "--tag", "-t", help="Image name:tag (default: the project's name:version)."),
    base: str = typer.Option(
        None,
        "--base",
        help="Base profile (debian-bookworm, debian-trixie) or registry image; overrides [tool.gpuship] base.",
    ),
    insecure: bool = INSECURE,
    ca_file: Path = CA_FILE,
    cache: str = typer.Option(
        None,
        "--cache",
        help="Shared build cache in a registry: registry:HOST/NAME:TAG (or none). Layers it knows are not built "
        "again; the build writes it back. Default: GPUSHIP_BUILD_CACHE, else [tool.gpuship] cache (docs/ci.md).",
    ),
    cache_mode: str = typer.Option(
        None,
        "--cache-mode",
        help="read, write or readwrite (default; GPUSHIP_BUILD_CACHE_MODE): whether the build reads the build "
        "cache, writes it, or both.",
    ),
    no_cache: bool = typer.Option(
        False,
        "--no-cache",
        help="Build every layer again: reuse none from this machine or the build cache (downloads verified by "
        "hash are kept); the build cache is still written.",
    ),
) -> None:
    """Build a minimal, reproducible image from a Python project, without a Docker daemon."""
    platforms = tuple(p.strip() for item in (platform or []) for p in item.split(",") if p.strip())
    opts = BuildOptions(
        project_dir=path,
        platforms=platforms,
        output=output,
        extras=tuple(extra or ()),
        locked=locked,
        report=report,
        compression=parse_compression(compression) if compression is not None else None,
        tag=tag,
        base=base,
        registry=registry_options(insecure, ca_file),
        cache=cache,
        cache_mode=cache_mode,
        no_cache=no_cache,
    )
    if opts.output is None:
        name = path.resolve().name
        opts = BuildOptions(**{**opts.__dict__, "output": f"oci-archive:{name}.oci.tar"})
    # per-platform steps ("[linux/amd64] …") are logged with -v only
    with cli_progress(log_step=lambda msg: bool(state.verbose) or not msg.startswith("[")) as progress:
        result = run_build(opts, progress=progress)
    if not state.quiet:
        print_layers(result)
        for w in result.warnings:
            info(f"[yellow]warning:[/] {escape(w)}")
        info(f"built in {result.seconds:.1f}s -> {escape(', '.join(result.outputs) or '(no output)')}")
    out.print(result.digest)


def print_layers(result: BuildResult) -> None:
    """The layer table of each platform, made to be read in an 80-column CI log: whole layer names, digests and
    sizes; only the contents column is shortened; a total per platform."""
    names = ", ".join(result.outputs) or result.plan.tag
    for p in result.platforms:
        err.print(f"{p.platform}  {p.image.digest[:19]}  {escape(names)}", highlight=False)
        rows = layer_table_rows(p)
        table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold", expand=False)
        for col in ("layer", "digest", "size", "unpacked", ""):
            table.add_column(col, no_wrap=True, justify="right" if col in ("size", "unpacked") else "left")
        fixed = sum(
            max(len(col), *(len(r[i]) for r in rows))
            for i, col in enumerate(("layer", "digest", "size", "unpacked", ""))
        )
        table.add_column("contents", no_wrap=True, overflow="ellipsis", max_width=max(12, err.width - fixed - 2 * 5))
        for row in rows:
            table.add_row(*(escape(c) for c in row))
        new = sum(1 for r in p.rows if not r.reused)
        table.add_row(
            "total",
            f"{len(p.rows)} layers",
            human_size(sum(r.size for r in p.rows)),
            human_size(sum(r.uncompressed_size for r in p.rows)),
            f"{new} new",
            "",
            style="bold",
        )
        err.print(table)
