"""``[tool.gpuship.gpu]``: what the user asks of the CUDA planner."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from ..config import _check_keys
from ..errors import ConfigError
from . import data
from .compat import DriverVersion, line_of, vt
from .gpus import Target, parse_target

KEYS = {
    "cuda": 'CUDA line: "auto" (default), a line such as "12.8", a major such as "12", or "cpu" (CPU builds)',
    "targets": 'GPUs the image must run on: names ("H100", "L4") or architectures ("sm_80")',
    "min-driver": 'oldest host driver the image must run on: a branch ("535") or a version ("570.124.06")',
    "torch-index": "URL of the PyTorch wheel index for the chosen CUDA variant; {tag} becomes cu128, cu130, ..., or cpu",
    "minor-version-compat": "allow a CUDA line newer than min-driver under minor-version compatibility",
    "enabled": '"auto" (default: GPU when a GPU framework is present), true, or false',
    "driver-capabilities": 'NVIDIA_DRIVER_CAPABILITIES (default ["compute", "utility"])',
    "prune-archs": "drop GPU machine code for architectures no target runs (default: true when targets are set)",
}

CAPABILITIES = ("compute", "utility", "video", "graphics", "display", "compat32", "all")


@dataclass(frozen=True)
class GpuSettings:
    """Parsed ``[tool.gpuship.gpu]``. ``cuda`` is ``"auto"``, a line (``"12.8"``) or a major (``"12"``)."""

    cuda: str = "auto"
    targets: tuple[Target, ...] = ()
    min_driver: DriverVersion | None = None
    torch_index: str = ""
    minor_version_compat: bool = False
    enabled: bool | None = None  # None: auto
    driver_capabilities: tuple[str, ...] = ("compute", "utility")
    raw: Mapping[str, object] = field(default_factory=dict, compare=False)

    @classmethod
    def from_table(cls, table: Mapping[str, object] | None) -> GpuSettings:
        table = dict(table or {})
        _check_keys(table, KEYS, "[tool.gpuship.gpu]")
        if _parse_cuda(table.get("cuda", "auto")) == "cpu" and table.get("enabled") is True:
            raise ConfigError(
                '[tool.gpuship.gpu] cuda = "cpu" and enabled = true ask for a CPU and a GPU image',
                'drop one of them: cuda = "cpu" builds with the frameworks\' CPU builds',
            )
        return cls(
            cuda=_parse_cuda(table.get("cuda", "auto")),
            targets=_parse_targets(table.get("targets", ())),
            min_driver=DriverVersion.parse(table["min-driver"], "[tool.gpuship.gpu] min-driver")
            if "min-driver" in table
            else None,
            torch_index=_parse_index(table.get("torch-index", "")),
            minor_version_compat=_parse_bool(table.get("minor-version-compat", False), "minor-version-compat"),
            enabled=_parse_enabled(table.get("enabled", "auto")),
            driver_capabilities=_parse_caps(table.get("driver-capabilities", ("compute", "utility"))),
            raw=table,
        )

    def with_overrides(
        self,
        cuda: str | None = None,
        targets: list[str] | tuple[str, ...] | None = None,
        min_driver: str | None = None,
        torch_index: str | None = None,
    ) -> GpuSettings:
        """Command-line overrides (``gpuship explain --cuda 12.8 --target H100``) on top of the table."""

        s = self
        if cuda is not None:
            s = replace(s, cuda=_parse_cuda(cuda))
        if targets:
            s = replace(s, targets=_parse_targets(list(targets)))
        if min_driver is not None:
            s = replace(s, min_driver=DriverVersion.parse(min_driver, "--min-driver"))
        if torch_index is not None:
            s = replace(s, torch_index=_parse_index(torch_index))
        return s

    @property
    def driver(self) -> DriverVersion:
        """The driver the plan must support: ``min-driver``, else the default branch."""
        return self.min_driver or DriverVersion(data.DEFAULT_MIN_DRIVER)


def _parse_cuda(value: object) -> str:
    text = str(value).strip().lower()
    if text in ("auto", ""):
        return "auto"
    if text in ("cpu", "none"):
        return "cpu"  # a CPU image: the frameworks' CPU builds (torch +cpu), no GPU settings
    if re.fullmatch(r"\d+", text) and int(text) in data.MINOR_VERSION_COMPAT_DRIVER:
        return str(int(text))
    try:
        line = line_of(text)
    except ValueError:
        raise ConfigError(
            f'[tool.gpuship.gpu] cuda must be "auto", "cpu", a CUDA line such as "12.8", or a major such as "12"; '
            f"not {value!r}",
            f"known lines: {', '.join(data.LINES)}",
        ) from None
    if line not in data.LINES:
        newer = vt(line) > vt(data.LINES[-1])
        raise ConfigError(
            f"[tool.gpuship.gpu] cuda = {value!r}: CUDA {line} is not a line gpuship can build "
            + ("(newer than its table)" if newer else "(no CUDA wheels for it on the package index)"),
            f'choose one of {", ".join(data.LINES)}, or "auto"',
        )
    return line


def _parse_targets(value: object) -> tuple[Target, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ConfigError("[tool.gpuship.gpu] targets must be a list", 'e.g. targets = ["H100", "sm_80"]')
    out: list[Target] = []
    for item in value:
        if not isinstance(item, (str, int, float)):
            raise ConfigError(f"[tool.gpuship.gpu] targets: {item!r} is not a GPU name or architecture")
        t = parse_target(str(item))
        if all(t.cc != o.cc or t.name != o.name for o in out):
            out.append(t)
    return tuple(out)


def _parse_index(value: object) -> str:
    text = str(value or "").strip()
    if text and not re.match(r"^(https?|file)://", text):
        raise ConfigError(
            f"[tool.gpuship.gpu] torch-index must be a URL, not {value!r}",
            "give the PyTorch wheel index URL from PyTorch's install page, with {tag} where cu128/cu130 goes",
        )
    return text.rstrip("/")


def _parse_bool(value: object, key: str) -> bool:
    if isinstance(value, bool):
        return value
    raise ConfigError(f"[tool.gpuship.gpu] {key} must be true or false, not {value!r}")


def _parse_enabled(value: object) -> bool | None:
    if value == "auto":
        return None
    if isinstance(value, bool):
        return value
    raise ConfigError(f'[tool.gpuship.gpu] enabled must be "auto", true or false, not {value!r}')


def _parse_caps(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",")]
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError("[tool.gpuship.gpu] driver-capabilities must be a list", 'e.g. ["compute", "utility"]')
    caps = tuple(str(v).strip() for v in value)
    for c in caps:
        if c not in CAPABILITIES:
            raise ConfigError(
                f"[tool.gpuship.gpu] driver-capabilities: unknown capability {c!r}", f"known: {', '.join(CAPABILITIES)}"
            )
    if "compute" not in caps and "all" not in caps:
        raise ConfigError(
            '[tool.gpuship.gpu] driver-capabilities without "compute": libcuda would not be injected and CUDA fails',
            'add "compute" (nvidia-smi works with "utility" alone, CUDA does not)',
        )
    return caps
