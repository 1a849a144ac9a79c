"""``gpuship debian sources|packages|base`` and ``gpuship libdeps PATH``: the Debian base on its own."""

from __future__ import annotations

import platform as host_platform
import tomllib
from pathlib import Path
from typing import Any  # Any: [tool.gpuship.debian] as read from TOML

import typer
from rich.table import Table

from ..cache import Cache
from ..errors import ConfigError
from ..oci.image import Platform
from .app import app
from .console import RichProgress, cli_progress, handles_errors, info, out

debian_app = typer.Typer(
    help="The Debian base gpuship assembles from .deb packages (no base image, no daemon, no maintainer scripts).",
    no_args_is_help=True,
)
app.add_typer(debian_app, name="debian")

PROFILE_HELP = "Base profile: debian-bookworm (Python 3.11) or debian-trixie (Python 3.13)."
PLATFORM_HELP = "Target platform: linux/amd64 or linux/arm64 (default: this machine's)."
MIRROR_HELP = (
    "Debian archive URI to use instead of the host's apt sources (else GPUSHIP_DEBIAN_MIRROR, else "
    "[tool.gpuship.debian] mirror in ./pyproject.toml)."
)
SECURITY_HELP = "Debian security archive URI ('none' for no security suite); default: the host's apt sources."
PACKAGE_HELP = "Extra Debian package to install (repeatable), like system-packages in [tool.gpuship]."


def _default_platform() -> str:
    m = host_platform.machine().lower()
    return "linux/arm64" if m in ("aarch64", "arm64") else "linux/amd64"


def _config_debian(project: Path) -> dict[str, Any]:
    """``[tool.gpuship.debian]`` of ``project/pyproject.toml`` (empty when there is none)."""
    py = project / "pyproject.toml"
    if not py.is_file():
        return {}
    try:
        data = tomllib.loads(py.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{py} is not valid TOML: {exc}", "fix the file") from exc
    return dict(((data.get("tool") or {}).get("gpuship") or {}).get("debian") or {})


def _mirrors(mirror: str | None, security: str | None, project: Path) -> tuple[str | None, str | None]:
    import os  # when the command runs, not for --help

    cfg = _config_debian(project)
    m = mirror or os.environ.get("GPUSHIP_DEBIAN_MIRROR") or cfg.get("mirror") or None
    s = (
        security
        if security is not None
        else os.environ.get("GPUSHIP_DEBIAN_SECURITY_MIRROR", cfg.get("security-mirror"))
    )
    return m, s


def _progress() -> RichProgress:
    """Every step logged (these commands are about the steps)."""
    return cli_progress(log_step=lambda msg: True)


@debian_app.command("sources")
@handles_errors
def sources(
    profile: str = typer.Option("debian-bookworm", "--profile", help=PROFILE_HELP),
    mirror: str = typer.Option(None, "--mirror", help=MIRROR_HELP),
    security_mirror: str = typer.Option(None, "--security-mirror", help=SECURITY_HELP),
) -> None:
    """Show the suites a profile is built from (read from the host's apt sources or the configured mirror)."""
    from ..sources.debian import get_profile  # when the command runs, not for --help
    from ..sources.debian.aptsources import suites_for  # when the command runs, not for --help

    prof = get_profile(profile)
    m, s = _mirrors(mirror, security_mirror, Path("."))
    for suite in suites_for(prof.codename, mirror=m, security_mirror=s):
        out.print(f"{suite.uri} {suite.name} {' '.join(suite.components)}")


@debian_app.command("packages")
@handles_errors
def packages(
    profile: str = typer.Option("debian-bookworm", "--profile", help=PROFILE_HELP),
    platform: str = typer.Option(None, "--platform", help=PLATFORM_HELP),
    package: list[str] = typer.Option(None, "--package", "-p", help=PACKAGE_HELP),
    mirror: str = typer.Option(None, "--mirror", help=MIRROR_HELP),
    security_mirror: str = typer.Option(None, "--security-mirror", help=SECURITY_HELP),
) -> None:
    """Resolve the base's package set (and extra packages) and print it, without downloading any .deb."""
    from ..sources.debian import get_profile  # when the command runs, not for --help
    from ..sources.debian.aptsources import suites_for  # when the command runs, not for --help
    from ..sources.debian.base import resolve_profile  # when the command runs, not for --help
    from ..sources.debian.repository import Repository  # when the command runs, not for --help

    prof = get_profile(profile)
    plat = Platform.parse(platform or _default_platform())
    m, s = _mirrors(mirror, security_mirror, Path("."))
    with _progress() as progress:
        repo = Repository(suites_for(prof.codename, mirror=m, security_mirror=s), Cache(), progress=progress)
        try:
            res = resolve_profile(prof, repo.index(plat.architecture), tuple(package or ()))
        finally:
            repo.close()
    table = Table("layer", "package", "version", "suite", "size", "why", box=None)
    for layer, r in res.items():
        for c in r.packages:
            table.add_row(layer, c.name, c.version, c.suite, f"{c.size / 1e6:.2f} MB", r.why.get(c.name, ""))
    out.print(table)
    for r in res.values():
        for dep, by in r.skipped:
            info(f"not installed (maintainer scripts only): {dep}, for {by}")


@debian_app.command("base")
@handles_errors
def base(
    profile: str = typer.Option("debian-bookworm", "--profile", help=PROFILE_HELP),
    platform: str = typer.Option(None, "--platform", help=PLATFORM_HELP),
    package: list[str] = typer.Option(None, "--package", "-p", help=PACKAGE_HELP),
    mirror: str = typer.Option(None, "--mirror", help=MIRROR_HELP),
    security_mirror: str = typer.Option(None, "--security-mirror", help=SECURITY_HELP),
    output: str = typer.Option(
        None,
        "--output",
        "-o",
        help="Also write the bare base image: oci:DIR, oci-archive:FILE, docker-archive:FILE or docker:NAME:TAG.",
    ),
    report: Path = typer.Option(None, "--report", help="Write packages, layers and the slimming report (JSON) here."),
) -> None:
    """Build the Debian base layers into the cache and show them (packages, layers, what slimming dropped)."""
    from ..oci import append_layers, empty_image  # when the command runs, not for --help
    from ..sources.debian import build_base  # when the command runs, not for --help

    plat = Platform.parse(platform or _default_platform())
    m, s = _mirrors(mirror, security_mirror, Path("."))
    with _progress() as progress:
        b = build_base(profile, plat, tuple(package or ()), Cache(), m, progress, security_mirror=s)
    table = Table("layer", "digest", "compressed", "uncompressed", "", box=None)
    for layer in b.layers:
        table.add_row(
            layer.comment.split(":")[0],
            layer.digest[7:19],
            f"{layer.size / 1e6:.1f} MB",
            f"{layer.uncompressed_size / 1e6:.1f} MB",
            "cached" if layer.reused else "new",
        )
    out.print(table)
    out.print(
        f"{len(b.packages)} packages, {sum(layer.size for layer in b.layers) / 1e6:.1f} MB compressed; "
        f"Python {b.python.version} at {b.python.executable}"
    )
    out.print(b.dropped.summary())
    for dep, by in b.skipped:
        info(f"not installed (maintainer scripts only): {dep}, for {by}")
    if output:
        from ..transports import write_output  # when the command runs, not for --help

        image = append_layers(empty_image(b.platform, b.config), b.layers, created_by=f"gpuship: {b.profile} base")
        out.print(write_output(image, output))
    if report:
        data = {
            "profile": b.profile,
            "platform": str(b.platform),
            "python": b.python.__dict__,
            "packages": [list(p) for p in b.packages],
            "why": dict(b.why),
            "layers": [layer.to_record() for layer in b.layers],
            "dropped": b.dropped.to_json(),
            "skipped": [list(s) for s in b.skipped],
            "suites": [str(s) for s in b.suites],
        }
        from ..oci.layout import write_json  # when the command runs, not for --help

        write_json(report, data)


@app.command("libdeps")
@handles_errors
def libdeps(
    path: Path = typer.Argument(
        ..., help="A folder to scan: a virtual environment, site-packages or any installed tree."
    ),
    prefix: str = typer.Option(
        None,
        "--prefix",
        help="Where PATH lives in the image (default: PATH's own absolute path), for $ORIGIN and RPATH.",
    ),
    profile: str = typer.Option("debian-bookworm", "--profile", help=PROFILE_HELP),
    platform: str = typer.Option(None, "--platform", help=PLATFORM_HELP),
    ignore: list[str] = typer.Option(
        None, "--ignore", help="Soname pattern provided at run time (repeatable), e.g. 'libfoo.so.*'."
    ),
    mirror: str = typer.Option(None, "--mirror", help=MIRROR_HELP),
    explain: bool = typer.Option(False, "--explain", help="Print the soname and the files that need each package."),
) -> None:
    """Print the Debian packages the shared libraries under PATH need on top of the base (find-libdeps).

    One package per line on stdout, for `system-packages` or `xargs`. Sonames the NVIDIA driver provides at
    run time (libcuda.so.1, libnvidia-*) are never listed. A soname no package ships is an error naming the file.
    """
    from ..sources.debian import build_base, libdeps_for_tree  # when the command runs, not for --help

    plat = Platform.parse(platform or _default_platform())
    m, s = _mirrors(mirror, None, Path("."))
    cache = Cache()
    with _progress() as progress:
        b = build_base(profile, plat, (), cache, m, progress, security_mirror=s)
        deps = libdeps_for_tree(path, b, cache, prefix=prefix, ignore=tuple(ignore or ()), progress=progress)
    if explain:
        for d in deps:
            out.print(f"{d.package}\t{d.soname}\t{', '.join(d.needed_by)}", soft_wrap=True)
        return
    for name in sorted({d.package for d in deps}):
        out.print(name)
