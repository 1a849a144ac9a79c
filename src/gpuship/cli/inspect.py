"""``gpuship inspect IMAGE``: where an image's bytes go, and the GPU architectures of its CUDA libraries."""

from __future__ import annotations

import json
import platform as _platform
from pathlib import Path

import typer
from rich.table import Table

from ..errors import GpushipError
from ..inspect import ImageReport, inspect_image, write_html
from ..oci.image import Image, Index, Platform
from ..registry.options import RegistryOptions
from .app import app
from .console import RichProgress, err, handles_errors, info, out, state
from .regopts import CA_FILE, INSECURE, registry_options


def human(n: int) -> str:
    v = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(v) < 1000 or unit == "GB":
            return f"{int(v)} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1000
    return f"{v:.1f} TB"


def _read(ref: str, platform: str | None, registry: RegistryOptions) -> Image:
    try:
        from ..transports import read_image  # when the command runs, not for --help
    except ImportError as exc:  # pragma: no cover - the OCI readers arrive in their own change
        raise GpushipError("this gpuship cannot read images yet (gpuship.oci.readers is missing)") from exc
    obj = read_image(ref, platform, registry=registry)
    if isinstance(obj, Index):
        if platform:
            return obj.for_platform(platform)
        host = Platform.parse(_platform.machine())
        matches = [i for i in obj.images if i.platform.architecture == host.architecture]
        return matches[0] if matches else obj.images[0]
    if platform and Platform.parse(platform).architecture != obj.platform.architecture:
        raise GpushipError(f"{ref} is a {obj.platform} image, not {platform}", "leave out --platform")
    return obj


@app.command("inspect")
@handles_errors
def inspect_cmd(
    image: str = typer.Argument(
        ...,
        help="The image: oci:DIR[:TAG], oci-archive:FILE, docker-archive:FILE (what gpuship build writes), or "
        "docker:NAME:TAG / podman:NAME:TAG (an image in the engine), or registry:REF.",
    ),
    platform: str = typer.Option(None, "--platform", help="For a multi-platform image: which one (e.g. linux/arm64)."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole report as JSON on stdout."),
    html: Path = typer.Option(
        None, "--html", help="Also write a self-contained HTML report (treemap and tables) here."
    ),
    top: int = typer.Option(15, "--top", min=1, help="Rows per table (largest files, packages, duplicates)."),
    insecure: bool = INSECURE,
    ca_file: Path = CA_FILE,
) -> None:
    """Show where an image's bytes go: per layer, per Python distribution and Debian package (compressed and
    uncompressed), the largest files, identical files stored more than once, and for every CUDA library the GPU
    architectures it carries (SASS sm_XX and PTX compute_XX, with bytes per architecture).

    Compressed sizes of files and packages are each file's share of its layer's real compressed size.
    """
    img = _read(image, platform, registry_options(insecure, ca_file))
    with RichProgress(err, bars=True, disable=state.quiet or as_json) as progress:
        report = inspect_image(img, top=max(top, 25), progress=progress)
    if html is not None:
        write_html(report, html, title=image)
        info(f"wrote {html}")
    savings = target_savings(img, report)
    if as_json:
        doc = report.to_json()
        doc["target_savings"] = [{"targets": list(t), "bytes": n} for t, n in savings]
        print(json.dumps(doc, indent=2, sort_keys=True))
        return
    render(report, top)
    if savings:
        ways = "; ".join(f"targets = {json.dumps(list(t))}: {human(n)}" for t, n in savings)
        out.print(
            f"built without GPU targets: [tool.gpuship.gpu] targets (prune-archs) would drop the GPU code for "
            f"other GPUs ({ways})",
            markup=False,
            soft_wrap=True,
        )


#: The target sets an image with GPU code but no targets is told about (widely deployed data-center GPUs).
SUGGESTED_TARGETS = (("H100",), ("A100", "L4", "H100"))


def target_savings(img: Image, report: ImageReport) -> list[tuple[tuple[str, ...], int]]:
    """What ``targets = [...]`` would drop from an image with GPU code that was built without targets."""
    libraries = [c.library for c in report.cuda if c.library is not None]
    if not libraries or img.config.labels.get("io.gpuship.targets"):
        return []
    from ..slim.archs import prune_savings  # when the command runs, not for --help

    return [(t, n) for t in SUGGESTED_TARGETS if (n := prune_savings(libraries, t)) > 0]


def render(report: ImageReport, top: int = 15) -> None:
    """The report as Rich tables."""
    out.print(
        f"[bold]{report.platform}[/]  {report.digest}\n"
        f"{human(report.size)} compressed, {human(report.uncompressed_size)} uncompressed, {len(report.layers)} layers, "
        f"{report.final_files} files; stored twice or more: {human(report.duplicate_bytes)}; "
        f"hidden by later layers: {human(report.shadowed_bytes)}"
    )
    t = Table(title="Layers", title_justify="left")
    for c in ("#", "comment", "files", "compressed", "uncompressed"):
        t.add_column(c, justify="right" if c in ("#", "files", "compressed", "uncompressed") else "left")
    for layer in report.layers:
        t.add_row(
            str(layer.index),
            layer.comment or layer.digest[:19],
            str(layer.files),
            human(layer.size),
            human(layer.uncompressed_size),
        )
    out.print(t)
    if report.cuda:
        t = Table(title="CUDA libraries", title_justify="left")
        for c in ("library", "size", "GPU code", "SASS", "PTX"):
            t.add_column(c, justify="right" if c in ("size", "GPU code") else "left", overflow="fold")
        for row in report.cuda[:top]:
            if row.library is None:
                t.add_row("/" + row.path, human(row.size), "?", f"[red]{row.error}[/]", "")
                continue
            lib = row.library
            t.add_row(
                "/" + row.path,
                human(row.size),
                human(lib.fatbin_bytes),
                " ".join(lib.sass),
                " ".join(lib.ptx) + (f" (PTX ISA {', '.join(lib.ptx_versions)})" if lib.ptx else ""),
            )
        out.print(t)
    if report.models:
        t = Table(title=f"Models ({len(report.models)})", title_justify="left")
        for c in ("model", "files", "size", "compressed", "layers"):
            t.add_column(c, justify="left" if c in ("model", "layers") else "right", overflow="fold")
        for m in report.models[:top]:
            t.add_row(m.name, str(m.files), human(m.size), human(m.compressed), ", ".join(map(str, m.layers)))
        out.print(t)
    for title, rows in (("Python distributions", report.python), ("Debian packages", report.debian)):
        if not rows:
            continue
        t = Table(title=f"{title} ({len(rows)})", title_justify="left")
        for c in ("name", "version", "files", "size", "compressed"):
            t.add_column(c, justify="right" if c in ("files", "size", "compressed") else "left")
        for p in rows[:top]:
            t.add_row(p.name, p.version, str(p.files), human(p.size), human(p.compressed))
        out.print(t)
    t = Table(title="Largest files", title_justify="left")
    for c in ("path", "layer", "size", "compressed"):
        t.add_column(c, justify="left" if c == "path" else "right", overflow="fold")
    for f in report.largest[:top]:
        t.add_row("/" + f.path, str(f.layer), human(f.size), human(f.compressed))
    out.print(t)
    if report.duplicates:
        t = Table(title=f"Stored more than once ({len(report.duplicates)})", title_justify="left")
        for c in ("copies", "size", "wasted"):
            t.add_column(c, justify="left" if c == "copies" else "right", overflow="fold")
        for d in report.duplicates[:top]:
            t.add_row("\n".join(f"/{p} (layer {layer})" for layer, p in d.copies), human(d.size), human(d.wasted))
        out.print(t)
