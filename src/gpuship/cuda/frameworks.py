"""The GPU frameworks in a requirement list, and what each allows: CUDA lines, architectures, package names.

Each framework is found by its package names (``torch``, ``cupy``/``cupy-cuda12x``, ``numba-cuda``,
``jax[cuda12]``, ``cuda-python``/``cuda-bindings``); :func:`detect` returns them with the requirement lines they
came from so the planner can rewrite exactly those lines.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from . import data
from .compat import major_of, vs, vt

FRAMEWORKS = ("torch", "cupy", "numba-cuda", "jax", "cuda-bindings", "pycuda")

#: The Python module each framework is imported as (for gpuship-check).
MODULES = {
    "torch": "torch",
    "cupy": "cupy",
    "numba-cuda": "numba.cuda",
    "jax": "jax",
    "cuda-bindings": "cuda.bindings",
    "pycuda": "pycuda.driver",
}


@dataclass(frozen=True)
class Line:
    """One requirement line: its position, text, and the parsed requirement (None for option lines)."""

    index: int
    text: str
    req: Requirement | None

    @property
    def name(self) -> str:
        return canonicalize_name(self.req.name) if self.req else ""


def parse_lines(requirements: Sequence[str]) -> list[Line]:
    out = []
    for i, text in enumerate(requirements):
        stripped = text.strip()
        req: Requirement | None = None
        if stripped and not stripped.startswith(("-", "#")):
            try:
                req = Requirement(stripped)
            except InvalidRequirement:
                req = None
        out.append(Line(i, text, req))
    return out


@dataclass
class Found:
    """A framework in the requirements: its lines, and the CUDA majors the way they are written allows."""

    name: str
    lines: list[Line] = field(default_factory=list)
    majors: set[int] | None = None  # None: any major the framework has
    why_majors: str = ""
    local_line: str = ""  # torch==2.7.1+cu118: the variant the user pinned
    cpu_pinned: bool = False  # torch==2.13.0+cpu: the CPU build, no GPU framework
    jax_local: bool = False  # jax[cuda12-local]: asked for a system CUDA

    def restrict(self, majors: set[int], why: str) -> None:
        self.majors = majors if self.majors is None else self.majors & majors
        self.why_majors = f"{self.why_majors}; {why}" if self.why_majors else why


_CUPY_VARIANT = re.compile(r"^cupy-cuda(\d+)x$")
_NV_SUFFIX = re.compile(r"^nvidia-.+-cu(\d+)$")


def admits(spec: SpecifierSet, first: str, last: str) -> bool:
    """Whether ``spec`` admits some release between ``first`` and ``last`` (inclusive, compared by major.minor).

    A conjunction of specifiers is satisfied, if at all, next to one of its own versions, so only those, their
    neighbours and the range's ends are probed."""
    if not str(spec):
        return True
    lo, hi = vt(first)[:2], vt(last)[:2]
    cands: set[tuple[int, ...]] = {lo + (0,), hi + (0,)}
    locals_: set[str] = {""}
    for s in spec:
        text = s.version.replace(".*", "")
        if "+" in text:
            text, local = text.split("+", 1)
            locals_.add("+" + local)
        try:
            base = Version(text).release
        except InvalidVersion:
            continue
        cands.add(base)
        for i in range(len(base)):
            cands.add(base[:i] + (base[i] + 1,))
            if base[i] > 0:
                cands.add(base[:i] + (base[i] - 1,) + (99,))
        cands.add(base + (0,))
    for c in sorted(cands):
        if not lo <= c[:2] <= hi:
            continue
        for local in locals_:
            if spec.contains(vs(c) + local, prereleases=False):
                return True
    return False


def detect(lines: Sequence[Line], gpu_table_present: bool) -> tuple[dict[str, Found], list[tuple[int, str]]]:
    """The GPU frameworks in ``lines``, and the CUDA-major-specific library pins (``nvidia-cublas-cu12``).

    ``jax`` without a CUDA extra counts only when the project has a ``[tool.gpuship.gpu]`` table (otherwise it
    is CPU jax)."""
    found: dict[str, Found] = {}
    pins: list[tuple[int, str]] = []
    for line in lines:
        req = line.req
        if req is None or line.name in data.TORCH_COMPANIONS:
            continue
        kind = _framework_of(line.name)
        if kind is None:
            m = _NV_SUFFIX.match(line.name)
            if m:
                pins.append((int(m.group(1)), line.text.strip()))
            continue
        if kind == "jax" and line.name == "jax" and not _cuda_extras(req) and not gpu_table_present:
            continue  # CPU jax
        f = found.setdefault(kind, Found(kind))
        f.lines.append(line)
        _READERS[kind](f, line, req)
    return found, pins


def _framework_of(name: str) -> str | None:
    if name == "torch":
        return "torch"
    if name == "cupy" or _CUPY_VARIANT.match(name):
        return "cupy"
    if name == "numba-cuda":
        return "numba-cuda"
    if name == "jax" or name.startswith(("jax-cuda12", "jax-cuda13")):
        return "jax"
    if name == "pycuda":
        return "pycuda"
    if name in ("cuda-python", "cuda-bindings", "cuda-core"):
        return "cuda-bindings"
    return None


def _cuda_extras(req: Requirement) -> set[str]:
    return {e for e in req.extras if e.startswith("cuda")}


def _read_torch(f: Found, line: Line, req: Requirement) -> None:
    for s in req.specifier:
        if s.version.endswith("+cpu"):
            f.cpu_pinned = True
        m = re.search(r"\+cu(\d+)$", s.version)
        if m:
            digits = m.group(1)
            f.local_line = f"{int(digits[:-1])}.{digits[-1]}"
            f.restrict({major_of(f.local_line)}, f"{line.text.strip()} pins the cu{digits} variant")


def _read_cupy(f: Found, line: Line, req: Requirement) -> None:
    m = _CUPY_VARIANT.match(line.name)
    if m:
        major = int(m.group(1))
        f.restrict({major}, f"{line.name} is the CUDA {major} build")
    allowed = {mj for mj, (_, _, first, last) in data.CUPY.items() if admits(req.specifier, first, last)}
    if str(req.specifier) and allowed != set(data.CUPY):
        f.restrict(allowed, f"cupy{req.specifier} exists for CUDA {'/'.join(map(str, sorted(allowed))) or 'none'}")


def _read_numba_cuda(f: Found, line: Line, req: Requirement) -> None:
    extras = {e for e in req.extras if e in ("cu11", "cu12", "cu13")}
    f.restrict(set(data.NUMBA_CUDA_EXTRA), "numba-cuda has CUDA 12 and 13 builds")
    if extras:
        f.restrict({int(e[2:]) for e in extras}, f"{line.text.strip()} asks for {'/'.join(sorted(extras))}")


def _read_jax(f: Found, line: Line, req: Requirement) -> None:
    name = line.name
    f.restrict(set(data.JAX_CUDA), "JAX has CUDA 12 and 13 builds")
    if name.startswith("jax-cuda"):
        major = int(name[8:10])
        f.restrict({major}, f"{name} is the CUDA {major} plugin")
    for e in _cuda_extras(req):
        m = re.match(r"cuda(\d+)", e)
        if m:
            f.restrict({int(m.group(1))}, f"jax[{e}] is the CUDA {m.group(1)} build")
        if e.endswith("local"):
            f.jax_local = True
    if name == "jax" and str(req.specifier):
        allowed = {mj for mj, (_, first, _) in data.JAX_CUDA.items() if admits(req.specifier, first, "9.99")}
        f.restrict(allowed, f"jax{req.specifier} has CUDA {'/'.join(map(str, sorted(allowed))) or 'no'} plugins")


def _read_pycuda(f: Found, line: Line, req: Requirement) -> None:
    f.why_majors = (
        "built from source against the build host's CUDA toolkit, nvcc needed at run time; cuda-python and "
        "cupy ship wheels"
    )


def _read_cuda_bindings(f: Found, line: Line, req: Requirement) -> None:
    if line.name != "cuda-core" and str(req.specifier):
        allowed = {mj for mj in data.CUDA_BINDINGS_MAJORS if admits(req.specifier, f"{mj}.0", f"{mj}.99")}
        f.restrict(allowed, f"{line.text.strip()} is the CUDA {'/'.join(map(str, sorted(allowed))) or 'no'} binding")
    for e in req.extras:
        if re.fullmatch(r"cu\d+", e):
            f.restrict({int(e[2:])}, f"{line.text.strip()} asks for {e}")


#: How each framework's requirement line narrows its CUDA majors.
_READERS: dict[str, Callable[[Found, Line, Requirement], None]] = {
    "torch": _read_torch,
    "cupy": _read_cupy,
    "numba-cuda": _read_numba_cuda,
    "jax": _read_jax,
    "pycuda": _read_pycuda,
    "cuda-bindings": _read_cuda_bindings,
}
