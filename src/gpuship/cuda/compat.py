"""The rules over :mod:`gpuship.cuda.data`: driver versions, CUDA lines, PTX ISA, compute capabilities.

Versions are handled as tuples of ints (``"580.65.06"`` -> ``(580, 65, 6)``; ``"12.8"`` -> ``(12, 8)``) so they
compare correctly; strings are what users write and what labels carry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ConfigError
from . import data

Version = tuple[int, ...]


def vt(text: str) -> Version:
    """``"580.65.06"`` -> ``(580, 65, 6)``. Raises ValueError on anything else."""
    text = text.strip()
    if not re.fullmatch(r"\d+(\.\d+)*", text):
        raise ValueError(f"not a version: {text!r}")
    return tuple(int(p) for p in text.split("."))


def vs(version: Version) -> str:
    return ".".join(str(p) for p in version)


def line_of(cuda: str) -> str:
    """``"12.8.1"`` / ``"12.8"`` / ``"cu128"`` -> ``"12.8"``."""
    text = cuda.strip().lower()
    m = re.fullmatch(r"cu(\d{2,3})", text)
    if m:
        digits = m.group(1)
        return f"{int(digits[:-1])}.{digits[-1]}"
    v = vt(text)
    if len(v) < 2:
        return f"{v[0]}.0"
    return f"{v[0]}.{v[1]}"


def cuda_tag(line: str) -> str:
    """``"13.0"`` -> ``"cu130"`` (the PyTorch index's name for a variant)."""
    major, minor = vt(line)[:2]
    return f"cu{major}{minor}"


def major_of(line: str) -> int:
    return vt(line)[0]


# -- drivers ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DriverVersion:
    """A driver version as a user or the driver states it. ``"580"`` is a branch: it compares on the branch only
    (R580 runs CUDA 13.0 although 13.0 names 580.65.06); ``"580.65.06"`` compares in full."""

    text: str

    @classmethod
    def parse(cls, value: object, where: str = "min-driver") -> DriverVersion:
        text = str(value).strip()
        try:
            v = vt(text)
        except ValueError:
            raise ConfigError(
                f'{where} must be a driver version like "580" or "570.124.06", not {value!r}',
                "give the branch (535, 570, 580) or the full version `nvidia-smi` prints",
            ) from None
        if not 300 <= v[0] < 1000:
            raise ConfigError(
                f"{where} {text!r} is not an NVIDIA driver version", "driver branches look like 535, 570, 580"
            )
        return cls(text)

    @property
    def version(self) -> Version:
        return vt(self.text)

    @property
    def is_branch(self) -> bool:
        return len(self.version) == 1

    @property
    def branch(self) -> int:
        return self.version[0]

    def at_least(self, required: str) -> bool:
        """Whether this driver satisfies a requirement such as ``"570.26"``."""
        req = vt(required)
        if self.is_branch:
            return self.branch >= req[0]
        return self.version >= req

    def __str__(self) -> str:
        return self.text


def min_driver(line: str) -> str:
    """The minimum driver of a CUDA line (strict: PTX JIT and every API)."""
    try:
        return data.MIN_DRIVER[line_of(line)]
    except KeyError:
        raise ConfigError(
            f"CUDA {line} is not in gpuship's table", f"known CUDA lines: {', '.join(data.MIN_DRIVER)}"
        ) from None


def compat_driver(line: str) -> str:
    """The minimum driver of a CUDA line under minor-version compatibility."""
    return data.MINOR_VERSION_COMPAT_DRIVER.get(major_of(line), min_driver(line))


def required_driver(line: str, minor_version_compat: bool = False) -> str:
    return compat_driver(line) if minor_version_compat else min_driver(line)


def driver_allows(driver: DriverVersion, line: str, minor_version_compat: bool = False) -> bool:
    return driver.at_least(required_driver(line, minor_version_compat))


def cuda_for_driver(driver: str | DriverVersion) -> str | None:
    """The newest CUDA toolkit a driver fully supports (``"580.159.04"`` -> ``"13.0"``); None if too old."""
    d = driver if isinstance(driver, DriverVersion) else DriverVersion(str(driver))
    best: str | None = None
    for line, need in data.MIN_DRIVER.items():
        if d.at_least(need):
            best = line
    return best


def last_branch_for(cc: str) -> str | None:
    """The last driver branch that supports a GPU of compute capability ``cc`` (None: still supported)."""
    for below, branch in data.LAST_DRIVER_BRANCH:
        if vt(cc) < vt(below):
            return branch
    return None


# -- PTX ISA ---------------------------------------------------------------------------------------------------


def ptx_isa(line: str) -> str:
    """The PTX ISA version a CUDA toolkit emits (``"13.0"`` -> ``"9.0"``)."""
    try:
        return data.PTX_ISA[line_of(line)]
    except KeyError:
        raise ConfigError(f"CUDA {line}: its PTX ISA version is not in gpuship's table") from None


def cuda_for_ptx_isa(isa: str) -> str | None:
    """The first CUDA toolkit whose driver JITs PTX of ISA ``isa`` (``"8.7"`` -> ``"12.8"``); None if newer
    than every toolkit gpuship knows."""
    want = vt(isa)
    for line, have in data.PTX_ISA.items():  # ordered oldest first
        if vt(have) >= want:
            return line
    return None


def min_driver_for_ptx_isa(isa: str) -> str | None:
    """The oldest driver that can JIT PTX of ISA ``isa``; None if no known driver can."""
    line = cuda_for_ptx_isa(isa)
    return data.MIN_DRIVER[line] if line else None


def driver_ptx_isa(driver_cuda: str) -> str:
    """The newest PTX ISA a driver that reports CUDA ``driver_cuda`` (cuDriverGetVersion) can JIT.

    A CUDA line newer than the table is assumed to follow CUDA 13's pattern (13.N -> ISA 9.N)."""
    line = line_of(driver_cuda)
    if line in data.PTX_ISA:
        return data.PTX_ISA[line]
    major, minor = vt(line)[:2]
    known = [k for k in data.PTX_ISA if vt(k) <= (major, minor)]
    if vt(line) > vt(max(data.PTX_ISA, key=vt)):
        return f"{major - 4}.{minor}"
    return data.PTX_ISA[max(known, key=vt)] if known else "0.0"


def driver_jits_ptx(driver_cuda: str, isa: str) -> bool:
    """Whether a driver that reports CUDA ``driver_cuda`` can JIT PTX of ISA ``isa``."""
    return vt(isa) <= vt(driver_ptx_isa(driver_cuda))


# -- compute capabilities --------------------------------------------------------------------------------------


def cc_str(cc: str) -> str:
    """Normalise a compute capability: ``"sm_90"``, ``"90"``, ``"9.0"``, ``"sm_90a"`` -> ``"9.0"``."""
    text = cc.strip().lower()
    m = re.fullmatch(r"(?:sm_|compute_)?(\d+)(?:\.(\d+))?([af])?", text)
    if not m:
        raise ValueError(f"not a compute capability: {cc!r}")
    if m.group(2) is not None:
        return f"{int(m.group(1))}.{int(m.group(2))}"
    digits = m.group(1)
    if len(digits) < 2:
        raise ValueError(f"not a compute capability: {cc!r}")
    return f"{int(digits[:-1])}.{digits[-1]}"


def sm(cc: str) -> str:
    """``"9.0"`` -> ``"sm_90"``."""
    major, minor = vt(cc_str(cc))
    return f"sm_{major}{minor}"


def toolkit_builds_for(line: str, cc: str) -> bool:
    """Whether CUDA ``line``'s compilers build for compute capability ``cc`` (Thor's rename included)."""
    archs = data.ARCHS.get(line_of(line), ())
    return cc_str(cc) in archs


def runs_on(cc: str, sass: tuple[str, ...] | list[str], ptx: str = "") -> bool:
    """Whether code built as SASS for ``sass`` (plus PTX for ``ptx``) runs on a GPU of capability ``cc``.

    SASS runs on the same major and an equal or higher minor (sm_80 code on sm_86); PTX is JIT-compiled for
    any equal or newer GPU."""
    have = vt(cc_str(cc))
    for a in sass:
        av = vt(cc_str(a))
        if av[0] == have[0] and av[1] <= have[1]:
            return True
    return bool(ptx) and vt(cc_str(ptx)) <= have


def lines_newest_first() -> list[str]:
    return sorted(data.LINES, key=vt, reverse=True)
