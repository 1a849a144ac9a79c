"""What the environment leaves out, by a rule a user can read (docs/python-env.md) and change.

Patterns are gitignore-style, matched against a file's path relative to site-packages (``numpy/_core/tests/x.py``);
``keep`` always wins over every drop rule. Files outside site-packages (``bin``, ``share``, ``include``) only meet
the fixed venv rules below. The defaults are deliberately conservative: a pruned file that an application loads
at run time is a bug, so packages that compile code at run time (CUDA JITs, Triton, CuPy, cffi, Cython, ...)
keep their headers, static libraries and Cython sources.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import pathspec

from ...config import Bytecode
from ...errors import ConfigError

#: Packages that compile C/C++/CUDA at run time and read their own headers, archives or .pxd files.
JIT_PACKAGES = (
    "nvidia",
    "cuda",
    "cuda_bindings",
    "cuda_core",
    "torch",
    "triton",
    "cupy",
    "cupy_backends",
    "cupyx",
    "numba",
    "numba_cuda",
    "jax",
    "jaxlib",
    "jax_plugins",
    "cffi",
    "Cython",
    "pyximport",
    "pybind11",
    "pycuda",
    "warp",
    "flashinfer",
    "deep_gemm",
    "tilelang",
    "tvm",
    "tvm_ffi",
    "pytensor",
    "theano",
    "cutlass",
    "cutlass_library",
    "cuda_python",
    "nvmath",
    "cuequivariance",
    "torch_tensorrt",
    "tensorrt_llm",
    "apex",
    "transformer_engine",
)
_JIT_KEEP = tuple(f"/{p}/" for p in JIT_PACKAGES)


@dataclass(frozen=True)
class PruneRule:
    category: str
    drop: tuple[str, ...]
    unless: tuple[str, ...] = ()


#: The built-in rules, in report order. Each is documented in docs/python-env.md.
DEFAULT_RULES: tuple[PruneRule, ...] = (
    # Byte-code caches that wheels sometimes ship (built for their build machine); recompiled below when enabled.
    PruneRule("bytecode-caches", ("__pycache__/",)),
    # Test suites of third-party packages: only directories named tests/test below a package, never a
    # package's own testing helpers (numpy.testing, torch.testing). astropy/sunpy import their tests/ at start-up.
    PruneRule("tests", ("/*/**/tests/", "/*/**/test/"), ("/astropy/tests/", "/sunpy/tests/")),
    PruneRule(
        "c-headers",
        ("*.h", "*.hh", "*.hpp", "*.hxx", "*.cuh"),
        _JIT_KEEP + ("/numpy/_core/include/", "/numpy/core/include/", "/numpy/f2py/src/"),
    ),
    PruneRule("static-libraries", ("*.a",), _JIT_KEEP),
    PruneRule("cython-sources", ("*.pyx", "*.pxd", "*.pxi"), _JIT_KEEP),
)

#: Rules for venv paths outside site-packages (relative to the venv root).
VENV_RULES: tuple[PruneRule, ...] = (
    PruneRule("docs", ("/share/doc/", "/share/man/", "/share/info/", "/share/gtk-doc/")),
    PruneRule("c-headers", ("/include/",)),
)


def _spec(patterns: Iterable[str]) -> pathspec.PathSpec:
    try:
        return pathspec.PathSpec.from_lines("gitignore", list(patterns))
    except Exception as exc:  # pathspec raises a few types for a bad pattern
        raise ConfigError(
            f"bad prune pattern: {exc}", "patterns use .gitignore syntax, e.g. 'mypkg/data/' or '*.h'"
        ) from exc


@dataclass(frozen=True)
class PruneRules:
    """``keep``/``drop``: extra gitignore-style globs (relative to site-packages); ``defaults``: the built-in
    rules on or off; ``bytecode``: precompile ``.pyc`` at build time (``unchecked-hash``) or not (``none``)."""

    keep: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()
    defaults: bool = True
    bytecode: Bytecode = "unchecked-hash"

    def __post_init__(self) -> None:
        if self.bytecode not in ("unchecked-hash", "none"):
            raise ConfigError(f"bytecode must be 'unchecked-hash' or 'none', not {self.bytecode!r}")
        _spec(self.keep)
        _spec(self.drop)

    def key(self) -> dict[str, object]:
        """Everything that changes the result (part of every layer's cache key)."""
        return {
            "keep": list(self.keep),
            "drop": list(self.drop),
            "defaults": [[r.category, list(r.drop), list(r.unless)] for r in DEFAULT_RULES + VENV_RULES]
            if self.defaults
            else [],
            "bytecode": self.bytecode,
        }

    def matcher(self, site_packages: str) -> PruneMatcher:
        return PruneMatcher(self, site_packages)


class PruneMatcher:
    """Decides, path by path, whether a file is pruned and under which category."""

    def __init__(self, rules: PruneRules, site_packages: str) -> None:
        self.site = site_packages.strip("/")
        self.keep = _spec(rules.keep)
        self.rules = [(r.category, _spec(r.drop), _spec(r.unless)) for r in (DEFAULT_RULES if rules.defaults else ())]
        if rules.drop:
            self.rules.append(("configured", _spec(rules.drop), _spec(())))
        self.venv_rules = [(r.category, _spec(r.drop), _spec(r.unless)) for r in (VENV_RULES if rules.defaults else ())]

    def category(self, rel: str) -> str | None:
        """The rule that prunes ``rel`` (relative to the venv root), or None to keep it."""
        if rel.startswith(self.site + "/"):
            path = rel[len(self.site) + 1 :]
            if self.keep.match_file(path):
                return None
            rules = self.rules
        else:
            if rel.startswith(("bin/", "lib/")):
                return None
            path = rel
            rules = self.venv_rules
        for category, drop, unless in rules:
            if drop.match_file(path) and not unless.match_file(path):
                return category
        return None


@dataclass(frozen=True)
class PruneReport:
    """What pruning removed and what bytecode compiling added, per category and per distribution."""

    #: category -> (files, bytes)
    pruned: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    #: distribution -> (files, bytes) pruned
    by_distribution: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    #: .pyc files written and their bytes
    compiled: tuple[int, int] = (0, 0)

    @property
    def files(self) -> int:
        return sum(f for f, _ in self.pruned.values())

    @property
    def bytes(self) -> int:
        return sum(b for _, b in self.pruned.values())

    def merged(self, other: PruneReport) -> PruneReport:
        def add(a: Mapping[str, tuple[int, int]], b: Mapping[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
            out = dict(a)
            for k, (f, n) in b.items():
                of, on = out.get(k, (0, 0))
                out[k] = (of + f, on + n)
            return dict(sorted(out.items()))

        return PruneReport(
            add(self.pruned, other.pruned),
            add(self.by_distribution, other.by_distribution),
            (self.compiled[0] + other.compiled[0], self.compiled[1] + other.compiled[1]),
        )

    def to_json(self) -> dict[str, object]:
        return {
            "pruned": {k: list(v) for k, v in self.pruned.items()},
            "by_distribution": {k: list(v) for k, v in self.by_distribution.items()},
            "compiled": list(self.compiled),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, object]) -> PruneReport:
        def pairs(x: object) -> dict[str, tuple[int, int]]:
            return {str(k): (int(v[0]), int(v[1])) for k, v in x.items()} if isinstance(x, dict) else {}

        comp = d.get("compiled")
        n, size = comp if isinstance(comp, (list, tuple)) and len(comp) == 2 else (0, 0)
        return cls(pairs(d.get("pruned")), pairs(d.get("by_distribution")), (int(n), int(size)))


def top_level(rel: str, site: str) -> str:
    """The first path component below site-packages (for messages)."""
    return posixpath.relpath(rel, site).split("/", 1)[0]
