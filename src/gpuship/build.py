"""``build``: from a Python project to an image — the main job, as one function over the library.

Flow (one direction): project -> :class:`BuildPlan` -> lock -> per platform: Python env layers, app layer,
find-libdeps, Debian base, GPU check layer -> Image -> Index -> sinks. Every layer comes from a cache keyed by
its inputs, so a rebuild with no change gives the same digest and an app edit rebuilds only the app layer.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import subprocess
import threading
import time
import tomllib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypedDict

from . import __version__
from .buildcache import BuildCacheSession, NotInCache, cache_spec
from .cache import Cache
from .check import MANIFEST_PATH, check_entries, manifest_data
from .cuda import GpuPlan
from .editbuild import image_record, plain_file
from .errors import GpushipError
from .oci import (
    BlobCompression,
    Compression,
    Entry,
    Image,
    ImageConfig,
    Index,
    Layer,
    Platform,
    append_layers,
    cached_layer,
    make_index,
    with_config,
    with_created,
)
from .oci.compress import for_transport
from .oci.docker_archive import pick_image
from .oci.layer import rewrite_layer_meta, spooled_entries
from .oci.layout import write_json
from .oci.preload import Preloader
from .parallel import build_jobs
from .plan import BuildOptions, BuildPlan, make_plan
from .plan.build_plan import config_home
from .progress import NO_PROGRESS, Progress
from .project import IndexOptions
from .project.entrypoint import VENV, BaseContents, choose_entrypoint, lint_interpreters
from .rebuild import Request, human_size, remember, snapshot
from .redact import redact_object
from .registry.reference import Reference
from .sbom import Component, write_spdx
from .serve import runtime_entries, runtime_entrypoint, runtime_requirements
from .slim import ArchSelection, arch_sort_key, prune_layer_entries
from .slim.archs import LibraryPruneJSON, PruneReportJSON
from .sources.app import AppFiles, app_layer, left_out_warning, select_app_files
from .sources.base import Base, Started
from .sources.debian.libdeps import LibDep
from .sources.debian.slim import SlimReport
from .sources.editable import editable_layer
from .sources.models import ModelSet, build_models, mounts_label
from .sources.models import pinned as models_pinned
from .sources.python import Lock, PruneRules, PythonEnv, PythonInfo, install_project, lock_project, python_layers
from .sources.python.credentials import IndexCredentials
from .sources.python.interpreter import host_python
from .transports import target_compresses, write_output


@dataclass(frozen=True)
class LayerRow:
    """One row of the layer table that ends every build."""

    group: str
    digest: str
    size: int
    uncompressed_size: int
    reused: bool
    what: str


@dataclass(frozen=True)
class PlatformResult:
    platform: Platform
    image: Image
    rows: tuple[LayerRow, ...]
    debian_packages: tuple[tuple[str, str, str], ...]
    python_distributions: tuple[tuple[str, str], ...]
    libdeps: tuple[LibDep, ...] = ()
    #: the Python environment's report and the GPU-code pruning's (JSON for the build report)
    pruned: dict[str, object] | None = None
    dropped: SlimReport | None = None


@dataclass(frozen=True)
class BuildResult:
    plan: BuildPlan
    result: Image | Index
    platforms: tuple[PlatformResult, ...]
    secrets_skipped: tuple[str, ...]
    seconds: float
    outputs: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default_factory=tuple)
    models: ModelSet | None = None
    #: what each output says it did (e.g. how many layers went to the engine)
    written: tuple[str, ...] = ()
    #: whether a no-change rebuild may be answered from this build's record (every input known)
    memoizable: bool = field(default=True, compare=False)

    @property
    def digest(self) -> str:
        return self.result.digest

    def report_json(self) -> dict[str, object]:
        """The build report (no credential in it: every string is redacted)."""
        return redact_object(self._report())

    def _report(self) -> dict[str, object]:
        gpu = self.plan.gpu
        return {
            "image": self.plan.tag,
            "digest": self.digest,
            "base": self.plan.base,
            "python": self.plan.python_version,
            "seconds": round(self.seconds, 3),
            "outputs": list(self.outputs),
            "written": list(self.written),
            "gpu": gpu.explain() if gpu is not None else None,
            "secrets_skipped": list(self.secrets_skipped),
            "warnings": list(self.warnings),
            "models": [m.to_json() for m in self.models.records] if self.models else [],
            "platforms": [
                {
                    "platform": str(p.platform),
                    "digest": p.image.digest,
                    "layers": [r.__dict__ for r in p.rows],
                    "debian_packages": [list(x) for x in p.debian_packages],
                    "python_distributions": [list(x) for x in p.python_distributions],
                    "libdeps": [_jsonable(d) for d in p.libdeps],
                    "pruned": _jsonable(p.pruned),
                    "debian_dropped": _jsonable(p.dropped),
                }
                for p in self.platforms
            ],
        }


def _jsonable(obj: object) -> object:
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "to_json"):
        return obj.to_json()
    if hasattr(obj, "__dataclass_fields__"):
        return {k: _jsonable(getattr(obj, k)) for k in obj.__dataclass_fields__}
    return str(obj)


def image_env(plan: BuildPlan, base_config: ImageConfig, models: bool = False) -> dict[str, str]:
    """The image's environment: the base's, the venv, the GPU plan's, with ``models`` the model variables
    (mount paths, the hub cache), and the project's own ``env`` last."""
    env = base_config.env_dict()
    path = env.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    env.update(
        PATH=f"{VENV}/bin:{path}",
        VIRTUAL_ENV=VENV,
        PYTHONUNBUFFERED="1",
        PYTHONDONTWRITEBYTECODE="1",
    )
    if plan.gpu is not None:
        env.update(plan.gpu.env)
    if models:
        env.update(plan.config.models.env())
    env.update(plan.config.env)
    return env


def build(options: BuildOptions, *, cache: Cache | None = None, progress: Progress = NO_PROGRESS) -> BuildResult:
    """Build the project described by ``options``; write every requested output; return what was made."""
    started = time.monotonic()
    build_jobs()  # a bad GPUSHIP_JOBS is refused before any work
    cache = cache or Cache()
    outputs = [t.strip() for t in (options.output or "").split(",") if t.strip()]
    request, skip = memo_request(options, outputs)
    before = snapshot(request, skip=skip)
    progress.step(f"planning {options.project_dir}")
    plan = make_plan(options, cache=cache, progress=progress)
    for line in plan.explain():
        progress.step(line)
    with contextlib.ExitStack() as stack:
        shared = open_shared_cache(plan, outputs, cache, progress, stack)
        for attempt in range(MAX_RESTARTS + 1):
            try:
                with cache.overlaid(shared):
                    br = _build_planned(plan, outputs, cache, progress, shared, started)
                break
            except NotInCache as exc:
                if shared is None or attempt == MAX_RESTARTS:
                    raise GpushipError(
                        f"the build cache kept failing its checks ({exc.why})", "build with --no-cache"
                    ) from exc
                shared.excluded.add(exc.key)
                progress.step(f"warning: {exc.why}; building again without that record")
    if _memoizable(plan, br, outputs) and before.same_during_build(snapshot(request, skip=skip)):
        _remember(request, br, skip)
    return br


#: How often a build starts again without a build-cache record that failed when its bytes were needed.
MAX_RESTARTS = 3


def open_shared_cache(
    plan: BuildPlan, outputs: Sequence[str], cache: Cache, progress: Progress, stack: contextlib.ExitStack
) -> BuildCacheSession | None:
    """The build's shared build cache (``--cache``, ``GPUSHIP_BUILD_CACHE``, ``[tool.gpuship] cache``), read and
    its blobs checked; or, with ``--no-cache`` alone, the overlay that keeps the build from reusing any layer.
    A cache that cannot be read is a warning: the build goes on without it."""

    options = plan.options
    spec = None if options.dev else cache_spec(options.cache, options.cache_mode, plan.config.cache)  # not gpuship dev
    if spec is None and not options.no_cache:
        return None
    store = None
    remote = None

    def say(msg: str) -> None:
        progress.step(msg)

    if spec is not None:
        # the registry client loads httpx: only for a build with a cache
        from .registry import Registry
        from .registry.buildcache import open_store  # (the same)

        registry = stack.enter_context(Registry(options.registry, cache))
        store = open_store(spec.ref, registry, progress)
        if spec.reads and not options.no_cache:
            try:
                remote = store.read()
            except GpushipError as exc:
                say(f"warning: the build cache {spec} cannot be read ({exc.line()}); building without it")
            else:
                say(
                    f"build cache {spec}: {len(remote.layers)} layers known"
                    if remote is not None
                    else f"build cache {spec}: empty (this build writes it)"
                )
    session = BuildCacheSession(
        cache,
        remote,
        store,
        fresh=options.no_cache,
        eager=not outputs or any(not t.startswith("registry:") for t in outputs),
        plain=any(not target_compresses(t) for t in outputs),
        spec=spec,
        platforms=[str(p) for p in plan.platforms],
        jobs=options.registry.jobs,
        say=say,
    )
    stack.callback(session.close)
    try:
        session.check_blobs()
    except GpushipError as exc:
        say(f"warning: the build cache {spec} cannot be read ({exc.line()}); building without it")
        session.forget()
    session.prefetch()
    return session


def write_shared_cache(
    shared: BuildCacheSession, plan: BuildPlan, shipped: Image | Index, outputs: Sequence[str]
) -> str | None:
    """Write the build cache (mode write or readwrite): the records this build used and made, and its images'
    layers, mounted from a ``registry:`` output of the same registry where they are already."""
    spec, store = shared.spec, shared.store
    if spec is None or store is None or not spec.writes:
        return None
    here = Reference.parse(spec.ref).registry
    mount_from = []
    for t in outputs:
        if t.startswith("registry:"):
            ref = Reference.parse(t.partition(":")[2] or plan.tag)
            if ref.registry == here:
                mount_from.append(ref.repository)
    images = shipped.images if isinstance(shipped, Index) else (shipped,)
    layers = {layer.digest: layer for img in images for layer in img.layers}
    try:
        return store.write(shared.manifest_for(shipped), layers, shared.cache, mount_from)
    except GpushipError as exc:
        shared.say(f"warning: the build cache {spec} was not written ({exc.line()})")
        return None


def _build_planned(
    plan: BuildPlan,
    outputs: Sequence[str],
    cache: Cache,
    progress: Progress,
    shared: BuildCacheSession | None,
    started: float,
) -> BuildResult:
    """The build after its plan: lock, layers, images, outputs, the build cache, the report."""
    options = plan.options
    if plan.config.bytecode != "none" or plan.project.is_package:
        # byte code and source builds need a host Python of the base's version: refused now, not after the lock
        host_python(".".join(plan.python_version.split(".")[:2]))
    app, entrypoint, runtime, warnings = _app_and_entrypoint(plan, progress)
    models = build_models(
        options.project_dir.resolve(),
        app,
        plan.config.models,
        plan.config.workdir,
        cache,
        compression="none",  # layers are plain tars: the outputs compress where bytes travel
        project_files=not options.dev,
        progress=progress,
    )
    extra_reqs = tuple(runtime.requirements) if runtime else ()
    progress.step("locking dependencies")
    lock = lock_for_plan(plan, extra_reqs, locked=options.locked, cache=cache, progress=progress)

    results: list[PlatformResult] = []
    preload = _preloader(plan, outputs, cache, progress)
    try:
        for platform in plan.platforms:
            ahead = preload if preload is not None and preload.platform == platform else None
            results.append(_build_platform(plan, platform, lock, models, runtime, entrypoint, cache, progress, ahead))
        if preload is not None:
            preload.finish()
        images = [r.image for r in results]
        result, results, written = _write_outputs(
            plan, make_index(images) if len(images) > 1 else images[0], results, outputs, progress, shared
        )
        if preload is not None and preload.describe():
            early = preload.describe()
            progress.step(early)
            written = [f"{w}; {early}" if w.startswith("loaded into Docker") else w for w in written]
    finally:
        if preload is not None:
            preload.close()
    if shared is not None:
        warnings += [w for w in shared.warnings if w not in warnings]
    br = BuildResult(
        plan,
        result,
        tuple(results),
        app.secrets_skipped,
        time.monotonic() - started,
        tuple(outputs),
        tuple(warnings),
        models,
        tuple(written),
    )
    if options.report:
        progress.step(f"writing the report {options.report}")
        write_report(br, options.report)
        br = replace(br, seconds=time.monotonic() - started)  # the time the user waited, the report included
    if not _memoizable_inputs(plan, lock):
        br = replace(br, memoizable=False)
    return br


def _preloader(plan: BuildPlan, outputs: Sequence[str], cache: Cache, progress: Progress) -> Preloader | None:
    """For a build to Docker: what loads the image's lower layers into the engine while the rest are built
    (:mod:`gpuship.oci.preload`), for the platform the engine gets (the host's, else the first)."""
    if not any(t.startswith("docker:") for t in outputs):
        return None
    host = Platform.host()
    same = [p for p in plan.platforms if (p.os, p.architecture) == (host.os, host.architecture)]
    platform = same[0] if same else sorted(plan.platforms)[0]
    base = plan.bases[platform]
    return Preloader(platform, lambda: base.floor(cache, progress), say=progress.step)


def _app_and_entrypoint(
    plan: BuildPlan, progress: Progress
) -> tuple[AppFiles, tuple[str, ...], _Runtime | None, list[str]]:
    """The app's files and the entrypoint that runs them, checked before the long steps (a missing file, or an
    interpreter the base lacks, is refused now); the warnings said so far."""
    options = plan.options
    where = config_home(plan.project.root, plan.project.tool)
    app = select_app_files(options.project_dir, include=plan.config.include, exclude=plan.config.exclude)
    left_out = app.left_out_summary()
    progress.step(f"app: {len(app.files)} files" + (f"; left out {left_out}" if left_out else ""))
    warnings = app.secret_warnings()
    may_need = left_out_warning(app, where)
    if may_need and not options.dev:  # gpuship dev mounts the whole project folder
        warnings.append(may_need)
    for w in warnings:
        progress.step(f"warning: {w}")
    runtime = _function_runtime(plan)
    entrypoint = choose_entrypoint(
        plan.config.entrypoint,
        plan.project.scripts,
        app.files,
        runtime_argv=runtime.argv if runtime else (),
        where=where,
    )
    facts = BaseContents(
        None if plan.first_base().remote else frozenset(plan.config.debian_packages()),
        ".".join(plan.python_version.split(".")[:2]),
    )
    for w in lint_interpreters(
        entrypoint, app.root, app.files, facts, workdir=plan.config.workdir, where=where
    ):  # the entrypoint's interpreter is refused here; other scripts' are warnings
        warnings.append(w)
        progress.step(f"warning: {w}")
    return app, tuple(entrypoint), runtime, warnings


def _write_outputs(
    plan: BuildPlan,
    plain: Image | Index,
    results: list[PlatformResult],
    outputs: Sequence[str],
    progress: Progress,
    shared: BuildCacheSession | None = None,
) -> tuple[Image | Index, list[PlatformResult], list[str]]:
    """Every output written: compressed where bytes travel, plain for an engine; then the build cache. Returns the
    image in the form the outputs hold (its digest is the one printed), the platform results to match, and what
    was written."""
    result, results = _shipped(plain, results, outputs, plan.compression)
    written: list[str] = []
    for target in outputs:
        progress.step(f"writing {target}")
        given = result if target_compresses(target) else plain  # an engine gets the plain layers
        written.append(
            write_output(
                given,
                target,
                tag=plan.tag,
                compression=plan.compression,
                progress=progress,
                registry=plan.options.registry,
            )
        )
        progress.step(written[-1])
    if shared is not None and shared.spec is not None and shared.spec.writes:
        progress.step(f"writing the build cache {shared.spec}")
        line = write_shared_cache(shared, plan, for_transport(result, plan.compression), outputs)
        if line:
            written.append(line)
            progress.step(line)
    return result, results, written


def memo_request(options: BuildOptions, outputs: Sequence[str]) -> tuple[Request, list[Path]]:
    """The request a no-change rebuild is recognised by (:mod:`gpuship.rebuild`), and the files its project walk
    leaves out: the lock (the build may write it; it is in the remembered key), the report and the SBOM."""
    request = Request(
        options.project_dir,
        tuple(outputs),
        tuple(options.platforms),
        tuple(options.extras),
        options.locked,
        options.compression,
        options.tag,
        options.base,
    )
    skip = [options.project_dir / "gpuship.lock"]
    if options.report:
        skip += [Path(options.report), sbom_path(Path(options.report))]
    return request, skip


def _memoizable_inputs(plan: BuildPlan, lock: Lock) -> bool:
    """Only builds whose every input is under the project directory, in the lock, in the signed indexes or pinned
    by hash (models: a hub commit, a URL's sha256)."""
    local = any(p.url.startswith("file:") for t in lock.targets for p in t.packages)
    return not (
        plan.options.dev
        or any(base.remote for base in plan.bases.values())
        or not models_pinned(plan.config.models)
        or local
    )


def _memoizable(plan: BuildPlan, result: BuildResult, outputs: Sequence[str]) -> bool:
    """A no-change rebuild may be answered from this build's record (:mod:`gpuship.rebuild`): its inputs are all
    known, no output is a registry, and it was not asked to build afresh (``--no-cache``)."""
    return result.memoizable and not plan.options.no_cache and not any(t.startswith("registry:") for t in outputs)


def _remember(request: Request, br: BuildResult, skip: list[Path]) -> None:
    image_ids = [
        pick_image(br.result).config_descriptor()["digest"] for t in request.outputs if t.startswith("docker:")
    ]
    now = snapshot(request, skip=skip[1:])  # with the lock as it is now
    rows = [[str(p.platform), *r] for p in br.platforms for r in layer_table_rows(p)]
    result = {"digest": br.digest, "rows": rows, "report": br.report_json()}
    if len(skip) > 1 and skip[2].is_file():
        result["sbom"] = skip[2].read_text()  # the SBOM beside the report
    default = f"{br.plan.name}:{br.plan.version}"
    remember(now, request, image_ids, default, result, _edit_base(request, br))


def _edit_base(request: Request, br: BuildResult) -> dict[str, object] | None:
    """What an edit rebuild (:mod:`gpuship.editbuild`) starts from, for a build it may start from: one image, into
    engines only, no shared build cache, not a package project (its wheel is built from the app's files), the app
    layer on top as :func:`app_layer` made it (not pruned). Its editable files: the app's Python sources, not
    executable (no ``#!`` line is read), not ``setup.py`` nor a requirements file (they make the plan)."""
    plan, image, models = br.plan, br.result, br.models
    if not request.engine_only or not isinstance(image, Image) or models is None or plan.project.is_package:
        return None
    if cache_spec(plan.options.cache, plan.options.cache_mode, plan.config.cache) is not None:
        return None  # a build with the shared build cache writes it
    app, top = models.app, image.layers[-1]
    if br.platforms[0].rows[-1].group != "app" or top.digest != app_layer(app, plan.config.workdir, top.cache).digest:
        return None
    project = plan.project
    inputs = {p.resolve() for p in (*project.requirement_files, *project.constraint_files, *project.uv_project_files)}
    editable = [
        rel
        for rel in app.files
        if rel.endswith(".py")
        and Path(rel).name != "setup.py"
        and (app.root / rel).resolve() not in inputs
        and plain_file(app.root / rel)
    ]
    return {
        "workdir": plan.config.workdir,
        "files": list(app.files),
        "editable": editable,
        "image": image_record(image),
    }


def _shipped(
    result: Image | Index, platforms: list[PlatformResult], outputs: Sequence[str], compression: Compression
) -> tuple[Image | Index, list[PlatformResult]]:
    """The image in the form its outputs get, and the platform results (layer rows) to match.

    Layers are built as plain tars; where any output's bytes travel (every one but an engine), or when there is
    no output, the result is the compressed image (each layer compressed once per machine, remembered), so the
    digest printed is the one a registry or an OCI layout holds. An engine-only build stays uncompressed: its
    digest is that of the image the engine was given."""

    if outputs and not any(target_compresses(t) for t in outputs):
        return result, platforms
    shipped = for_transport(result, compression)
    by_platform = {img.platform: img for img in (shipped.images if isinstance(shipped, Index) else (shipped,))}
    out = []
    for p in platforms:
        img = by_platform[p.image.platform]
        rows = tuple(replace(r, digest=x.digest, size=x.size) for r, x in zip(p.rows, img.layers, strict=True))
        out.append(replace(p, image=img, rows=rows))
    return shipped, out


def lock_for_plan(
    plan: BuildPlan, extra_requirements: Sequence[str], *, locked: bool, cache: Cache, progress: Progress = NO_PROGRESS
) -> Lock:
    """``gpuship.lock`` for ``plan``: its requirements (after CUDA targeting) plus ``extra_requirements``, the GPU
    plan's constraints, a registry base's packages kept as they are, and :func:`index_options`. ``gpuship build``
    and ``gpuship dockerfile`` both lock through here, so they share one lock."""

    project = replace(plan.project, requirements=plan.requirements)
    base = plan.first_base()
    replace_base = plan.config.replace_base_packages
    kept = base.lock_inputs((*plan.requirements, *extra_requirements), replace_base, cache)
    try:
        return lock_project(
            project,
            plan.platforms,
            plan.python_version,
            cache,
            locked=locked,
            extra_requirements=tuple(extra_requirements),
            progress=progress,
            constraints=(plan.gpu.constraints if plan.gpu is not None else ()) + kept.constraints,
            index=index_options(plan),
            **kept.options,
        )
    except GpushipError as exc:
        said = base.resolve_error(exc, replace_base)
        if said is None:
            raise
        raise said from exc


PRUNED_GROUPS = ("cuda", "frameworks", "deps", "project", "app")
"""The layers whose GPU machine code ``prune-archs`` rewrites: the environment, the project and the app (a kernel
library the app ships is pruned like a wheel's)."""


class PruneSummary(TypedDict):
    """What ``prune-archs`` did to a platform's layers (the build report's ``gpu_archs``)."""

    targets: list[str]
    kept_archs: list[str]
    saved: int
    libraries: list[LibraryPruneJSON]


class _ArchPruner:
    """Drops GPU machine code no target can run from the layers of :data:`PRUNED_GROUPS` (``prune-archs``), one
    layer at a time on the thread that made it (the pruner streams: a few MB whatever the library's size), and
    sums up what it did. A layer in which nothing is dropped is kept as it is."""

    def __init__(self, sel: ArchSelection, cache: Cache, progress: Progress) -> None:
        self._sel, self._cache, self._progress = sel, cache, progress
        self._key = "prune-archs:" + ",".join(t.sm for t in sel.targets)
        self._reports: dict[str, PruneReportJSON] = {}  # by the pruned layer's digest
        self._lock = threading.Lock()

    def finish(self, group: str, layer: Layer) -> Layer:
        """``layer`` with the GPU code no target runs dropped (``layer`` itself outside :data:`PRUNED_GROUPS`)."""
        if group not in PRUNED_GROUPS:
            return layer
        sel, cache = self._sel, self._cache
        self._progress.step(f"pruning GPU code in the {group} layer to {', '.join(t.sm for t in sel.targets)}")

        def transform(entries: Iterator[Entry]) -> tuple[Iterable[Entry] | None, PruneReportJSON]:
            new, report = prune_layer_entries(entries, sel, cache=cache)
            return (new if report.saved else None), report.to_json()

        new, report = rewrite_layer_meta(
            layer, transform, self._key, cache, comment=layer.comment + " (GPU code pruned)"
        )
        if report:
            with self._lock:
                self._reports[new.digest] = report
        return new

    def summary(self, layers: Iterable[Layer]) -> PruneSummary:
        """What pruning did to ``layers`` (the image's, in order: the report lists libraries in that order)."""
        kept: set[str] = set()
        saved = 0
        libraries: list[LibraryPruneJSON] = []
        for layer in layers:
            report = self._reports.get(layer.digest)
            if report:
                kept.update(report["kept_archs"])
                saved += int(report["saved"])
                libraries += report["libraries"]
        return {
            "targets": [t.sm for t in self._sel.targets],
            "kept_archs": sorted(kept, key=arch_sort_key),
            "saved": saved,
            "libraries": libraries,
        }


def _check_entries(gpu: GpuPlan, pruned: PruneSummary | None) -> list[Entry]:
    """gpuship-check and /etc/gpuship/gpu.json, with the architectures pruning kept."""

    entries = check_entries(gpu, python=f"{VENV}/bin/python")
    if pruned is None:
        return entries
    data = manifest_data(gpu, python=f"{VENV}/bin/python")
    data["pruned"] = {"targets": pruned["targets"], "archs": pruned["kept_archs"]}
    body = (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()
    return [Entry.file(e.path, body, e.mode) if e.path == MANIFEST_PATH.lstrip("/") else e for e in entries]


def index_options(plan: BuildPlan) -> IndexOptions:
    """The project's own index options, plus [tool.gpuship] index settings and any index the GPU plan needs."""
    idx = plan.project.index
    cfg = plan.config
    extra = tuple(idx.extra_index_urls) + tuple(cfg.extra_index_urls)
    if plan.index_urls:  # the PyTorch index for a torch variant: a CUDA line PyPI lacks, or the CPU build
        extra += tuple(u for u in plan.index_urls if u not in extra)
    return replace(
        idx,
        index_url=cfg.index_url or idx.index_url,
        extra_index_urls=extra,
        find_links=tuple(idx.find_links) + tuple(_local_link(plan.project.root, f) for f in cfg.find_links),
    )


def index_credentials(plan: BuildPlan) -> IndexCredentials:
    """The logins of the plan's private indexes (URLs, netrc, keyring: as uv finds them), for downloads."""

    return IndexCredentials.from_urls([*index_options(plan).uv_args(), *plan.project.uv_options])


def _local_link(root: Path, link: str) -> str:
    """A ``find-links`` folder relative to the project (``./wheels``) made absolute: uv reads the options from a
    requirements file elsewhere, where a relative path means nothing. URLs stay as they are."""
    if "://" in link or Path(link).is_absolute():
        return link
    return str((root / link).resolve())


@dataclass(frozen=True)
class _Runtime:
    requirements: tuple[str, ...]
    entries: tuple[Entry, ...]
    argv: tuple[str, ...]


def _function_runtime(plan: BuildPlan) -> _Runtime | None:
    ep = plan.config.entrypoint
    if ep is None or not ep.function:
        return None

    return _Runtime(tuple(runtime_requirements()), tuple(runtime_entries()), tuple(runtime_entrypoint(ep.function)))


def _build_platform(
    plan: BuildPlan,
    platform: Platform,
    lock: Lock,
    models: ModelSet,
    runtime: _Runtime | None,
    entrypoint: tuple[str, ...],
    cache: Cache,
    progress: Progress,
    preload: Preloader | None = None,
) -> PlatformResult:
    """One platform's image: the environment and the upper layers, the system libraries they need, then the
    base they grow on (:class:`gpuship.sources.base.Base`) with the image's config. ``preload`` hears each layer
    of the environment as it is final (it loads them into the engine meanwhile)."""
    base = plan.bases[platform]
    progress.step(f"[{platform}] installing the Python environment")
    ahead = (lambda layer: preload.add((layer,))) if preload is not None else None
    env, env_layers, upper, pruned = _python_layers(plan, platform, base, lock, models, runtime, cache, progress, ahead)
    if preload is not None:
        preload.floor_known()  # the base's floor is made on the preloader's thread: not twice at once
    cfg = plan.config
    packages: tuple[str, ...] = cfg.debian_packages()
    deps: tuple[LibDep, ...] = ()
    if cfg.find_libdeps:
        ours = [layer for _, layer in env_layers + upper]
        deps = base.system_libraries(ours, packages, cache, lambda c: image_env(plan, c), progress)
        if deps:
            packages = tuple(sorted(set(packages) | {d.package for d in deps}))
            for d in deps:
                progress.step(f"[{platform}] + {d.package} (for {d.soname}, needed by /{d.needed_by[0]})")
    started = base.start(packages, cache, progress)
    image, groups = _assemble(plan, started, env_layers, upper, models, entrypoint)
    rows = tuple(
        LayerRow(g, layer.digest, layer.size, layer.uncompressed_size, layer.reused, layer.comment)
        for g, layer in groups
    )
    return PlatformResult(
        platform,
        image,
        rows,
        started.packages,
        tuple((d.name, d.version) for d in env.distributions),
        deps,
        {"python": env.report, "gpu_archs": pruned},
        started.dropped,
    )


Groups = list[tuple[str, Layer]]


def _python_layers(
    plan: BuildPlan,
    platform: Platform,
    base: Base,
    lock: Lock,
    models: ModelSet,
    runtime: _Runtime | None,
    cache: Cache,
    progress: Progress,
    ahead: Callable[[Layer], None] | None = None,
) -> tuple[PythonEnv, Groups, Groups, PruneSummary | None]:
    """The environment's layers, and the upper ones (project, gpu-check, runtime, app or editable), GPU code
    pruned: ``(env, env layers, upper layers, prune report)``. ``ahead`` hears each environment layer, in order,
    as soon as it is final."""

    compression: BlobCompression = "none"  # layers are plain tars: outputs compress where bytes travel
    cfg = plan.config
    python = base.python
    prune = PruneRules(keep=tuple(cfg.keep), drop=tuple(cfg.drop), bytecode=cfg.bytecode)
    sel = ArchSelection.from_gpu_config(plan.config.gpu) if plan.gpu is not None else None
    pruner = _ArchPruner(sel, cache, progress) if sel is not None else None

    def finish(group: str, layer: Layer) -> Layer:
        """A layer made final where it was made: its GPU code pruned, and read for find-libdeps."""
        final = pruner.finish(group, layer) if pruner is not None else layer
        if cfg.find_libdeps:
            base.scan_ahead(final, cache)
        return final

    env = python_layers(
        base.installed(lock, cfg.replace_base_packages),  # what the base has is not installed again
        platform,
        python,
        cache,
        prune=prune,
        progress=progress,
        compression=compression,
        system_site_packages=base.keeps_packages,  # then the venv sees the base's site-packages
        credentials=index_credentials(plan),
        finish=finish,
        ready=ahead,
    )
    env_layers: Groups = list(env.layers)
    own: Groups = []  # the project's wheel and the app: pruned with the environment
    if plan.project.is_package and not plan.options.dev:
        own.append(("project", _project_layer(plan, platform, python, prune, models.app, cache, progress)))
    if not plan.options.dev:
        own.append(("app", app_layer(models.app, cfg.workdir, cache, compression=compression)))
    pruned: PruneSummary | None = None
    if pruner is not None:
        own = [(group, pruner.finish(group, layer)) for group, layer in own]
        pruned = pruner.summary(layer for _, layer in env_layers + own)
    # below the app: what changes with gpuship or the GPU plan, not with an edit of the project
    upper: Groups = []
    if plan.gpu is not None:
        entries = _check_entries(plan.gpu, pruned)
        key = "gpu-check:" + hashlib.sha256(b"".join(e.read() for e in entries)).hexdigest()
        layer = cached_layer(
            cache, key, lambda: entries, compression=compression, comment="gpuship-check and /etc/gpuship/gpu.json"
        )
        upper.append(("gpu-check", layer))
    if runtime is not None:
        layer = cached_layer(
            cache,
            "runtime:" + _self_key(),
            lambda: runtime.entries,
            compression=compression,
            comment="gpuship function runtime",
        )
        upper.append(("runtime", layer))
    if plan.options.dev:  # gpuship dev: the project is mounted at the workdir and installed in editable mode
        upper.append(("editable", editable_layer(plan, python, cache)))
    else:
        upper.append(("app", _app_with_project(dict(own), cache)))
    return env, env_layers, upper, pruned


def _app_with_project(own: dict[str, Layer], cache: Cache) -> Layer:
    """The top layer: the app's files, and for a package project its wheel installed into the venv, in one layer,
    so an edit of the project changes one layer (the one an engine and a registry are sent)."""
    app = own["app"]
    project = own.get("project")
    if project is None:
        return app
    return cached_layer(
        cache,
        f"app-with-project:{project.digest}:{app.digest}",
        lambda: [*spooled_entries(project, cache), *spooled_entries(app, cache)],
        comment=f"{app.comment}; {project.comment}",
    )


def _assemble(
    plan: BuildPlan,
    started: Started,
    env_layers: Groups,
    upper: Groups,
    models: ModelSet,
    entrypoint: tuple[str, ...],
) -> tuple[Image, Groups]:
    """The image: the base's (its layers, history and media-type family) with our config, then the environment,
    the base's layers that depend on the system packages (``Started.top``), and the upper layers."""
    cfg = plan.config
    config = ImageConfig(
        env=tuple(f"{k}={v}" for k, v in image_env(plan, started.config, models=True).items()),
        entrypoint=entrypoint,
        cmd=cfg.cmd,
        working_dir=cfg.workdir,
        user=cfg.user,
        labels={
            **started.config.labels,
            **plan.labels,
            **(plan.gpu.labels if plan.gpu is not None else {}),
            **mounts_label(models.mounts),
        },
        exposed_ports=cfg.ports,
    )
    image = with_config(started.image, config)
    # the models sit below the app layer: a code edit leaves their digests (and the chain IDs engines key on) alone
    at = len(upper) - 1 if upper and upper[-1][0] in ("app", "editable") else len(upper)
    upper = upper[:at] + [("model", m.layer) for m in models.layers] + upper[at:]
    base = [("base", layer) for layer in started.layers]
    groups = base + env_layers + [("base", layer) for layer in started.top] + upper
    image = append_layers(image, [layer for _, layer in env_layers], created_by="gpuship: python environment")
    image = append_layers(image, list(started.top), created_by="gpuship: system packages")
    image = append_layers(image, [layer for _, layer in upper[:at]], created_by="gpuship: app")
    image = append_layers(image, [m.layer for m in models.layers], created_by="gpuship: model")
    image = append_layers(image, [layer for _, layer in upper[at + len(models.layers) :]], created_by="gpuship: app")
    return with_created(image, plan.created), groups


def _project_layer(
    plan: BuildPlan,
    platform: Platform,
    python: PythonInfo,
    prune: PruneRules,
    app: AppFiles,
    cache: Cache,
    progress: Progress,
) -> Layer:
    """The project itself, built as a wheel and installed into the venv (its own layer, below the app files).

    Keyed by what the wheel is built from (:func:`project_source_key`), so a known project layer — on this machine
    or in the build cache — is used without building the wheel (whose isolated build fetches the backend)."""
    return cached_layer(
        cache,
        project_source_key(plan, platform, python, prune, app),
        lambda: install_project(plan.project, python, cache, platform=platform, prune=prune, progress=progress).entries,
        comment=f"project {plan.project.name} {plan.project.version}".rstrip(),
    )


#: Bump when what the project layer is made of, or how, changes.
PROJECT_LAYER_FORMAT = 1


def project_source_key(
    plan: BuildPlan, platform: Platform, python: PythonInfo, prune: PruneRules, app: AppFiles
) -> str:
    """What the project's wheel is built from: the project's files (those the app layer takes, by content), its
    ``[build-system]`` table, the version control's description when the version is dynamic (setuptools-scm,
    hatch-vcs), the Python, platform, pruning and byte code it is installed with. The build backend's own version is
    what ``[build-system] requires`` resolves to: pin it there for layers that stay byte-identical over time."""
    root = plan.project.root
    try:
        pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError):
        pyproject = {}
    dynamic = "version" in (pyproject.get("project", {}).get("dynamic") or []) or (root / "setup.py").is_file()
    minor = ".".join(python.version.split(".")[:2])
    parts = [
        "project-source",
        PROJECT_LAYER_FORMAT,
        app.key(),
        pyproject.get("build-system"),
        _vcs_description(root) if dynamic else "",
        minor,
        str(platform),
        VENV,
        prune.key(),
        host_python(minor).version if prune.bytecode != "none" else None,
    ]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _vcs_description(root: Path) -> str:
    """``git describe`` of the project (what setuptools-scm and hatch-vcs make a version of), or empty."""
    if not (root / ".git").exists() or shutil.which("git") is None:
        return ""
    proc = subprocess.run(  # noqa: S603 - a fixed argv
        ["git", "-C", str(root), "describe", "--tags", "--long", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.stdout.strip() if proc.returncode == 0 else ""


def _self_key() -> str:

    return __version__


def write_report(result: BuildResult, path: Path) -> None:
    """The build report (JSON) and, beside it, the SPDX 2.3 SBOM (``<name>.spdx.json``)."""

    path = Path(path)
    write_json(path, result.report_json())
    comps: list[Component] = []
    for p in result.platforms:
        comps += [Component("deb", n, v, a) for n, v, a in p.debian_packages]
        comps += [Component("pypi", n, v) for n, v in p.python_distributions]
    comps += model_components(result.models)
    write_spdx(sbom_path(path), result.plan.tag, result.digest, comps)


def sbom_path(report: Path) -> Path:
    """Where the SBOM goes beside a build report."""
    return report.with_name(report.name.removesuffix(".json") + ".spdx.json")


def model_components(models: ModelSet | None) -> list[Component]:
    """The SBOM's model entries: a hub repository at its revision, a fetched file and a project weight file with
    its sha256 (a project model directory is named without one)."""

    comps = []
    for m in models.records if models else ():
        if m.kind == "hf":
            comps.append(Component("huggingface", m.name, m.version))
        elif m.kind == "url":
            comps.append(Component("generic", m.name.rsplit("/", 1)[-1], m.version, sha256=m.version, download=m.name))
        elif m.kind == "project":
            comps.append(Component("generic", m.name, m.version or "dir", sha256=m.version))
    return comps


def layer_table_rows(platform: PlatformResult) -> list[tuple[str, str, str, str, str, str]]:
    """One platform's layers as text cells: layer, short digest, size, unpacked size, new/cached, contents."""
    return [
        (
            r.group,
            r.digest.removeprefix("sha256:")[:12],
            human_size(r.size),
            human_size(r.uncompressed_size),
            "cached" if r.reused else "new",
            r.what,
        )
        for r in platform.rows
    ]
