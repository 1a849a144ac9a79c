"""``gpuship image convert|ls``: move an image between formats, and look at one."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ..oci.image import Image, Index, with_compression
from ..oci.media import parse_compression
from ..oci.parts import manifest_path
from ..oci.sinks import write_split
from ..run.options import parse_size
from ..transports import read_image, sink_schemes, write_output
from .app import app
from .console import cli_progress, err, handles_errors, out, state
from .regopts import CA_FILE, INSECURE, registry_options

image_app = typer.Typer(
    help="Convert images between OCI layout, oci-archive, docker-archive and the Docker Engine; list what an image holds.",
    no_args_is_help=True,
)
app.add_typer(image_app, name="image")

SOURCE_HELP = (
    "The image to read: oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:NAME:TAG] "
    "(gpuship's, or any docker save output), docker:NAME:TAG / podman:NAME:TAG (an image in the engine), or a plain "
    "path (the format is recognised)."
)
COMPRESSION_HELP = (
    "Re-compress every layer as gzip or zstd (default: keep each layer as it is). Note: Debian's Docker 20.10 "
    "refuses zstd layers in `docker load`; gpuship's docker-archive and docker: outputs therefore also carry an "
    "uncompressed copy of each zstd layer, so they still load (at the cost of a bigger archive)."
)


def _status(msg: str):  # noqa: ANN202 - a Rich status or a no-op context
    import contextlib  # when the command runs, not for --help

    return contextlib.nullcontext() if state.quiet else err.status(msg)


@image_app.command("convert")
@handles_errors
def convert(
    source: str = typer.Argument(..., help=SOURCE_HELP),
    dest: str = typer.Argument(
        ...,
        help="Where to write it: oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:NAME:TAG], "
        "docker:NAME[:TAG] (load into the Docker Engine), or registry:REF where the registry support is installed.",
    ),
    platform: str = typer.Option(
        None, "--platform", help="Keep only this platform of a multi-platform image (e.g. linux/arm64)."
    ),
    compression: str = typer.Option(None, "--compression", help=COMPRESSION_HELP),
    split: str = typer.Option(
        None,
        "--split",
        metavar="SIZE",
        help="Cut the archive (oci-archive: or docker-archive: DEST) into numbered parts FILE.000, FILE.001, ... of "
        "at most SIZE (e.g. 60m, 1g; binary units) and write FILE.parts.json with each part's size and sha256, "
        "for hosts an image cannot be pulled to. Every gpuship command reads FILE.parts.json as the image, "
        "after checking every part; `cat FILE.[0-9]* > FILE` joins them without gpuship (the manifest's digest "
        "is the joined file's sha256).",
    ),
    insecure: bool = INSECURE,
    ca_file: Path = CA_FILE,
) -> None:
    """Read SOURCE and write it to DEST. Digests are kept unless --platform or --compression changes the image."""
    wanted = parse_compression(compression) if compression is not None else None
    part_size = parse_size(split) if split is not None else None
    registry = registry_options(insecure, ca_file)
    with cli_progress(bars=True) as progress:
        progress.step(f"reading {source}")
        obj = read_image(source, platform, registry=registry)
        if wanted:
            progress.step(f"compressing layers with {wanted}")
            obj = with_compression(obj, wanted)
        progress.step(f"writing {dest}")
        if part_size is None:
            line = write_output(obj, dest, platform=platform, progress=progress, registry=registry)
        else:
            parts = write_split(obj, dest, part_size, platform=platform)
            first, last = parts.parts[0].name, parts.parts[-1].name
            line = (
                f"{parts.format} of {parts.size / 1e6:.1f} MB in {len(parts.parts)} part"
                + ("s" if len(parts.parts) > 1 else "")
                + f" ({first}{' .. ' + last if len(parts.parts) > 1 else ''}), "
                f"read as {manifest_path(_archive_path(dest))}"
            )
    out.print(f"{line}  {obj.digest}", soft_wrap=True)


def _archive_path(dest: str) -> str:
    return dest.partition(":")[2].partition(":")[0]


def _layers_table(img: Image) -> Table:
    table = Table(box=None, pad_edge=False)
    for col in ("#", "digest", "size", "compression", "uncompressed"):
        table.add_column(col, justify="right" if col in ("#", "size", "uncompressed") else "left")
    for i, layer in enumerate(img.layers, 1):
        table.add_row(str(i), layer.digest[:19], _mb(layer.size), layer.compression, _mb(layer.uncompressed_size))
    return table


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


@image_app.command("ls")
@handles_errors
def ls(
    source: str = typer.Argument(..., help=SOURCE_HELP),
    insecure: bool = INSECURE,
    ca_file: Path = CA_FILE,
) -> None:
    """Show an image's digest, platforms, entrypoint and layers (reading it checks every blob)."""
    with _status(f"reading {source}"):
        obj = read_image(source, registry=registry_options(insecure, ca_file))
    images = obj.images if isinstance(obj, Index) else (obj,)
    if isinstance(obj, Index):
        out.print(f"index   {obj.digest}  ({obj.family.value}, {len(images)} platforms)", soft_wrap=True)
    for img in images:
        cfg = img.config
        out.print(f"image   {img.digest}  {img.platform}  ({img.family.value})", soft_wrap=True)
        out.print(f"config  {img.config_descriptor()['digest']}", soft_wrap=True)
        argv = list(cfg.entrypoint) + list(cfg.cmd)
        if argv:
            out.print(f"runs    {' '.join(argv)}", soft_wrap=True)
        out.print(f"layers  {len(img.layers)}, {_mb(img.size)} compressed", soft_wrap=True)
        out.print(_layers_table(img))


def output_schemes() -> str:
    """The writable targets, for help texts elsewhere."""
    return ", ".join(sink_schemes())
