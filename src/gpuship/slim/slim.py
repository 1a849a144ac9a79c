"""Traced slimming: run the workload, keep what it touched (plus the rules of :mod:`.rules`), prove it still runs.

``slim_image(image, SlimOptions(probe=Probe(...)))``:

1. unpack the image (the built-in runner's cached root) and run the workload there with the tracer
   (:func:`.trace.traced_run`); when the image carries ``/usr/local/bin/gpuship-check``, run that too, so the
   slimmed image can still check its GPU;
2. decide what stays (:func:`.rules.keep_set`);
3. rewrite every layer, in order, keeping only its entries that are still visible in the final filesystem and
   kept: no whiteouts are needed (nothing dropped is written anywhere), the config is the same, the number and
   order of layers are the same (a layer may become empty). File bytes come from the unpacked root;
4. run the workload again on the new image, without the tracer, and require the same exit code (or, for a server,
   the same HTTP status) — and with ``check_output``, the same stdout (or response body). A failure is an error
   naming the files the slimmed run missed; nothing is written.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TypedDict

from ..cache import Cache
from ..errors import GpushipError
from ..oci.entry import Entry, is_whiteout_meta, whiteout_of
from ..oci.image import History, Image
from ..oci.layer import Layer, cached_layer, written_as
from ..oci.layout import write_json
from ..progress import NO_PROGRESS, Progress
from ..run.rootfs import unpacked_rootfs
from ..streams import open_file
from .rules import Context, Keeper, KeepSet, RootView, check_patterns, describe_rules, keep_set
from .trace import Probe, RunOutcome, Trace, run_workload, traced_run, without_trace_env

CHECK_PROGRAM = "usr/local/bin/gpuship-check"
#: Bump when the rewritten layers' content could change for the same inputs.
FORMAT = "1"


@dataclass(frozen=True)
class SlimOptions:
    """How to slim: the workload (:class:`Probe`), extra ``--keep`` globs, and how strict the proof is."""

    probe: Probe = field(default_factory=Probe)
    keep: tuple[str, ...] = ()
    check_output: bool = False
    allow_failure: bool = False
    check_probe: bool = True


@dataclass(frozen=True)
class LayerSlim:
    """One layer before and after."""

    index: int
    comment: str
    before: Layer
    after: Layer
    files_before: int
    files_after: int
    bytes_before: int
    bytes_after: int
    shadowed_bytes: int

    def to_json(self) -> dict[str, object]:
        return {
            "index": self.index,
            "comment": self.comment,
            "digest_before": self.before.digest,
            "digest_after": self.after.digest,
            "compressed_before": self.before.size,
            "compressed_after": self.after.size,
            "compressed_removed": self.before.size - self.after.size,
            "files_before": self.files_before,
            "files_after": self.files_after,
            "bytes_before": self.bytes_before,
            "bytes_after": self.bytes_after,
            "bytes_removed": self.bytes_before - self.bytes_after,
            "shadowed_bytes_removed": self.shadowed_bytes,
        }


@dataclass(frozen=True)
class Removed:
    path: str
    size: int
    layer: int
    owner: tuple[str, str, str] | None


@dataclass(frozen=True)
class SlimResult:
    """The slimmed image and everything the report says about it."""

    original: Image
    image: Image
    layers: tuple[LayerSlim, ...]
    removed: tuple[Removed, ...]
    kept: KeepSet
    trace: Trace
    traced: RunOutcome
    verified: RunOutcome | None
    command: tuple[str, ...]
    packages: tuple[PackageRow, ...] = ()
    touched_distributions: tuple[str, ...] = ()
    whole_distributions: tuple[str, ...] = ()

    @property
    def compressed_before(self) -> int:
        return self.original.size

    @property
    def compressed_after(self) -> int:
        return self.image.size

    @property
    def bytes_removed(self) -> int:
        return sum(layer.bytes_before - layer.bytes_after for layer in self.layers)

    def report_json(self, top: int = 40) -> dict[str, object]:
        largest = sorted(self.removed, key=lambda r: -r.size)[:top]
        return {
            "original": {
                "digest": self.original.digest,
                "compressed": self.compressed_before,
                "uncompressed": sum(layer.uncompressed_size for layer in self.original.layers),
                "files": sum(layer.files_before for layer in self.layers),
            },
            "slim": {
                "digest": self.image.digest,
                "compressed": self.compressed_after,
                "uncompressed": sum(layer.uncompressed_size for layer in self.image.layers),
                "files": sum(layer.files_after for layer in self.layers),
            },
            "removed": {
                "compressed": self.compressed_before - self.compressed_after,
                "bytes": self.bytes_removed,
                "files": len(self.removed),
            },
            "command": list(self.command),
            "traced_run": self.traced.to_json(),
            "verified_run": self.verified.to_json() if self.verified else None,
            "trace": self.trace.summary(),
            "kept_by_rule": self.kept.reasons(),
            "touched_distributions": list(self.touched_distributions),
            "whole_distributions": list(self.whole_distributions),
            "layers": [layer.to_json() for layer in self.layers],
            "packages": list(self.packages),
            "largest_removed": [
                {
                    "path": "/" + r.path,
                    "size": r.size,
                    "layer": r.layer,
                    "owner": f"{r.owner[0]}:{r.owner[1]}" if r.owner else None,
                }
                for r in largest
            ],
            "rules": describe_rules(),
        }


def merge_traces(a: Trace, b: Trace) -> Trace:
    paths = {k: a.paths.get(k, frozenset()) | b.paths.get(k, frozenset()) for k in set(a.paths) | set(b.paths)}
    return Trace(
        paths,
        a.python_processes + b.python_processes,
        a.loader_logs + b.loader_logs,
        a.sampled_processes + b.sampled_processes,
    )


def slim_image(
    image: Image,
    options: SlimOptions = SlimOptions(),
    *,
    cache: Cache | None = None,
    progress: Progress = NO_PROGRESS,
    notify: Callable[[str], None] | None = None,
    echo: Callable[[bytes], None] | None = None,
) -> SlimResult:
    """Slim ``image`` for the workload ``options.probe`` and prove the result still runs it (module doc).

    ``progress`` gets a line per step, ``notify`` the runner's notes, ``echo`` each run's stdout.
    """
    cache = cache or Cache()
    probe = options.probe
    keep_globs = check_patterns(options.keep)
    command = tuple(probe.describe(image))
    if not command:
        raise GpushipError(
            "the image has no Entrypoint or Cmd, and no command was given",
            "give the workload after --: gpuship slim IMAGE -- COMMAND",
        )
    progress.step(f"unpacking {image.digest[7:19]}")
    rootfs = unpacked_rootfs(image, cache)
    view = RootView.scan(rootfs)

    progress.step(f"tracing: {' '.join(command)}")
    traced, trace = traced_run(image, rootfs, probe, cache=cache, notify=notify, echo=echo)
    _check_traced(traced, probe, options)
    if options.check_probe and view.kind.get(CHECK_PROGRAM) == "file":
        progress.step("tracing: gpuship-check --json (so the slimmed image can still check its GPU)")
        check = replace(probe, entrypoint=("/" + CHECK_PROGRAM,), command=("--json",), http=None)
        _, check_trace = traced_run(image, rootfs, check, cache=cache, notify=notify)
        trace = merge_traces(trace, check_trace)

    progress.step("deciding what to keep")
    env = image.config.env_dict()
    env.update(probe.env)
    ctx = Context(
        arch=image.platform.architecture,
        env=env,
        command=command,
        working_dir=image.config.working_dir,
        user=image.config.user,
        keep=keep_globs,
    )
    kept, keeper = keep_set(view, trace, ctx)

    layers, stats, removed = rewrite_layers(image, view, kept, cache, progress, owner_of=keeper.owner.get)
    rewritten = [new is not old for new, old in zip(layers, image.layers, strict=True)]
    slim = replace(
        image,
        layers=tuple(layers),
        history=_slim_history(image, rewritten),
        annotations={**image.annotations, "dev.gpuship.slim.source": image.digest},
    )

    progress.step("verifying: the same workload on the slimmed image")
    verified = _verify(slim, view, kept, traced, probe, options, cache, notify, echo)

    packages = _packages(keeper, view, kept, removed)
    return SlimResult(
        image,
        slim,
        tuple(stats),
        tuple(removed),
        kept,
        trace,
        traced,
        verified,
        command,
        tuple(packages),
        tuple(keeper.touched_distributions),
        tuple(keeper.whole_distributions),
    )


def _check_traced(traced: RunOutcome, probe: Probe, options: SlimOptions) -> None:
    if probe.http:
        if traced.http_status is None or traced.http_status >= 400:
            raise GpushipError(
                f"the server did not answer GET {probe.http} well under the trace (HTTP {traced.http_status})",
                "check the path and port (--http PATH --port N); the slimmed image would have nothing to prove",
            )
        return
    if traced.exit_code != 0 and not options.allow_failure:
        raise GpushipError(
            f"the workload exited with {traced.exit_code} under the trace, so there is nothing to prove on a slimmed image",
            "fix the command, or pass --allow-failure to require the same exit code",
        )


def _verify(
    slim: Image,
    view: RootView,
    kept: KeepSet,
    traced: RunOutcome,
    probe: Probe,
    options: SlimOptions,
    cache: Cache,
    notify: Callable[[str], None] | None,
    echo: Callable[[bytes], None] | None,
) -> RunOutcome:
    verified = run_workload(slim, without_trace_env(probe), cache=cache, notify=notify, echo=echo)
    problems: list[str] = []
    if probe.http:
        if verified.http_status != traced.http_status:
            problems.append(f"GET {probe.http} answered {verified.http_status}, before {traced.http_status}")
        elif options.check_output and verified.http_body != traced.http_body:
            problems.append(f"GET {probe.http} answered a different body")
    else:
        if verified.exit_code != traced.exit_code:
            problems.append(f"the workload exited with {verified.exit_code}, before {traced.exit_code}")
        elif options.check_output and verified.stdout != traced.stdout:
            problems.append("the workload printed something different")
    if problems:
        missing = _missing_paths(slim, view, kept, probe, cache)
        hint = "keep what it needs with --keep"
        if missing:
            hint += ": it looked for " + ", ".join("/" + m for m in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise GpushipError(
            "the slimmed image does not run the workload as the original did: " + "; ".join(problems), hint
        )
    return verified


def _missing_paths(slim: Image, view: RootView, kept: KeepSet, probe: Probe, cache: Cache) -> list[str]:
    """Run the workload traced on the slimmed image: the paths it touched that only the original has."""
    try:
        rootfs = unpacked_rootfs(slim, cache)
        _, trace = traced_run(slim, rootfs, probe, cache=cache, notify=lambda _m: None)
    except GpushipError:
        return []
    out: list[str] = []
    for p in sorted(trace.all("open", "ld-try", "map", "touch", "exec", "dlopen")):
        real, _, _ = view.resolve(p) if p.startswith("/") else (None, [], "")
        if real is not None and real not in kept and real not in out:
            out.append(real)
    return out


# -- rewriting the layers ----------------------------------------------------------------------------------------
@dataclass
class _Cover:
    """What the layers above hide: paths they write (directories apart), whiteouts, opaque directories."""

    nondir: set[str] = field(default_factory=set)
    dirs: set[str] = field(default_factory=set)
    whiteout: set[str] = field(default_factory=set)
    opaque: set[str] = field(default_factory=set)

    def hides(self, real: str) -> bool:
        """Whether an entry of a lower layer at ``real`` is not what the final filesystem has there."""
        if real in self.nondir or real in self.whiteout or real in self.dirs:
            return True
        d = posixpath.dirname(real)
        while d:
            if d in self.nondir or d in self.whiteout or d in self.opaque:
                return True
            d = posixpath.dirname(d)
        return False

    def merge(self, other: _Cover) -> None:
        self.nondir |= other.nondir
        self.dirs |= other.dirs
        self.whiteout |= other.whiteout
        self.opaque |= other.opaque


class _RealDirs:
    """Entry path -> real path: the parent folder resolved through the final filesystem's symlinks."""

    def __init__(self, view: RootView) -> None:
        self.view = view
        self._cache: dict[str, str] = {}

    def real(self, path: str) -> str:
        parent, name = posixpath.split(path)
        if not parent:
            return name
        r = self._cache.get(parent)
        if r is None:
            real, _, _ = self.view.resolve(parent)
            r = real if real is not None else parent
            self._cache[parent] = r
        return f"{r}/{name}" if r else name


#: What one layer keeps: (entries, files before, files after, bytes before, bytes after, bytes shadowed, whole)
_LayerPlan = tuple[list[Entry], int, int, int, int, int, bool]


def rewrite_layers(
    image: Image,
    view: RootView,
    kept: KeepSet,
    cache: Cache,
    progress: Progress = NO_PROGRESS,
    owner_of: Callable[[str], tuple[str, str, str] | None] = lambda _p: None,
) -> tuple[list[Layer], list[LayerSlim], list[Removed]]:
    """Every layer with only its visible, kept entries (top layer first, so each knows what the ones above hide)."""
    n = len(image.layers)
    cover = _Cover()
    reals = _RealDirs(view)
    plans: list[_LayerPlan] = [([], 0, 0, 0, 0, 0, False)] * n
    removed: list[Removed] = []
    for i in reversed(range(n)):
        layer = image.layers[i]
        progress.step(f"reading layer {i + 1}/{n} ({layer.size / 1e6:.1f} MB)")
        plans[i] = _plan_layer(i, layer, view, kept, cover, reals, owner_of, removed)

    new_layers: list[Layer] = []
    stats: list[LayerSlim] = []
    comments = layer_comments(image)
    for i, layer in enumerate(image.layers):
        emitted, fb, fa, bb, ba, sh, whole = plans[i]
        if whole:  # nothing to drop here: the very same blob (its whiteouts hide nothing that is left below)
            new = layer
        else:
            progress.step(f"writing layer {i + 1}/{n} ({fa} of {fb} files)")
            key = _layer_key(image, layer, emitted)
            comment = f"{comments[i]} (slimmed)" if comments[i] else "slimmed"
            new = cached_layer(
                cache, key, partial(iter, emitted), compression=written_as(layer.compression), comment=comment
            )
        new_layers.append(new)
        stats.append(LayerSlim(i, comments[i], layer, new, fb, fa, bb, ba, sh))
    return new_layers, stats, removed


def _plan_layer(
    i: int,
    layer: Layer,
    view: RootView,
    kept: KeepSet,
    cover: _Cover,
    reals: _RealDirs,
    owner_of: Callable[[str], tuple[str, str, str] | None],
    removed: list[Removed],
) -> _LayerPlan:
    """What layer ``i`` keeps, given what the layers above it hide (``cover``, which it then joins); what it
    drops goes to ``removed``."""
    mine = _Cover()
    emitted: list[Entry] = []
    dir_entries: list[tuple[Entry, str, bool]] = []
    files_before = files_after = bytes_before = bytes_after = shadowed = 0
    for entry, _reader in layer.entries():
        if is_whiteout_meta(entry.path):
            continue
        whiteout = whiteout_of(entry.path)
        if whiteout is not None:
            hidden_path, opaque = whiteout
            if opaque:
                mine.opaque.add(reals.real(entry.path).rpartition("/")[0] if hidden_path else "")
            else:
                mine.whiteout.add(reals.real(hidden_path))
            continue
        real = reals.real(entry.path)
        hidden = cover.hides(real)
        if entry.kind == "dir":
            mine.dirs.add(real)
            dir_entries.append((entry, real, hidden))
            continue
        mine.nondir.add(real)
        size = view.size.get(real, entry.size) if entry.kind == "hardlink" else entry.size
        files_before += 1
        bytes_before += size
        if hidden:
            shadowed += size
            continue
        if real in kept.files and view.kind.get(real) in ("file", "symlink"):
            out = _kept_entry(entry, real, view)
            if out is not None:
                emitted.append(out)
                files_after += 1
                bytes_after += out.size
                continue
        removed.append(Removed(real, size, i, owner_of(real)))
    parents: set[str] = set()
    for e in emitted:
        d = posixpath.dirname(e.path)
        while d and d not in parents:
            parents.add(d)
            d = posixpath.dirname(d)
    for entry, real, hidden in dir_entries:
        if entry.path in parents or (not hidden and real in kept.dirs):
            emitted.append(entry)
    cover.merge(mine)
    # every file kept, and every folder one the slimmed image has anyway: the layer is reused as it is
    whole = files_after == files_before and all(real in kept.dirs for _, real, _ in dir_entries)
    return emitted, files_before, files_after, bytes_before, bytes_after, shadowed, whole


def _slim_history(image: Image, rewritten: list[bool]) -> tuple[History, ...]:
    """The history, the line of each rewritten layer marked as slimmed (when aligned with the layers)."""
    hist = list(image.history)
    if sum(1 for h in hist if not h.empty_layer) != len(image.layers):
        return tuple(hist)
    out: list[History] = []
    i = 0
    for h in hist:
        if not h.empty_layer:
            if rewritten[i]:
                h = replace(h, comment=f"{h.comment} (slimmed)" if h.comment else "slimmed")
            i += 1
        out.append(h)
    return tuple(out)


def layer_comments(image: Image) -> list[str]:
    """Each layer's comment: its own, else its history line's (what an image read from disk keeps)."""
    hist = [h for h in image.history if not h.empty_layer]
    aligned = len(hist) == len(image.layers)
    return [layer.comment or (hist[i].comment if aligned else "") for i, layer in enumerate(image.layers)]


def _kept_entry(entry: Entry, real: str, view: RootView) -> Entry | None:
    """The entry as it goes into the slimmed layer: files (and hard links, as files) read from the unpacked root."""
    if entry.kind == "symlink":
        return Entry.symlink(entry.path, entry.target, entry.uid, entry.gid)
    if view.kind.get(real) != "file":
        return None
    host = view.host(real)
    mode = entry.mode if entry.kind == "file" else (view.mode.get(real, 0o100644) & 0o7777)
    return Entry.stream(entry.path, view.size[real], partial(open_file, host), mode, entry.uid, entry.gid)


def _layer_key(image: Image, layer: Layer, emitted: list[Entry]) -> str:
    h = hashlib.sha256(f"slim:{FORMAT}:{image.digest}:{layer.digest}".encode())
    for e in sorted(emitted, key=lambda e: e.path):
        h.update(f"{e.path}\0{e.kind}\0{e.mode}\0{e.uid}\0{e.gid}\0{e.size}\0{e.target}\n".encode())
    return "slim:" + h.hexdigest()


class PackageRow(TypedDict):
    """A row of the slim report's ``packages``."""

    kind: str
    name: str
    version: str
    files_kept: int
    bytes_kept: int
    files_removed: int
    bytes_removed: int


def _packages(keeper: Keeper, view: RootView, kept: KeepSet, removed: list[Removed]) -> list[PackageRow]:
    """Bytes kept and removed per Python distribution and Debian package (and for files nobody owns)."""
    rows: dict[tuple[str, str], PackageRow] = {}

    def row(owner: tuple[str, str, str] | None) -> PackageRow:
        kind, name, version = owner if owner else ("none", "(no package)", "")
        r = rows.get((kind, name))
        if r is None:
            r = rows[(kind, name)] = {
                "kind": kind,
                "name": name,
                "version": version,
                "files_kept": 0,
                "bytes_kept": 0,
                "files_removed": 0,
                "bytes_removed": 0,
            }
        return r

    for r in removed:
        x = row(r.owner)
        x["files_removed"] += 1
        x["bytes_removed"] += r.size
    for p in kept.files:
        if view.kind.get(p) == "file":
            x = row(keeper.owner.get(p))
            x["files_kept"] += 1
            x["bytes_kept"] += view.size.get(p, 0)
    return sorted(rows.values(), key=lambda r: (-r["bytes_removed"], r["kind"], r["name"]))


def write_report(result: SlimResult, path: Path) -> None:
    """The slimming report as JSON (written to a temporary file and renamed)."""

    write_json(path, result.report_json())
