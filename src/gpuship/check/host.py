"""``gpuship doctor``: what this host offers GPU containers — driver, GPUs, engines, CDI, runc — and what
``gpuship run`` will use. Works on a host without a GPU (it says so)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any  # Any: the engines' info JSON and the driver facts, as the tools print them

from ..cuda.compat import DriverVersion, cuda_for_driver
from . import gpuship_check as gc

CDI_DIRS = ("/etc/cdi", "/var/run/cdi")
NVIDIA_TOOLS = (
    "nvidia-smi",
    "nvidia-ctk",
    "nvidia-container-cli",
    "nvidia-container-runtime",
    "nvidia-container-runtime-hook",
)


@dataclass
class EngineInfo:
    name: str
    path: str | None = None
    answers: bool = False
    version: str = ""
    runtimes: tuple[str, ...] = ()
    cdi_dirs: tuple[str, ...] = ()
    error: str = ""

    @property
    def nvidia_runtime(self) -> bool:
        return "nvidia" in self.runtimes


@dataclass
class CdiSpec:
    path: str
    kind: str
    devices: tuple[str, ...]


@dataclass
class HostReport:
    driver: dict[str, Any] | None = None  # version, cuda, ptx_isa, libcuda
    gpus: list[dict[str, Any]] = field(default_factory=list)
    no_gpu: str = ""  # why there is no usable GPU
    engines: list[EngineInfo] = field(default_factory=list)
    cdi: list[CdiSpec] = field(default_factory=list)
    tools: dict[str, str | None] = field(default_factory=dict)
    run_runtime: str = ""
    run_gpus: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "driver": self.driver,
            "gpus": self.gpus,
            "no_gpu": self.no_gpu,
            "engines": [e.__dict__ | {"nvidia_runtime": e.nvidia_runtime} for e in self.engines],
            "cdi": [c.__dict__ for c in self.cdi],
            "tools": self.tools,
            "run": {"runtime": self.run_runtime, "gpus": self.run_gpus},
        }

    def lines(self) -> list[str]:
        out = ["host GPU"]
        if self.driver:
            d = self.driver
            out.append(
                f"  driver   {d.get('version') or 'unknown'} (CUDA {d['cuda']}; JITs PTX up to ISA {d['ptx_isa']}) from {d['libcuda']}"
            )
            if d.get("version"):
                full = cuda_for_driver(DriverVersion(d["version"]))
                major = d["cuda"].split(".")[0]
                out.append(
                    f"  images   CUDA <= {full or d['cuda']} run fully; CUDA {major}.x wheels run under minor-version compatibility (no newer PTX)"
                )
        else:
            out.append(f"  driver   none: {self.no_gpu}")
        for g in self.gpus:
            out.append(f"  gpu{g['index']}     {g['name']}, {g['memory_bytes'] / 2**30:.1f} GiB, {g['sm']}")
        if self.driver and not self.gpus:
            out.append(f"  gpus     none: {self.no_gpu}")
        out.append("containers")
        for e in self.engines:
            if not e.path:
                out.append(f"  {e.name:<8} not installed")
            elif not e.answers:
                out.append(f"  {e.name:<8} installed but not answering{': ' + e.error if e.error else ''}")
            else:
                extra = f"runtimes: {', '.join(e.runtimes)}" if e.runtimes else ""
                if e.cdi_dirs:
                    extra += (", " if extra else "") + f"CDI dirs: {', '.join(e.cdi_dirs)}"
                out.append(f"  {e.name:<8} {e.version} ({extra})" if extra else f"  {e.name:<8} {e.version}")
        if self.cdi:
            for c in self.cdi:
                out.append(f"  cdi      {c.path}: {c.kind} devices {', '.join(c.devices) or 'none'}")
        else:
            out.append(f"  cdi      no specs in {' or '.join(CDI_DIRS)}")
        for name, path in self.tools.items():
            out.append(
                f"  {name:<8} {path or 'not installed'}" if len(name) <= 8 else f"  {name}: {path or 'not installed'}"
            )
        out.append(f"gpuship run will use: {self.run_runtime}{' — ' + self.run_gpus if self.run_gpus else ''}")
        return out


def probe_driver(report: HostReport) -> None:
    found = gc.load_driver_library("libcuda.so.1")
    if found is None:
        devices = os.path.exists("/dev/nvidiactl")
        report.no_gpu = (
            "the NVIDIA kernel driver is loaded (/dev/nvidiactl) but libcuda.so.1 is not on the loader's path "
            f"(set {gc.ENV_LIB_DIRS})"
            if devices
            else "no NVIDIA GPU or driver on this host (libcuda.so.1 is not loadable, /dev/nvidiactl is missing)"
        )
        return
    lib, path = found
    cuda = gc.Cuda(lib)
    try:
        cuda.call("cuInit", 0)
    except gc.CudaError as exc:
        report.no_gpu = gc._init_cause(exc).replace("the container", "this host")
        return
    driver_cuda = gc.cuda_str(cuda.driver_version())
    nv = gc.nvml_info()
    report.driver = {
        "version": nv.get("driver_version") or gc.proc_driver_version(),
        "cuda": driver_cuda,
        "ptx_isa": gc.driver_ptx_isa(driver_cuda),
        "libcuda": path,
    }
    try:
        for i in range(cuda.device_count()):
            info = cuda.device_info(cuda.device(i))
            info["index"] = i
            report.gpus.append(info)
    except gc.CudaError as exc:
        report.no_gpu = gc._init_cause(exc).replace("the container", "this host")
    if not report.gpus and not report.no_gpu:
        report.no_gpu = "the driver reports no GPUs"


def _run(argv: list[str], timeout: float = 15) -> tuple[int, str, str]:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        return p.returncode, p.stdout, p.stderr
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 1, "", str(exc)


def _probe_engine(name: str, info_args: list[str]) -> tuple[EngineInfo, dict[str, Any] | None]:
    """Ask the engine ``name`` for its ``info`` as JSON: the partly filled :class:`EngineInfo`, and the JSON when
    the engine answered."""
    e = EngineInfo(name, shutil.which(name))
    if not e.path:
        return e, None
    rc, out, err = _run([e.path, *info_args])
    if rc != 0:
        e.error = (err.strip().splitlines() or [""])[-1]
        return e, None
    try:
        info = json.loads(out)
    except ValueError:
        e.error = f"{name} info printed no JSON"
        return e, None
    e.answers = True
    return e, info


def probe_docker() -> EngineInfo:
    e, info = _probe_engine("docker", ["info", "--format", "{{json .}}"])
    if info is not None:
        e.version = str(info.get("ServerVersion", ""))
        e.runtimes = tuple(sorted((info.get("Runtimes") or {}).keys()))
        e.cdi_dirs = tuple(info.get("CDISpecDirs") or ())
    return e


def probe_podman() -> EngineInfo:
    e, info = _probe_engine("podman", ["info", "--format", "json"])
    if info is not None:
        e.version = str((info.get("version") or {}).get("Version", ""))
        rt = ((info.get("host") or {}).get("ociRuntime") or {}).get("name")
        e.runtimes = (rt,) if rt else ()
        e.cdi_dirs = CDI_DIRS
    return e


def probe_cdi(dirs: tuple[str, ...] = CDI_DIRS) -> list[CdiSpec]:
    import yaml  # only when CDI specs are probed: gpuship check loads fast

    specs = []
    for d in dirs:
        p = Path(d)
        if not p.is_dir():
            continue
        for f in sorted(p.iterdir()):
            if f.suffix not in (".yaml", ".yml", ".json"):
                continue
            try:
                doc = yaml.safe_load(f.read_text(encoding="utf-8")) or {}
            except (OSError, yaml.YAMLError):
                specs.append(CdiSpec(str(f), "unreadable", ()))
                continue
            names = tuple(str(dev.get("name")) for dev in doc.get("devices") or [] if isinstance(dev, dict))
            specs.append(CdiSpec(str(f), str(doc.get("kind", "?")), names))
    return specs


def _run_choice(report: HostReport) -> tuple[str, str]:
    """The runtime ``gpuship run`` picks (its own rule when gpuship.run is there) and how GPUs get in."""
    try:
        from ..run.runner import resolve_runtime  # gpuship check is useful without gpuship.run: optional

        runtime: str = resolve_runtime("auto")
    except Exception:  # gpuship.run missing or failing: mirror its documented rule
        runtime = next((e.name for e in report.engines if e.answers), "runc" if shutil.which("runc") else "chroot")
    nvidia_cdi = [c for c in report.cdi if c.kind == "nvidia.com/gpu"]
    if not report.driver or not report.gpus:
        return runtime, 'no GPU on this host: containers start without one (gpuship-check inside says "no GPU visible")'
    engine = next((e for e in report.engines if e.name == runtime), None)
    if runtime == "docker" and engine is not None:
        hook = report.tools.get("nvidia-container-runtime-hook")
        if engine.nvidia_runtime or hook:
            return runtime, "GPUs through --gpus all (NVIDIA Container Toolkit)"
        if nvidia_cdi and engine.cdi_dirs:
            return (
                runtime,
                "GPUs through CDI: --device nvidia.com/gpu=all (gpuship passes --gpus; CDI needs Docker's CDI support)",
            )
        return runtime, (
            "Docker has no NVIDIA support (no nvidia runtime, no nvidia-container-runtime-hook): install the NVIDIA "
            "Container Toolkit, or use --runtime builtin (gpuship injects the driver itself)"
        )
    if runtime == "podman":
        if nvidia_cdi:
            return runtime, "GPUs through CDI: --device nvidia.com/gpu=all"
        return runtime, "no CDI spec for nvidia.com/gpu: run `nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml`"
    return f"built-in runner ({runtime})", "gpuship injects the host driver's libraries and /dev/nvidia* itself"


def probe_host(engines: bool = True) -> HostReport:
    report = HostReport()
    probe_driver(report)
    if engines:
        report.engines = [probe_docker(), probe_podman()]
    report.cdi = probe_cdi()
    report.tools = {name: shutil.which(name) for name in ("runc", *NVIDIA_TOOLS)}
    report.run_runtime, report.run_gpus = _run_choice(report)
    return report
