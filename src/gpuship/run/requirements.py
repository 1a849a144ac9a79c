"""``NVIDIA_REQUIRE_*``: the image's conditions on the host driver, checked before a GPU container starts.

The grammar is the NVIDIA container toolkit's (``internal/requirements/constraints/factory.go`` in
NVIDIA/nvidia-container-toolkit): every ``NVIDIA_REQUIRE_*`` variable (except ``NVIDIA_REQUIRE_JETPACK``) is one
requirement and all of them must hold; inside one, space-separated terms are ORed and comma-separated factors
are ANDed. A factor is ``PROPERTY OP VALUE`` with the properties ``cuda`` and ``driver`` (versions), ``arch``
(compute capability) and ``brand``; ops ``>= <= == != = < >``. A factor whose property is unknown here is
skipped, as the toolkit skips unsupported ones. An image with ``CUDA_VERSION`` but no ``NVIDIA_REQUIRE_CUDA``
(a "legacy" image) requires ``cuda>=MAJOR.MINOR``. ``NVIDIA_DISABLE_REQUIRE`` (a true value) turns it all off.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import GpuError

_OPS = ("!=", "<=", ">=", "==", "=", "<", ">")
VERSION_PROPERTIES = ("cuda", "driver", "arch")
STRING_PROPERTIES = ("brand",)
_TRUE = {"1", "t", "true", "yes", "y", "on"}


def version_tuple(text: str) -> tuple[int, ...]:
    """``"12.4"`` -> ``(12, 4)``; ``"580.159.04"`` -> ``(580, 159, 4)``. Raises ``ValueError`` if not a version."""
    parts = text.strip().lstrip("v").split(".")
    if not parts or not all(p.isdigit() for p in parts):
        raise ValueError(f"not a version: {text!r}")
    return tuple(int(p) for p in parts)


def _cmp_versions(a: str, b: str) -> int:
    ta, tb = version_tuple(a), version_tuple(b)
    n = max(len(ta), len(tb))
    ta, tb = ta + (0,) * (n - len(ta)), tb + (0,) * (n - len(tb))
    return (ta > tb) - (ta < tb)


@dataclass(frozen=True)
class Factor:
    """One condition: ``cuda>=12.4``."""

    prop: str
    op: str
    value: str

    def __str__(self) -> str:
        return f"{self.prop}{self.op}{self.value}"

    def holds(self, facts: Mapping[str, str | None]) -> bool | None:
        """True/False, or None when the host fact is unknown (the factor is then skipped)."""
        have = facts.get(self.prop)
        if not have:
            return None
        if self.prop in STRING_PROPERTIES:
            c = (have.lower() > self.value.lower()) - (have.lower() < self.value.lower())
        else:
            try:
                c = _cmp_versions(have, self.value)
            except ValueError:
                return None
        return {
            "=": c == 0,
            "==": c == 0,
            "!=": c != 0,
            "<": c < 0,
            "<=": c <= 0,
            ">": c > 0,
            ">=": c >= 0,
        }[self.op]


@dataclass(frozen=True)
class Requirement:
    """One ``NVIDIA_REQUIRE_*`` value: an OR of terms, each an AND of factors."""

    name: str
    text: str
    terms: tuple[tuple[Factor, ...], ...]

    def holds(self, facts: Mapping[str, str | None]) -> bool:
        results = []
        for term in self.terms:
            known = [f.holds(facts) for f in term]
            known = [k for k in known if k is not None]
            if known:
                results.append(all(known))
        return any(results) if results else True


def parse_factor(text: str) -> Factor | None:
    """``cuda>=12.4`` -> Factor; an unsupported property gives None; a malformed factor a :class:`GpuError`."""
    m = re.match(r"^\s*([A-Za-z_]+)\s*(!=|<=|>=|==|=|<|>)\s*(\S+)\s*$", text)
    if not m:
        raise GpuError(
            f"cannot read the image's driver requirement {text!r}",
            "fix NVIDIA_REQUIRE_* in the image (e.g. cuda>=12.4), or set NVIDIA_DISABLE_REQUIRE=1",
        )
    prop, op, value = m.group(1).lower(), m.group(2), m.group(3)
    if prop not in VERSION_PROPERTIES + STRING_PROPERTIES:
        return None
    if prop in VERSION_PROPERTIES:
        try:
            version_tuple(value)
        except ValueError as exc:
            raise GpuError(
                f"{prop} version {value!r} in the image's requirement {text!r} is not a version",
                "fix NVIDIA_REQUIRE_* in the image, or set NVIDIA_DISABLE_REQUIRE=1",
            ) from exc
    return Factor(prop, op, value)


def parse_requirement(text: str, name: str = "NVIDIA_REQUIRE_CUDA") -> Requirement:
    """Parse one requirement value (space = OR, comma = AND)."""
    terms: list[tuple[Factor, ...]] = []
    for term in text.split():
        factors = tuple(f for f in (parse_factor(x) for x in term.split(",") if x.strip()) if f is not None)
        if factors:
            terms.append(factors)
    return Requirement(name, text, tuple(terms))


def requirements_from_env(env: Mapping[str, str]) -> list[Requirement]:
    """Every requirement the image's environment states (none when ``NVIDIA_DISABLE_REQUIRE`` is true)."""
    if env.get("NVIDIA_DISABLE_REQUIRE", "").strip().lower() in _TRUE:
        return []
    out = [
        parse_requirement(value, name)
        for name, value in sorted(env.items())
        if name.startswith("NVIDIA_REQUIRE_") and not name.startswith("NVIDIA_REQUIRE_JETPACK") and value.strip()
    ]
    legacy = env.get("CUDA_VERSION", "").strip()
    if legacy and not env.get("NVIDIA_REQUIRE_CUDA", "").strip():
        try:
            major_minor = ".".join(str(p) for p in version_tuple(legacy)[:2])
        except ValueError:
            major_minor = ""
        if major_minor:
            out.append(parse_requirement(f"cuda>={major_minor}", "CUDA_VERSION"))
    return out


def required_cuda(requirements: list[Requirement]) -> str | None:
    """The lowest ``cuda>=X.Y`` the requirements name (for messages), or None."""
    found = [
        f.value for r in requirements for term in r.terms for f in term if f.prop == "cuda" and f.op in (">=", ">")
    ]
    return min(found, key=version_tuple) if found else None


def unmet(requirements: list[Requirement], facts: Mapping[str, str | None]) -> list[Requirement]:
    """The requirements the host does not meet."""
    return [r for r in requirements if not r.holds(facts)]
