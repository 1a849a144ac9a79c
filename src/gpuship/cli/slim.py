"""``gpuship slim IMAGE [-- CMD...]``: keep only what the workload uses, and prove the result still runs it."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.table import Table

from ..cache import Cache
from ..errors import GpushipError
from ..run.options import BUILTIN_RUNTIMES, parse_env, parse_runtime
from .app import app
from .console import cli_progress, err, handles_errors, info, out, state, when_verbose
from .regopts import CA_FILE, INSECURE, registry_options


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


@app.command(
    "slim",
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=(
        "Examples: gpuship slim oci-archive:app.tar -o oci-archive:app-slim.tar  |  "
        "gpuship slim oci:out/app --report slim.json -o docker:app:slim -- python main.py --smoke  |  "
        "gpuship slim oci-archive:server.tar --http /status -e PORT=8099 -o oci-archive:server-slim.tar"
    ),
)
@handles_errors
def slim_cmd(
    image: str = typer.Argument(
        ...,
        help="The image: oci:DIR[:TAG], oci-archive:FILE, docker-archive:FILE, or any other reference gpuship reads.",
    ),
    command: list[str] | None = typer.Argument(
        None,
        help="The workload, after --: it replaces the image's Cmd (the Entrypoint stays, as with docker run). "
        "Default: the image's own command. It must finish (or, with --http, serve).",
    ),
    output: str | None = typer.Option(
        None,
        "--output",
        "-o",
        help="Where to write the slimmed image: oci:DIR, oci-archive:FILE, docker-archive:FILE, docker:NAME "
        "(written only once the slimmed image has passed the workload).",
    ),
    tag: str | None = typer.Option(None, "--tag", "-t", help="Name[:tag] for targets that carry one."),
    report: Path | None = typer.Option(
        None,
        "--report",
        help="Write the report (bytes removed per layer and per package, what each rule kept) as JSON.",
    ),
    entrypoint: str | None = typer.Option(
        None, "--entrypoint", help='Replace the image\'s Entrypoint for the workload ("" clears it).'
    ),
    env: list[str] = typer.Option([], "--env", "-e", help="Set KEY=VALUE for the workload (both runs). Repeatable."),
    http: str | None = typer.Option(
        None,
        "--http",
        help="The workload is a server: once it answers GET PATH (e.g. /status) with a status below 500, it is "
        "stopped (SIGTERM). The slimmed image must answer with the same status.",
    ),
    port: int | None = typer.Option(
        None,
        "--port",
        help="Port for --http (default: -e PORT, the image's PORT, its first exposed port, 8080). "
        "The built-in runner shares the host's network.",
    ),
    keep: list[str] = typer.Option(
        [],
        "--keep",
        help="Also keep these image paths (globs: * within a name, ** across folders; a folder is kept whole), "
        "e.g. --keep '/usr/share/zoneinfo/**'. Repeatable.",
    ),
    check_output: bool = typer.Option(
        False, "--check-output", help="Also require the same stdout (or, with --http, the same response body)."
    ),
    allow_failure: bool = typer.Option(
        False,
        "--allow-failure",
        help="Slim even when the workload exits non-zero (the slimmed image must exit the same).",
    ),
    timeout: float = typer.Option(600.0, "--timeout", min=1, help="Seconds one run of the workload may take."),
    runtime: str = typer.Option(
        "builtin", "--runtime", help="The daemonless runner: builtin (runc if installed, else chroot), runc, chroot."
    ),
    platform: str | None = typer.Option(
        None, "--platform", help="For a multi-platform image: which one (default: this host's; it must run here)."
    ),
    insecure: bool = INSECURE,
    ca_file: Path = CA_FILE,
) -> None:
    """Slim IMAGE down to what its workload uses, and prove the slimmed image still runs it.

    The workload runs in the built-in runner (as root) while three views record what it touches: Python audit hooks (a .pth file mounted into each site-packages: opens, imports, ctypes.dlopen, directory listings, programs started), the dynamic loader (LD_DEBUG=files,libs: every library loaded, also by dlopen from C), and samples of /proc/PID/maps, fd, exe and cwd of the container's processes.

    Kept: those files; a safety list (users and name service, ld.so cache, TLS certificates, time zone, licenses, dist-info, each Python's lib-dynload and landmarks, the app's working directory); the GPU rule (site-packages/nvidia/** and CUDA libraries always, lib*.so* of used packages' lib/.libs folders, GPU frameworks such as torch or numba-cuda whole), since a CPU run never loads what GPU code loads lazily; every kept ELF's loader and DT_NEEDED closure; scripts' interpreters. Each layer is rewritten with only its kept, visible entries (same order, same config).

    Then the workload runs again on the slimmed image: it must exit the same (or answer the same HTTP status), else it is an error naming what the slimmed run looked for, and nothing is written.
    """
    from ..oci.docker_archive import pick_image  # when the command runs, not for --help
    from ..slim import Probe, SlimOptions, slim_image, write_report  # when the command runs, not for --help
    from ..transports import read_image, write_output  # when the command runs, not for --help

    chosen = parse_runtime(runtime, BUILTIN_RUNTIMES, "slimming traces the workload in the built-in runner")
    if http is not None and not http.startswith("/"):
        raise GpushipError(f"--http {http!r} is not a path", "give the path to ask, e.g. --http /status")
    cache = Cache()
    registry = registry_options(insecure, ca_file)
    img = pick_image(read_image(image, platform, cache, registry=registry), platform)
    probe = Probe(
        command=tuple(command or ()),
        entrypoint=None if entrypoint is None else ((entrypoint,) if entrypoint else ()),
        env=parse_env(env),
        http=http,
        port=port,
        timeout=timeout,
        runtime=chosen,
    )
    options = SlimOptions(probe=probe, keep=tuple(keep), check_output=check_output, allow_failure=allow_failure)
    with cli_progress(log_step=when_verbose) as progress:
        progress.step("slimming")

        def echo(data: bytes) -> None:
            if not state.quiet:
                sys.stderr.buffer.write(data)
                sys.stderr.flush()

        result = slim_image(img, options, cache=cache, progress=progress, notify=info, echo=echo)
        if output:
            progress.step(f"writing {output}")
            write_output(result.image, output, tag=tag, progress=progress, registry=registry)
    if report is not None:
        write_report(result, report)
        info(f"wrote {report}")
    _render(result, output)


def _render(result, output: str | None) -> None:
    if state.quiet:
        out.print(result.image.digest)
        return
    table = Table(title="layers", show_lines=False)
    for col in ("#", "contents", "files", "compressed before", "after"):
        table.add_column(col, justify="right" if col != "contents" else "left")
    for layer in result.layers:
        table.add_row(
            str(layer.index + 1),
            (layer.comment or "")[:50],
            f"{layer.files_after}/{layer.files_before}",
            _mb(layer.before.size),
            _mb(layer.after.size),
        )
    err.print(table)
    pk = Table(title="removed, by package (top 10)")
    for col in ("package", "files removed", "bytes removed", "bytes kept"):
        pk.add_column(col, justify="right" if col != "package" else "left")
    for p in [p for p in result.packages if p["bytes_removed"]][:10]:
        pk.add_row(f"{p['kind']}:{p['name']}", str(p["files_removed"]), _mb(p["bytes_removed"]), _mb(p["bytes_kept"]))
    err.print(pk)
    proof = result.verified
    what = (
        f"GET answered {proof.http_status}"
        if proof and proof.http_status is not None
        else f"exit {proof.exit_code if proof else '?'}"
    )
    err.print(
        f"slimmed {_mb(result.compressed_before)} -> {_mb(result.compressed_after)} compressed "
        f"({len(result.removed)} files, {_mb(result.bytes_removed)} removed); the workload still passes ({what})"
        + (f" -> {output}" if output else "")
    )
    out.print(result.image.digest)
