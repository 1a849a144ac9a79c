"""``gpuship login | logout | push``: the registry verbs (a thin layer over :mod:`gpuship.registry`)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from ..cache import Cache
from ..errors import GpushipError
from .app import app
from .console import RichProgress, err, handles_errors, info, out, state
from .regopts import CA_FILE, INSECURE, registry_options


@app.command("login")
@handles_errors
def login(
    registry: str = typer.Argument(..., help="Registry host, e.g. ghcr.io, nvcr.io, registry.example.com:5000."),
    username: str = typer.Option(..., "--username", "-u", help="User name (nvcr.io: the literal $oauthtoken)."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password or token from stdin."),
    insecure: bool = INSECURE,
    ca_file: Path = CA_FILE,
) -> None:
    """Check credentials against REGISTRY and store them where docker login would: in Docker's config.json (mode 0600), or in the credential helper it names (credsStore / credHelpers).

    For nvcr.io the user name is the literal $oauthtoken and the password an NGC API key.
    """
    from ..registry import limits_for  # when the command runs, not for --help
    from ..registry import login as do_login  # when the command runs, not for --help

    if password_stdin:
        password = sys.stdin.read().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True)
    if not password:
        raise GpushipError("no password given", "pipe it in with --password-stdin")
    row = limits_for(registry)
    if row is not None and row.note and registry.startswith("nvcr.io") and username != "$oauthtoken":
        info(f"note: {row.name}: {row.note}")
    where = do_login(registry, username, password, insecure=insecure, ca_file=ca_file)
    out.print(f"Login Succeeded ({username} at {registry}, stored in {where})")


@app.command("logout")
@handles_errors
def logout(registry: str = typer.Argument(..., help="Registry host to forget the login of.")) -> None:
    """Remove REGISTRY's stored login (config.json auths and the credential helper)."""
    from ..registry import erase_credentials  # when the command runs, not for --help

    if erase_credentials(registry):
        out.print(f"Removed login credentials for {registry}")
    else:
        out.print(f"Not logged in to {registry}")


@app.command("push")
@handles_errors
def push(
    image: str = typer.Argument(
        ...,
        help="The image to push: oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE, docker:NAME:TAG, "
        "registry:REF, or a path.",
    ),
    ref: str = typer.Argument(..., help="Where to: [registry/]name[:tag][@sha256:digest], e.g. ghcr.io/org/app:1.0."),
    insecure: bool = INSECURE,
    ca_file: Path = CA_FILE,
    jobs: int = typer.Option(4, "--jobs", "-j", min=1, max=32, help="Blobs uploaded at once."),
    chunk_size: int = typer.Option(
        32, "--chunk-size", min=1, help="MiB per upload request; larger blobs go up in resumable chunks."
    ),
    mount_from: list[str] = typer.Option(
        [], "--mount-from", help="Another repository of the same registry to mount existing layers from (repeatable)."
    ),
) -> None:
    """Push IMAGE (an image or a multi-platform index) to a registry, as REF.

    Blobs the registry already has are skipped, blobs it holds in another repository are mounted, the rest are uploaded (--jobs at a time; an upload cut off by a dropped connection resumes where the registry got to). Manifests go last, so a failed push leaves no tag behind.

    Credentials come from gpuship login or docker login (Docker's config.json and its credential helpers).
    """
    from ..registry import Registry  # when the command runs, not for --help
    from ..transports import read_image  # when the command runs, not for --help

    options = registry_options(insecure, ca_file, jobs=jobs, chunk_size=chunk_size << 20)
    cache = Cache()
    obj = read_image(image, cache=cache, registry=options)  # IMAGE may be registry:REF too

    def warn(msg: str) -> None:
        err.print(f"[yellow]warning:[/] {msg}", markup=True, highlight=False)

    with (
        Registry(options, cache) as registry,
        RichProgress(err, bars=True, disable=state.quiet or not err.is_terminal) as progress,
    ):
        result = registry.push(obj, ref, progress=progress, mount_from=mount_from, on_warning=warn)
    out.print(result.summary())
