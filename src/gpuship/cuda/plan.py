"""The CUDA planner: pick the newest CUDA line that the driver, every target GPU and every framework allow,
rewrite the requirements for it, and say why.

Each input becomes a :class:`Rule` (a set of allowed CUDA lines and the reason); the plan is the newest line in
their intersection. When the intersection is empty the error names the rules that clash and the way out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from packaging.requirements import Requirement
from packaging.specifiers import Specifier, SpecifierSet
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import Version

from ..errors import GpuError
from ..oci.image import Platform
from . import data
from .compat import (
    DriverVersion,
    cuda_tag,
    driver_allows,
    major_of,
    min_driver,
    ptx_isa,
    required_driver,
    runs_on,
    sm,
    toolkit_builds_for,
    vt,
)
from .frameworks import FRAMEWORKS, Found, Line, admits, detect, parse_lines
from .gpus import Target
from .settings import GpuSettings

ALL_LINES: frozenset[str] = frozenset(data.LINES)


@dataclass(frozen=True)
class Rule:
    """What one input allows: ``allowed`` CUDA lines, ``why`` in words, ``hint`` the way out if it clashes."""

    who: str
    allowed: frozenset[str]
    why: str
    hint: str = ""
    #: lines the rule would also allow under minor-version compatibility (the driver rule only)
    mvc_lines: frozenset[str] = frozenset()


@dataclass(frozen=True)
class TorchChoice:
    """Where torch comes from for the chosen line."""

    releases: tuple[str, ...]  # "2.11", "2.12", ...
    line: str
    source: str  # "pypi" | "index"
    sass: tuple[str, ...]
    ptx: str

    @property
    def spec(self) -> str:
        first = self.releases[0]
        last = vt(self.releases[-1])
        return f">={first},<{last[0]}.{last[1] + 1}"

    def describe(self) -> str:
        rel = self.releases[0] if len(self.releases) == 1 else f"{self.releases[0]}-{self.releases[-1]}"
        where = "PyPI's default wheel" if self.source == "pypi" else f"the PyTorch index ({cuda_tag(self.line)})"
        return f"torch {rel} from {where}"


@dataclass(frozen=True)
class FrameworkArchs:
    """The architectures a framework in the image has code for: SASS, and PTX that newer GPUs JIT."""

    sass: tuple[str, ...]
    ptx: str = ""
    jit: bool = False  # compiles for the device at run time (NVRTC / NVVM / ptxas)


@dataclass(frozen=True)
class GpuPlan:
    """The outcome: the CUDA line, the rewritten requirements, and what the image carries for the GPU."""

    is_gpu: bool
    cuda: str = ""  # "13.0"; "" when not a GPU image
    requirements: tuple[str, ...] = ()
    #: pins that keep every CUDA library on the chosen line (uv --constraint / constraint-dependencies)
    constraints: tuple[str, ...] = ()
    #: extra package indexes the plan needs (the PyTorch index for a non-default torch variant)
    index_urls: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    targets: tuple[Target, ...] = ()
    frameworks: tuple[str, ...] = ()
    archs: Mapping[str, FrameworkArchs] = field(default_factory=dict)
    min_driver: str = ""  # the driver the image needs ("580.65.06")
    minor_version_compat: bool = False
    ptx_isa: str = ""
    platform: str = "linux/amd64"
    torch: TorchChoice | None = None
    lines: tuple[str, ...] = ()  # explanation

    def explain(self) -> list[str]:
        return list(self.lines)

    @property
    def require_cuda(self) -> str:
        """The CUDA version the driver must report (NVIDIA_REQUIRE_CUDA)."""
        if not self.cuda:
            return ""
        return f"{major_of(self.cuda)}.0" if self.minor_version_compat else self.cuda


def _fmt(lines: frozenset[str] | set[str]) -> str:
    """``{12.6, 12.8, 12.9}`` -> ``"12.6-12.9"``; runs over gpuship's line list."""
    if not lines:
        return "none"
    order = list(data.LINES)
    idx = sorted(order.index(x) for x in lines)
    runs: list[str] = []
    start = prev = idx[0]
    for i in idx[1:] + [None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        runs.append(order[start] if start == prev else f"{order[start]}-{order[prev]}")
        if i is not None:
            start = prev = i
    return ", ".join(runs)


def _machine(platform: Platform) -> str:
    return platform.machine


# -- torch -------------------------------------------------------------------------------------------------------


def _torch_archs(line: str, release: str, machine: str) -> tuple[tuple[str, ...], str] | None:
    for row_line, first, last, sass, ptx in data.TORCH_ARCHS:
        if row_line == line and vt(first) <= vt(release) <= vt(last):
            extra = data.TORCH_ARCHS_AARCH64_EXTRA.get(line, ()) if machine == "aarch64" else ()
            return tuple(sass) + tuple(extra), ptx
    return None


def _torch_options(found: Found, machine: str, with_index: bool) -> list[TorchChoice]:
    """Every (release, line, source) the torch requirement admits, one TorchChoice per release."""

    specs = [ln.req.specifier for ln in found.lines if ln.req is not None]
    options: list[TorchChoice] = []
    releases = sorted(set(data.TORCH_PYPI) | set(data.TORCH_INDEX), key=vt)
    for rel in releases:
        if not all(admits(_strip_local(s), rel, rel) for s in specs):
            continue
        pypi_line = data.TORCH_PYPI.get(rel, {}).get(machine)
        if pypi_line and pypi_line in ALL_LINES and not found.local_line:
            archs = _torch_archs(pypi_line, rel, machine)
            if archs:
                options.append(TorchChoice((rel,), pypi_line, "pypi", *archs))
        if with_index:
            for line in data.TORCH_INDEX.get(rel, ()):
                if machine not in data.TORCH_INDEX_MACHINES.get(major_of(line), ()):
                    continue
                if found.local_line and line != found.local_line:
                    continue
                archs = _torch_archs(line, rel, machine)
                if archs and line in ALL_LINES:
                    options.append(TorchChoice((rel,), line, "index", *archs))
    return options


def _strip_local(spec: SpecifierSet) -> SpecifierSet:
    """``==2.7.1+cu118`` -> ``==2.7.1``: the variant is handled by the planner, the release by the specifier."""
    return SpecifierSet(",".join(str(s).split("+", 1)[0] for s in spec))


def _torch_runs(opt: TorchChoice, targets: Sequence[Target]) -> bool:
    return all(runs_on(t.cc, opt.sass, opt.ptx) for t in targets)


# -- the planner -------------------------------------------------------------------------------------------------


def plan_gpu(
    requirements: Sequence[str],
    settings: GpuSettings,
    platform: Platform | str | None = None,
    *,
    local_wheels: Sequence[str] = (),
) -> GpuPlan:
    """Plan the CUDA side of an image for ``requirements`` (PEP 508 lines) on ``platform``.

    ``local_wheels`` are the file names of the wheels in the project's find-links folders: where a CPU image
    finds torch's CPU build (:func:`_plan_cpu`). Raises :class:`GpuError` when no CUDA line fits every input,
    naming the clash and the way out.

    In phases: the driver each target needs (:func:`_driver_floors`), one :class:`Rule` per input
    (:func:`_rules`), their intersection (:func:`_intersect`), and what the chosen line makes of the image
    (:func:`_gpu_plan`)."""
    plat = platform if isinstance(platform, Platform) else Platform.parse(platform or "linux/amd64")
    machine = _machine(plat)
    lines = parse_lines(requirements)
    found, pins = detect(lines, gpu_table_present=bool(settings.raw) or settings.enabled is True)
    frameworks = tuple(f for f in FRAMEWORKS if f in found and not (f == "torch" and found[f].cpu_pinned))

    if settings.cuda == "cpu" or settings.enabled is False or (not frameworks and settings.enabled is not True):
        return _plan_cpu(lines, found, settings, plat, local_wheels)

    if machine not in ("x86_64", "aarch64"):
        raise GpuError(
            f"CUDA images are built for linux/amd64 and linux/arm64, not {plat}", "choose one of those platforms"
        )
    _check_targets(settings.targets, plat)
    explain: list[str] = []
    drivers = _driver_floors(settings, explain)
    rules, torch_opts = _rules(settings, found, pins, frameworks, machine, drivers)
    chosen = _intersect(rules, found, settings)
    return _gpu_plan(chosen, rules, explain, lines, found, frameworks, torch_opts, settings, plat, machine)


#: A driver floor: the version, the targets it is for, and why.
_Floor = tuple[DriverVersion, list[str], str]


def _driver_floors(settings: GpuSettings, explain: list[str]) -> dict[str, _Floor]:
    """The driver the plan must support: min-driver, else R580; per target lowered to the GPU's last branch
    (K80: R470) and raised to the first driver that knows the GPU (B200: R570)."""
    base = settings.driver
    if settings.min_driver is None:
        explain.append(f"min-driver not set: assuming hosts run driver >= {base} (the R580 long-term branch)")
    base_note = "min-driver" if settings.min_driver is not None else "default R580"
    drivers: dict[str, _Floor] = {}
    for t in settings.targets or [None]:
        d, note = base, base_note
        if t is not None:
            last = t.last_branch
            if last and d.branch > int(last):
                if settings.min_driver is not None:
                    raise GpuError(
                        f"{t.label()}: the last driver branch for this GPU is R{last}, so min-driver "
                        f"{settings.min_driver} can never run on it",
                        f'set min-driver = "{last}" or drop {t.name} from targets',
                    )
                d, note = DriverVersion(last), f"the last branch for {t.name}"
                explain.append(
                    f"{t.label()}: its last driver branch is R{last}, so the image must run on driver {last}"
                )
            first = first_driver_branch(t.cc)
            if first and d.branch < int(first):
                d, note = DriverVersion(first), f"the first branch that drives {t.name}"
                explain.append(
                    f"{t.label()}: hosts with it run driver {first} or newer (its first CUDA toolkit's driver)"
                )
        key = str(d)
        if key in drivers:
            drivers[key][1].append(t.name if t else "")
        else:
            drivers[key] = (d, [t.name] if t else [], note)
    return drivers


def _rules(
    settings: GpuSettings,
    found: Mapping[str, Found],
    pins: Sequence[tuple[int, str]],
    frameworks: Sequence[str],
    machine: str,
    drivers: Mapping[str, _Floor],
) -> tuple[list[Rule], list[TorchChoice]]:
    """One rule per input, in the order they are explained: what the user asked for, the targets'
    architectures, library pins, frameworks, and last the driver (the others say what is wanted, the driver what
    the hosts can run)."""
    targets = settings.targets
    rules: list[Rule] = []
    if settings.cuda != "auto":
        if "." in settings.cuda:
            asked = frozenset({settings.cuda})
        else:
            asked = frozenset(x for x in data.LINES if major_of(x) == int(settings.cuda))
        rules.append(Rule(f'cuda = "{settings.cuda}"', asked, f"asks for CUDA {_fmt(asked)}", 'set cuda = "auto"'))
    for t in targets:
        ok = frozenset(x for x in data.LINES if toolkit_builds_for(x, t.cc))
        dropped = next((v for k, v in data.DROPPED.items() if not any(major_of(x) >= k for x in ok)), "")
        why = f"needs CUDA {_fmt(ok)}" + (f" ({dropped})" if dropped else "")
        rules.append(Rule(t.label(), ok, why, f"drop {t.name} from targets, or build a separate image for it"))
    for major, text in pins:
        ok = frozenset(x for x in data.LINES if major_of(x) == major)
        rules.append(Rule(text, ok, f"is a CUDA {major} library", f"remove the {text} pin"))
    framework_rules, torch_opts = _framework_rules(settings, found, frameworks, machine)
    rules += framework_rules
    for d, names, note in sorted(drivers.values(), key=lambda x: x[0].version, reverse=True):
        on = f" for {', '.join(names)}" if names and len(drivers) > 1 else ""
        rules.append(_driver_rule(d, note + on, settings.minor_version_compat))
    return rules, torch_opts


def _framework_rules(
    settings: GpuSettings, found: Mapping[str, Found], frameworks: Sequence[str], machine: str
) -> tuple[list[Rule], list[TorchChoice]]:
    """What each framework's releases allow (torch: its wheels, the choices kept for later)."""
    rules: list[Rule] = []
    torch_opts: list[TorchChoice] = []
    for name in frameworks:
        f = found[name]
        if name == "torch":
            rule, torch_opts = _torch_rule(f, settings.targets, machine, settings)
            rules.append(rule)
            continue
        ok = frozenset(x for x in data.LINES if f.majors is None or major_of(x) in f.majors)
        why = f"allows CUDA {_fmt(ok)}" + (f" ({f.why_majors})" if f.why_majors else "")
        rules.append(Rule(name, ok, why, f"loosen the {name} requirement"))
        if name == "jax":
            for t in settings.targets:
                ok_t = frozenset(x for x in ok if vt(t.cc) >= vt(data.JAX_CUDA[major_of(x)][2]))
                rules.append(
                    Rule(
                        f"jax on {t.label()}",
                        ok_t,
                        f"runs on CUDA {_fmt(ok_t)} (jax[cuda13] needs sm_75 or newer, jax[cuda12] sm_52)",
                        f"use CUDA 12 (jax[cuda12]) for {t.name}",
                    )
                )
    return rules, torch_opts


def _gpu_plan(
    chosen: frozenset[str],
    rules: Sequence[Rule],
    explain: list[str],
    lines: Sequence[Line],
    found: Mapping[str, Found],
    frameworks: tuple[str, ...],
    torch_opts: Sequence[TorchChoice],
    settings: GpuSettings,
    plat: Platform,
    machine: str,
) -> GpuPlan:
    """What the newest line of ``chosen`` makes of the image: the requirements rewritten, constraints, torch's
    release and index, the architectures, env, labels and the explanation."""
    targets, mvc = settings.targets, settings.minor_version_compat
    line = max(chosen, key=vt)
    major = major_of(line)
    torch_choice: TorchChoice | None = None  # torch: the newest release for the line, PyPI first
    index_urls: list[str] = []
    if "torch" in found:
        torch_choice = _choose_torch(list(torch_opts), line, targets, settings)
        if torch_choice.source == "index":
            index_urls.append(_index_url(settings.torch_index, line))
    rewrites: list[str] = []
    new_reqs = _rewrite(lines, found, line, torch_choice, rewrites)
    constraints = [f"{pkg}=={line}.*" for pkg in data.TOOLKIT_VERSIONED.get(major, ())]
    constraints += [f"{pkg}=={major}.*" for pkg in data.MAJOR_VERSIONED]
    need_driver = required_driver(line, mvc)
    plan_lines = _explain_choice(chosen, line, mvc, targets, frameworks, torch_choice, index_urls)
    explained = plan_lines[:1] + [f"  {r.who}: {r.why}" for r in rules] + explain + plan_lines[1:] + rewrites
    labels = {
        "io.gpuship.cuda": line,
        "io.gpuship.min-driver": need_driver,
        "io.gpuship.frameworks": ",".join(frameworks),
    }
    if targets:
        labels["io.gpuship.targets"] = ",".join(dict.fromkeys(t.sm for t in targets))
    return GpuPlan(
        is_gpu=True,
        cuda=line,
        requirements=tuple(new_reqs),
        constraints=tuple(constraints),
        index_urls=tuple(index_urls),
        env={
            "NVIDIA_VISIBLE_DEVICES": "all",
            "NVIDIA_DRIVER_CAPABILITIES": ",".join(settings.driver_capabilities),
            "NVIDIA_REQUIRE_CUDA": f"cuda>={major}.0" if mvc else f"cuda>={line}",
        },
        labels=labels,
        targets=targets,
        frameworks=frameworks,
        archs=_archs(found, line, torch_choice, machine),
        min_driver=need_driver,
        minor_version_compat=mvc,
        ptx_isa=ptx_isa(line),
        platform=str(plat),
        torch=torch_choice,
        lines=tuple(explained),
    )


# -- a CPU image ---------------------------------------------------------------------------------------------------

#: The frameworks whose CPU builds carry a ``+cpu`` local version (on the PyTorch index, or in a wheel folder).
CPU_BUILDS = ("torch", *data.TORCH_COMPANIONS)


def _plan_cpu(
    lines: Sequence[Line],
    found: Mapping[str, Found],
    settings: GpuSettings,
    plat: Platform,
    local_wheels: Sequence[str],
) -> GpuPlan:
    """A CPU image: no GPU settings; when asked for (``cuda = "cpu"``, ``enabled = false``) the frameworks take
    their CPU builds: torch from ``torch-index`` (tag ``cpu``) or a find-links folder, ``jax`` without its CUDA
    plugin. PyPI's Linux torch is a CUDA build (with several GB of ``nvidia-*`` wheels) from 2.11 on every
    architecture, and always on x86_64: without a CPU source ``cuda = "cpu"`` is an error, and ``enabled = false``
    says what it ships."""
    machine = plat.machine
    asked = 'cuda = "cpu"' if settings.cuda == "cpu" else ("enabled = false" if settings.enabled is False else "")
    torch = found.get("torch")
    if asked:
        explain = [f"a CPU image ({asked}): no GPU settings; frameworks take their CPU builds"]
    elif torch is not None and torch.cpu_pinned:
        pinned = next(ln.text.strip() for ln in torch.lines)
        explain = [f"{pinned} is torch's CPU build: a CPU image, no GPU settings"]
    else:
        explain = [
            "no GPU framework in the requirements (torch, cupy, numba-cuda, jax[cuda], cuda-python, pycuda): "
            "a CPU image, no GPU settings"
        ]
    out = [ln.text for ln in lines]
    index_urls: list[str] = []
    if asked and torch is not None and not torch.cpu_pinned:
        index_urls = _cpu_torch(lines, found, settings, machine, local_wheels, asked, out, explain)
    if asked and "cupy" in found:
        if settings.cuda == "cpu":
            raise GpuError(
                f'[tool.gpuship.gpu] cuda = "cpu", but {found["cupy"].lines[0].text.strip()} has no CPU build',
                'remove it from the requirements, or build a GPU image (cuda = "auto")',
            )
        explain.append("note: cupy has no CPU build; it stays as written and needs a GPU (and CUDA libraries)")
    if asked and "jax" in found:
        for ln in found["jax"].lines:
            req = ln.req
            if req is None or canonical(req.name) != "jax" or not any(e.startswith("cuda") for e in req.extras):
                continue
            marker = str(req.marker) if req.marker else ""
            new = _fmt_req(req.name, [e for e in req.extras if not e.startswith("cuda")], str(req.specifier), marker)
            out[ln.index] = new
            explain.append(f"requirement: {ln.text.strip()} -> {new} (JAX's CPU build: no CUDA plugin)")
    return GpuPlan(
        is_gpu=False, requirements=tuple(out), index_urls=tuple(index_urls), platform=str(plat), lines=tuple(explain)
    )


def cpu_wheel_versions(local_wheels: Sequence[str], machine: str) -> dict[str, list[str]]:
    """``+cpu`` builds among wheel file names, per framework, newest first, for ``machine`` (x86_64 / aarch64)."""

    out: dict[str, set[Version]] = {}
    for name in local_wheels:
        try:
            dist, version, _, tags = parse_wheel_filename(name)
        except InvalidWheelFilename:
            continue
        if version.local != "cpu" or canonical(dist) not in CPU_BUILDS:
            continue
        if any(t.platform == "any" or t.platform.endswith(machine) for t in tags):
            out.setdefault(canonical(dist), set()).add(version)
    return {k: [str(v) for v in sorted(vs, reverse=True)] for k, vs in out.items()}


def _cpu_torch(
    lines: Sequence[Line],
    found: Mapping[str, Found],
    settings: GpuSettings,
    machine: str,
    local_wheels: Sequence[str],
    asked: str,
    out: list[str],
    explain: list[str],
) -> list[str]:
    """Point torch (and torchvision, torchaudio) at their CPU builds, in place in ``out``; the index URLs needed."""
    if settings.torch_index:
        url = _index_url_for(settings.torch_index, "cpu")
        explain.append(f"torch: the CPU build (tag cpu) from {url}, searched before PyPI")
        return [url]
    have = cpu_wheel_versions(local_wheels, machine)
    torch_lines = [ln for ln in found["torch"].lines if ln.req is not None]
    companions = [ln for ln in lines if ln.req is not None and ln.name in data.TORCH_COMPANIONS]
    pick: dict[str, str] = {}
    for ln in torch_lines + companions:
        assert ln.req is not None
        ok = [v for v in have.get(ln.name, []) if ln.req.specifier.contains(v, prereleases=True)]
        if ok:
            pick[ln.name] = ok[0]
    if "torch" in pick:
        for ln in torch_lines + companions:
            assert ln.req is not None
            if ln.name not in pick:
                continue
            marker = str(ln.req.marker) if ln.req.marker else ""
            new = _fmt_req(ln.req.name, list(ln.req.extras), f"=={pick[ln.name]}", marker)
            out[ln.index] = new
            explain.append(f"requirement: {ln.text.strip()} -> {new} (the CPU build, from a find-links folder)")
        return []
    specs = [ln.req.specifier for ln in torch_lines if ln.req is not None]
    cpu_on_pypi = [
        r
        for r, by_machine in data.TORCH_PYPI.items()
        if machine in by_machine and by_machine[machine] is None and all(admits(_strip_local(sp), r, r) for sp in specs)
    ]
    if cpu_on_pypi:
        last = max(cpu_on_pypi, key=vt)
        for ln in torch_lines:
            assert ln.req is not None
            marker = str(ln.req.marker) if ln.req.marker else ""
            nxt = vt(last)
            new = _fmt_req(
                ln.req.name, list(ln.req.extras), _join_spec(str(ln.req.specifier), f"<{nxt[0]}.{nxt[1] + 1}"), marker
            )
            out[ln.index] = new
            explain.append(
                f"requirement: {ln.text.strip()} -> {new} (PyPI's {machine} torch is a CPU build up to {last})"
            )
        return []
    cuda_line = data.TORCH_PYPI.get(max(data.TORCH_PYPI, key=vt), {}).get(machine) or "13.0"
    where_from = (
        "set [tool.gpuship.gpu] torch-index to the PyTorch wheel index URL ({tag} becomes cpu), or find-links "
        "to a folder of torch-*+cpu wheels"
    )
    if settings.cuda == "cpu":
        raise GpuError(
            f"[tool.gpuship.gpu] cuda = \"cpu\", but torch's CPU build is not on PyPI for {machine} (PyPI's torch is "
            f"the CUDA {cuda_line} build, several GB with its nvidia-* wheels)",
            where_from,
        )
    explain.append(
        f"note: torch from PyPI is its CUDA build for {machine} (several GB of nvidia-* wheels, unused here); "
        f'for the CPU build set cuda = "cpu" and {where_from.removeprefix("set ")}'
    )
    return []


def first_driver_branch(cc: str) -> str | None:
    """The first driver branch that drives a GPU: the driver of the first toolkit that builds for its
    architecture (B200, sm_100: CUDA 12.8 -> R570). Inferred from the toolkit table, not a separate source."""
    for line in sorted(data.ARCHS, key=vt):
        if cc in data.ARCHS[line] and line in data.MIN_DRIVER:
            return str(vt(data.MIN_DRIVER[line])[0])
    return None


def _check_targets(targets: Sequence[Target], plat: Platform) -> None:
    for t in targets:
        if t.kind == "tegra" and t.cc != "11.0":
            jp = "JetPack 6 (L4T r36.4, CUDA 12.6)" if t.cc == "8.7" else "JetPack 5 (L4T r35, CUDA 11.4)"
            raise GpuError(
                f"{t.label()} is a Jetson (Tegra) GPU on {jp}: PyPI's aarch64 CUDA wheels are built for SBSA servers, "
                "not Tegra, so gpuship cannot build it from PyPI wheels",
                "build on an l4t base with NVIDIA's Jetson wheel index, or target Thor (CUDA 13, sm_110)",
            )
        if t.cc == "10.1":
            raise GpuError(
                f"{t.label()}: sm_101 is Thor's name before CUDA 13 (JetPack only); CUDA 13 renamed it sm_110",
                'use targets = ["Thor"] (sm_110 on CUDA 13)',
            )
        if t.cc == "11.0" and plat.machine != "aarch64":
            raise GpuError(f"{t.label()} is an arm64 system, but the platform is {plat}", "build for linux/arm64")


def _driver_rule(driver: DriverVersion, note: str, mvc: bool) -> Rule:
    allowed = frozenset(x for x in data.LINES if driver_allows(driver, x, mvc))
    who = f"driver {driver} ({note}" + (", minor-version compatibility)" if mvc else ")")
    if allowed:
        why = f"runs CUDA {_fmt(allowed)}"
    else:
        oldest = data.LINES[0]
        why = f"runs no CUDA line gpuship builds (the oldest, {oldest}, needs {required_driver(oldest, mvc)})"
    with_mvc = frozenset(x for x in data.LINES if driver_allows(driver, x, True)) - allowed
    hint = "raise min-driver (update the hosts' driver)"
    return Rule(who, allowed, why, hint, mvc_lines=with_mvc if not mvc else frozenset())


def _torch_rule(
    f: Found, targets: Sequence[Target], machine: str, settings: GpuSettings
) -> tuple[Rule, list[TorchChoice]]:
    with_index = bool(settings.torch_index)
    opts = _torch_options(f, machine, with_index)
    spec = ",".join(str(ln.req.specifier) for ln in f.lines if ln.req is not None and str(ln.req.specifier))
    who = f"torch{spec}" if spec else "torch"
    runnable = [o for o in opts if _torch_runs(o, targets)]
    allowed = frozenset(o.line for o in runnable)
    # what the PyTorch index would add, for the way out
    index_opts = [o for o in _torch_options(f, machine, True) if _torch_runs(o, targets)]
    index_only = frozenset(o.line for o in index_opts) - allowed
    parts = []
    if runnable:
        src = "" if with_index else " on PyPI"
        parts.append(f"has wheels{src} for CUDA {_fmt(allowed)}" + (" that run on every target" if targets else ""))
    elif opts:
        lacking = [t.label() for t in targets if not any(runs_on(t.cc, o.sass, o.ptx) for o in opts)]
        parts.append(
            f"has no wheel{'' if with_index else ' on PyPI'} with kernels for {', '.join(lacking) or 'every target at once'}"
        )
    else:
        parts.append(
            f"has no CUDA wheel for {machine}" + ("" if with_index else " on PyPI") + " that the requirement admits"
        )
    hint = ""
    if index_only and not with_index:
        old = [o for o in index_opts if o.line in index_only]
        best = max(old, key=lambda o: (vt(o.line), vt(o.releases[0])))
        hint = (
            f"torch {best.releases[0]} ({cuda_tag(best.line)}) is on the PyTorch index: set [tool.gpuship.gpu] "
            "torch-index to the PyTorch wheel index URL (with {tag} for the variant)"
        )
    if targets:
        old_cc = [t for t in targets if vt(t.cc) < (5, 0)]
        if old_cc:
            parts.append(
                f"{old_cc[0].sm} needs CUDA 11.x (CUDA 12.0 dropped Kepler) and the newest torch with CUDA 11 wheels "
                f"is {data.TORCH_LAST_CUDA11} ({cuda_tag('11.8')}, on the PyTorch index only)"
            )
    if not hint:
        hint = "loosen the torch requirement or drop the targets its wheels lack"
    return Rule(who, allowed, "; ".join(parts), hint), runnable


def _intersect(rules: Sequence[Rule], found: Mapping[str, Found], settings: GpuSettings) -> frozenset[str]:
    """The lines every rule allows; on a clash, a GpuError naming the rules that exclude each other."""
    current = ALL_LINES
    binding: list[Rule] = []
    for rule in rules:
        nxt = current & rule.allowed
        if nxt:
            if nxt != current:
                binding.append(rule)
            current = nxt
            continue
        if not rule.allowed:
            raise GpuError(f"no CUDA line fits: {rule.who} {rule.why}", _hint(rule, current) or None)
        # the earlier rules that, with this one, leave nothing: those that shrink this rule's set to empty
        culprits: list[Rule] = []
        left = rule.allowed
        for b in sorted(binding, key=lambda b: len(b.allowed & rule.allowed)):
            if left & b.allowed != left:
                culprits.append(b)
                left = left & b.allowed
            if not left:
                break
        against = "; ".join(f"{b.who} {b.why}" for b in culprits)
        hints = [_hint(rule, current)] + [_hint(b, rule.allowed) for b in culprits]
        raise GpuError(
            f"no CUDA line fits: {rule.who} {rule.why}, but {against}",
            "; or ".join(dict.fromkeys(h for h in hints if h)) or None,
        )
    return current


def _hint(rule: Rule, others: frozenset[str]) -> str:
    """The rule's way out, with minor-version compatibility offered only where it would reach a wanted line."""
    useful = rule.mvc_lines & others
    if useful:
        return (
            f"{rule.hint}, or set minor-version-compat = true to run CUDA {_fmt(useful)} on it "
            "(then every kernel must be prebuilt for the targets: no PTX JIT of newer code)"
        )
    return rule.hint


def _choose_torch(
    opts: Sequence[TorchChoice], line: str, targets: Sequence[Target], settings: GpuSettings
) -> TorchChoice:
    here = [o for o in opts if o.line == line]
    if settings.torch_index:
        best_rel = max(vt(o.releases[0]) for o in here)
        src = "pypi" if any(o.source == "pypi" and vt(o.releases[0]) == best_rel for o in here) else "index"
    else:
        src = "pypi"
    chosen = sorted((o for o in here if o.source == src), key=lambda o: vt(o.releases[0]))
    rels = tuple(o.releases[0] for o in chosen)
    first = chosen[-1]
    # the SASS/PTX of the newest release (the one the resolver picks); older ones in range have at least the same
    # for every target (all were checked to run)
    return TorchChoice(rels, line, src, first.sass, first.ptx)


def _index_url(template: str, line: str) -> str:
    return _index_url_for(template, cuda_tag(line))


def _index_url_for(template: str, tag: str) -> str:
    """``torch-index`` with its variant tag (``cu130``, ``cpu``) put in."""
    if "{tag}" in template:
        return template.replace("{tag}", tag)
    if "{cuda}" in template:
        return template.replace("{cuda}", tag)
    return f"{template}/{tag}"


def _rewrite(
    lines: Sequence[Line], found: Mapping[str, Found], line: str, torch: TorchChoice | None, explain: list[str]
) -> list[str]:
    major = major_of(line)
    out = [ln.text for ln in lines]
    for name, f in found.items():
        for ln in f.lines:
            req = ln.req
            assert req is not None
            new = _rewrite_one(name, req, major, line, torch, explain)
            if new != ln.text.strip():
                out[ln.index] = new
    return out


def _fmt_req(name: str, extras: Sequence[str], spec: str, marker: str) -> str:
    text = name + (f"[{','.join(sorted(set(extras)))}]" if extras else "") + spec
    return f"{text}; {marker}" if marker else text


def _rewrite_one(
    name: str, req: Requirement, major: int, line: str, torch: TorchChoice | None, explain: list[str]
) -> str:
    marker = str(req.marker) if req.marker else ""
    spec = str(req.specifier)
    original = str(req)
    if req.url:
        return original
    if name == "torch" and torch is not None:
        narrowed = _join_spec(spec, torch.spec)
        new = _fmt_req(req.name, list(req.extras), narrowed, marker)
        explain.append(f"requirement: {original} -> {new} ({torch.describe()} is built for CUDA {line})")
        return new
    if name == "cupy":
        pkg, extra, _, _ = data.CUPY[major]
        extras = [e for e in req.extras] + ([extra] if extra else [])
        new = _fmt_req(pkg, extras, spec, marker)
        if new != original:
            why = f"CuPy's CUDA {major} wheel" + (f"; [{extra}] brings the CUDA libraries from PyPI" if extra else "")
            explain.append(f"requirement: {original} -> {new} ({why})")
        if not extra:
            explain.append(
                f"note: {pkg} has no [ctk] extra: it needs the CUDA {major} libraries from nvidia-*-cu{major} wheels"
            )
        return new
    if name == "numba-cuda":
        extras = [e for e in req.extras if e not in ("cu11", "cu12", "cu13")] + [data.NUMBA_CUDA_EXTRA[major]]
        new = _fmt_req(req.name, extras, spec, marker)
        if new != original:
            explain.append(
                f"requirement: {original} -> {new} (without [{data.NUMBA_CUDA_EXTRA[major]}]: "
                '"NvvmSupportError: libNVVM cannot be found")'
            )
        return new
    if name == "jax":
        if canonical(req.name) != "jax":
            return original
        extra = data.JAX_CUDA[major][0]
        extras = [e for e in req.extras if not e.startswith("cuda")] + [extra]
        new = _fmt_req(req.name, extras, spec, marker)
        if new != original:
            local = any(e.endswith("local") for e in req.extras)
            why = (
                "the -local extras expect a system CUDA, which gpuship images do not have"
                if local
                else f"JAX's CUDA {major} plugin and libraries"
            )
            explain.append(f"requirement: {original} -> {new} ({why})")
        return new
    if name == "cuda-bindings":
        if canonical(req.name) == "cuda-core":
            extras = [e for e in req.extras if not e.startswith("cu")] + [f"cu{major}"]
            new = _fmt_req(req.name, extras, spec, marker)
        else:
            new = _fmt_req(req.name, list(req.extras), _join_spec(spec, f"=={major}.*"), marker)
        if new != original:
            explain.append(f"requirement: {original} -> {new} (the CUDA {major} bindings)")
        return new
    return original


def canonical(name: str) -> str:
    return canonicalize_name(name)


def _join_spec(user: str, extra: str) -> str:
    """``>=2.6`` and ``>=2.11,<2.15`` -> ``>=2.11,<2.15``: the conjunction, without bounds another bound implies."""
    if not user:
        return extra
    specs = list(SpecifierSet(user)) + list(SpecifierSet(extra))
    lower = [s for s in specs if s.operator in (">=", ">") and "*" not in s.version]
    upper = [s for s in specs if s.operator in ("<", "<=") and "*" not in s.version]

    def key(s: Specifier) -> tuple[Version, int]:
        return Version(s.version), (1 if s.operator in (">", "<=") else 0)

    best = {id(max(lower, key=key)) if lower else 0, id(min(upper, key=key)) if upper else 0}
    out: list[str] = []
    for s in specs:  # in the order written: the user's first
        if (s in lower or s in upper) and id(s) not in best:
            continue
        if str(s) not in out:
            out.append(str(s))
    return ",".join(out)


def _archs(found: Mapping[str, Found], line: str, torch: TorchChoice | None, machine: str) -> dict[str, FrameworkArchs]:
    toolkit = tuple(data.ARCHS[line])
    out: dict[str, FrameworkArchs] = {}
    for name in FRAMEWORKS:
        if name not in found:
            continue
        if name == "torch" and torch is not None:
            out[name] = FrameworkArchs(tuple(sm(a) for a in torch.sass), sm(torch.ptx) if torch.ptx else "")
        elif name in ("cupy", "numba-cuda"):
            out[name] = FrameworkArchs(tuple(sm(a) for a in toolkit), "", jit=True)
        elif name == "jax":
            low = vt(data.JAX_CUDA[major_of(line)][2])
            out[name] = FrameworkArchs(tuple(sm(a) for a in toolkit if vt(a) >= low), "", jit=True)
    return out


def _explain_choice(
    chosen: frozenset[str],
    line: str,
    mvc: bool,
    targets: Sequence[Target],
    frameworks: Sequence[str],
    torch: TorchChoice | None,
    index_urls: Sequence[str],
) -> list[str]:
    need = required_driver(line, mvc)
    head = f"CUDA {line}: the newest line that every input allows (allowed: {_fmt(chosen)})"
    out = [head]
    out.append(
        f"driver: the image needs driver >= {need}"
        + (f" (minor-version compatibility for CUDA {major_of(line)}.x; strict: {min_driver(line)})" if mvc else "")
        + f"; PTX from this toolkit is ISA {ptx_isa(line)}"
    )
    if mvc:
        out.append(
            "note: under minor-version compatibility the driver cannot JIT PTX newer than its own CUDA version: "
            "code must carry SASS for each target (numba-cuda, CuPy and JAX compile at run time and may fail)"
        )
    if targets:
        out.append("targets: " + ", ".join(t.label() for t in targets))
    if torch is not None:
        out.append(
            f"torch: {torch.describe()} (SASS {', '.join(sm(a) for a in torch.sass)}"
            + (f", PTX {sm(torch.ptx)}" if torch.ptx else "")
            + ")"
        )
    for url in index_urls:
        out.append(f"index: torch for {cuda_tag(line)} comes from {url}")
    major = major_of(line)
    if data.TOOLKIT_VERSIONED.get(major):
        share = f" and {', '.join(frameworks)} share one copy of each" if len(frameworks) > 1 else ""
        out.append(
            f"constraints: cuda-toolkit and the toolkit-versioned nvidia-* wheels pinned to {line}.*, so every CUDA "
            f"library comes from the {line} toolkit{share}"
        )
    return out
