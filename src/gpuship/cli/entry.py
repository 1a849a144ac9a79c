"""The ``gpuship`` command's entry point.

``gpuship build`` over unchanged inputs, with its outputs still in place, is answered here from the build's
record (:mod:`gpuship.rebuild`) before the CLI and the build machinery are imported: a no-change rebuild costs
the interpreter's start, one walk of the project and (for ``docker:``) one ``docker tag``. Anything this
module does not recognise goes to the full CLI (:func:`gpuship.cli.app.main`).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any  # Any: the rebuild record, JSON

    from ..rebuild import Request, Snapshot

#: ``gpuship build`` options this fast path understands (tests/test_cli_lazy.py checks them against the command);
#: any other option (``--help``, ``--insecure``, ...) goes to the full CLI.
VALUE_OPTIONS = {
    "-o": "output",
    "--output": "output",
    "-t": "tag",
    "--tag": "tag",
    "--report": "report",
    "--compression": "compression",
    "--base": "base",
    "--platform": "platform",
    "--extra": "extra",
}
FLAG_OPTIONS = {"--locked": "locked"}


@dataclass(frozen=True)
class BuildArgs:
    path: Path
    values: dict[str, str]
    lists: dict[str, list[str]]
    locked: bool
    quiet: bool


def parse_build(argv: Sequence[str]) -> BuildArgs | None:
    """``[-q|-v]... build [PATH] [OPTIONS]`` read the way the full CLI reads it; None for anything else."""
    quiet, i = False, 0
    while i < len(argv) and argv[i].startswith("-"):
        if argv[i] in ("-q", "--quiet"):
            quiet = True
        elif argv[i] not in ("-v", "-vv", "-vvv", "--verbose"):
            return None
        i += 1
    if i >= len(argv) or argv[i] != "build":
        return None
    values: dict[str, str] = {}
    lists: dict[str, list[str]] = {"platform": [], "extra": []}
    path: str | None = None
    locked = False
    rest = list(argv[i + 1 :])
    while rest:
        arg = rest.pop(0)
        name, value = arg, None
        if arg.startswith("--") and "=" in arg:
            name, value = arg.split("=", 1)
        if name in FLAG_OPTIONS and value is None:
            locked = True
        elif name in VALUE_OPTIONS:
            if value is None:
                if not rest:
                    return None
                value = rest.pop(0)
            key = VALUE_OPTIONS[name]
            if key in lists:
                lists[key].append(value)
            else:
                values[key] = value
        elif arg.startswith("-") or path is not None:
            return None
        else:
            path = arg
    if values.get("compression") not in (None, "gzip", "zstd"):
        return None
    return BuildArgs(Path(path or "."), values, lists, locked, quiet)


def _request(args: BuildArgs) -> Request:
    from ..rebuild import Request  # when the command runs, not for --help

    output = args.values.get("output") or f"oci-archive:{args.path.resolve().name}.oci.tar"
    return Request(
        args.path,
        tuple(t.strip() for t in output.split(",") if t.strip()),
        tuple(p.strip() for item in args.lists["platform"] for p in item.split(",") if p.strip()),
        tuple(args.lists["extra"]),
        args.locked,
        args.values.get("compression"),
        args.values.get("tag"),
        args.values.get("base"),
    )


def unchanged_build(argv: Sequence[str]) -> bool:
    """Answer ``gpuship build`` from its record when nothing changed, or from the last build's image when only app
    sources changed (:mod:`gpuship.editbuild`); False when the full build must run."""
    args = parse_build(argv)
    if args is None or not args.path.is_dir():
        return False
    from ..rebuild import recall, snapshot  # when the command runs, not for --help

    started = time.monotonic()
    report = Path(args.values["report"]) if "report" in args.values else None
    sbom = report.with_name(report.name.removesuffix(".json") + ".spdx.json") if report else None
    skip = [p for p in (report, sbom) if p is not None]
    request = _request(args)
    try:
        now = snapshot(request, skip=skip)
        got = recall(request, now=now)
    except (OSError, ValueError):
        return False
    said = "unchanged since the last build"
    if got is None:
        got = _edited(request, skip, now, started)
        said = f"only {', '.join(got['changed'])} changed since the last build" if got is not None else said
    if got is None or (report is not None and "sbom" not in got):
        return False
    written = got["written"]
    seconds = time.monotonic() - started
    if report is not None and sbom is not None:
        data = dict(got["report"], seconds=round(seconds, 3), written=written)
        _write(report, json.dumps(data, indent=2, sort_keys=True) + "\n")
        _write(sbom, got["sbom"])
    if not args.quiet:
        for platform, group, digest, size, unpacked, state, _what in got["rows"]:
            print(f"{platform}  {group:10s}  {digest}  {size:>8s}  {unpacked:>8s}  {state}", file=sys.stderr)
        for w in got["report"].get("warnings") or ():
            print(f"warning: {w}", file=sys.stderr)
        print(f"{said} ({seconds:.2f}s): {'; '.join(written)}", file=sys.stderr)
    print(got["digest"])
    return True


def _edited(request: Request, skip: list[Path], now: Snapshot, started: float) -> dict[str, Any] | None:
    """An edit rebuild's answer (:mod:`gpuship.editbuild`), or None: then the full build runs (and says what is
    wrong, if anything is)."""
    from ..rebuild import edited  # as above

    try:
        got = edited(request, now=now)
        if got is None or (skip and "sbom" not in got.record["result"]):  # a report, and no SBOM to start from
            return None
        fewer_malloc_arenas()  # before the engine's threads start
        from ..editbuild import edit_build  # only when the last build's image may be the start

        answer = edit_build(got, request, skip, started)
    except Exception:  # noqa: BLE001 - whatever went wrong here, the full build does it right
        return None
    return None if answer is None else answer | {"changed": got.changed}


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


#: glibc's ``M_ARENA_MAX`` (malloc.h).
_M_ARENA_MAX = -8


def fewer_malloc_arenas(arenas: int = 2) -> bool:
    """Cap the process at ``arenas`` malloc arenas, unless ``MALLOC_ARENA_MAX`` already says; True when glibc
    took it. glibc gives each thread that allocates an arena of its own (up to 8 per core) and keeps what is
    freed there: the layer workers' chunk buffers took torch-status's cold build to a 320 MB peak, 282 MB with
    two arenas (267 MB with one)."""
    if "MALLOC_ARENA_MAX" in os.environ or not sys.platform.startswith("linux"):
        return False
    import ctypes  # only on the way to the full CLI: the no-change answer does without it

    try:
        return bool(ctypes.CDLL(None).mallopt(_M_ARENA_MAX, arenas))
    except (OSError, AttributeError):  # a C library without mallopt: its allocator's own rules
        return False


def main() -> None:
    if unchanged_build(sys.argv[1:]):
        return
    fewer_malloc_arenas()  # before any thread starts
    from .app import main as cli_main  # when the command runs, not for --help

    cli_main()
