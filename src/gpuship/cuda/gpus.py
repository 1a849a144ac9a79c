"""GPU targets: ``"H100"``, ``"RTX 4090"``, ``"sm_80"``, ``"8.9"`` -> a :class:`Target` with its compute capability."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from ..errors import ConfigError
from . import data
from .compat import cc_str, last_branch_for, sm

_NOISE = ("nvidia", "tesla", "geforce", "quadro", "jetson", "agx")


def _norm(name: str) -> str:
    text = name.lower()
    for word in _NOISE:
        text = text.replace(word, "")
    return re.sub(r"[^a-z0-9]", "", text)


_BY_NORM: dict[str, str] = {}
for _name in data.GPUS:
    _BY_NORM.setdefault(_norm(_name), _name)


#: What may follow a GPU name inside one word: "H100NVL", "A100SXM4", "L40S48GB" (the model's variants).
_VARIANT = re.compile(r"^(nvl|sxm\d*|pcie|\d+gb|hbm\d*e?|ti|super)*$")


def _match_name(text: str) -> str:
    """The table key named by the first words of ``text`` (longest match), allowing variant suffixes."""
    words = [w for w in re.split(r"[^a-z0-9]+", text.lower()) if w and w not in _NOISE]
    best = ""
    for k in range(1, min(3, len(words)) + 1):
        joined = "".join(words[:k])
        for key in _BY_NORM:
            if joined.startswith(key) and _VARIANT.match(joined[len(key) :]) and len(key) > len(best):
                best = key
    return best


@dataclass(frozen=True)
class Target:
    """One GPU the image must run on."""

    name: str  # "H100", or "sm_80" when given as an architecture
    cc: str  # "9.0"
    kind: str = "dgpu"  # "dgpu" | "tegra"
    given: str = ""

    @property
    def sm(self) -> str:
        return sm(self.cc)

    @property
    def last_branch(self) -> str | None:
        """The last driver branch for this GPU (R470 for Kepler, R580 below sm_75), None if current."""
        return last_branch_for(self.cc)

    def label(self) -> str:
        return self.sm if self.name == self.sm else f"{self.name} ({self.sm})"

    @property
    def capability(self) -> tuple[int, int]:
        """``(9, 0)``: what architecture pruning compares."""
        major, _, minor = self.cc.partition(".")
        return int(major), int(minor or 0)

    @property
    def major(self) -> int:
        return self.capability[0]

    @property
    def minor(self) -> int:
        return self.capability[1]

    def __lt__(self, other: Target) -> bool:
        """Older GPUs first (by compute capability)."""
        return self.capability < other.capability

    def __str__(self) -> str:
        """``B200 (10.0)`` as the user named it, or ``sm_90`` for a target given as that architecture."""
        shown = self.given or self.name
        return self.sm if shown == self.sm else f"{shown} ({self.cc})"

    @classmethod
    def parse(cls, text: str) -> Target:
        return parse_target(text)


def parse_target(text: str) -> Target:
    """A GPU name from gpuship's table (case and spacing free: ``"rtx4090"``, ``"NVIDIA H100 80GB HBM3"``) or an
    architecture (``sm_90``, ``compute_90``, ``9.0``, ``90``)."""
    given = str(text).strip()
    if not given:
        raise ConfigError("an empty GPU target", 'targets look like ["H100", "sm_80"]')
    if re.fullmatch(r"(?i)(sm_|compute_)?\d+(\.\d+)?[af]?", given):
        try:
            cc = cc_str(given)
        except ValueError:
            cc = ""
        if cc:
            known = {c for c, _ in data.GPUS.values()} | {c for archs in data.ARCHS.values() for c in archs}
            if cc not in known:
                raise ConfigError(
                    f"GPU target {given!r} is compute capability {cc}, which no CUDA toolkit gpuship knows builds for",
                    "give an architecture such as sm_80, sm_90 or sm_120",
                )
            kind = "tegra" if cc in ("7.2", "8.7") else "dgpu"
            return Target(sm(cc), cc, kind, given)
    best = _match_name(given)
    if best:
        name = _BY_NORM[best]
        cc, kind = data.GPUS[name]
        display = {"Orin": "Jetson Orin", "Thor": "Thor"}.get(name, name)
        return Target(display, cc, kind, given)
    close = difflib.get_close_matches(given, list(data.GPUS), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else "give its architecture instead, e.g. sm_89"
    raise ConfigError(f"unknown GPU target {given!r}", hint)


def known_gpus() -> list[str]:
    return list(data.GPUS)
