"""gpuship function runtime: serve one Python function over HTTP, GPU-aware.

This file is copied alone into user images (as ``/opt/gpuship/gpuship_runtime.py``): it imports only the
standard library, Starlette and Uvicorn. Run it as::

    python gpuship_runtime.py pkg.module:func          # or GPUSHIP_FUNCTION=pkg.module:func
    python gpuship_runtime.py --probe /readyz          # exit 0 when the local server answers 200

Endpoints
    POST /invoke   JSON in, JSON out. The body (empty = null) is passed as the one argument
                   (a function without parameters is called with none). 400: the body is not JSON (or is
                   nested deeper than Python parses, or holds NaN/Infinity while the function has no
                   ``allow_nan = True`` attribute); 500: the function raised or returned something that is
                   not JSON; 503 + Retry-After: all MAX_WORKERS busy and MAX_QUEUE waiting, a wait over
                   QUEUE_TIMEOUT, or not ready yet; 413: body over MAX_BODY; 408: the body took longer than
                   BODY_TIMEOUT. Every error is a JSON object {"error": ..., "detail": ...}.
    GET  /status   device (cuda|cpu), why cpu, GPU names, memory, driver / CUDA versions, framework.
    GET  /healthz  200 while the process serves (liveness).
    GET  /readyz   200 once the function is imported and its warm-up call succeeded (readiness).
    GET  /metrics  Prometheus text format: requests by status, latency histogram, in flight, GPU memory.

Slow clients never hold a worker: a request's body is read in full (within BODY_TIMEOUT and MAX_BODY) before
it asks for a place; request headers must arrive within HEADER_TIMEOUT; /healthz and /readyz never wait.

Settings (environment, or the flags of the same name)
    PORT (8080), HOST (0.0.0.0), MAX_WORKERS (4): functions running at once (sync ones in a thread pool
    of that size), MAX_QUEUE (256): requests allowed to wait for a worker (a burst is absorbed, not refused),
    QUEUE_TIMEOUT (30 s): longest wait for a worker before a 503, BODY_TIMEOUT (30 s), HEADER_TIMEOUT (10 s),
    LOG_LEVEL (INFO), MAX_BODY
    (67108864 bytes), GRACEFUL_TIMEOUT (25 s: on SIGTERM, in-flight requests get this long to finish),
    SHUTDOWN_DELAY (0 s: on SIGTERM, first keep serving this long with /readyz at 503, for load balancers),
    GPUSHIP_WARMUP (JSON payload for the warm-up call; else the function's ``warmup`` attribute: a JSON
    value to call it with, or a callable to run; with neither, ready once imported).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextvars
import ctypes
import functools
import importlib
import importlib.util
import inspect
import json
import logging
import math
import os
import platform
import signal
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import FrameType, ModuleType
from typing import TYPE_CHECKING, NoReturn, Required, TypedDict

if TYPE_CHECKING:  # for the type checker only: at run time these are imported where they are used
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from uvicorn.protocols.http.h11_impl import H11Protocol

#: The user's function: any callable; what it takes and returns (a JSON value, a Response) is checked at run time.
UserFunction = Callable[..., object]

RUNTIME_VERSION = "1"
DEFAULT_PORT = 8080
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

log = logging.getLogger("gpuship.runtime")


# -- settings ------------------------------------------------------------------------------------------------
class SettingError(Exception):
    """A bad setting: the runtime prints it as one line and exits 2."""


def _env_int(name: str, default: int, minimum: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingError(f"{name}={raw!r} is not a whole number") from None
    if value < minimum:
        raise SettingError(f"{name}={value} is below {minimum}")
    return value


@dataclass(frozen=True)
class Settings:
    function: str
    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    max_workers: int = 4
    max_queue: int = 256
    log_level: str = "INFO"
    max_body: int = 64 << 20
    queue_timeout: int = 30
    body_timeout: int = 30
    header_timeout: int = 10
    graceful_timeout: int = 25
    shutdown_delay: int = 0
    warmup: str | None = None  # JSON text

    @classmethod
    def from_env(cls, function: str | None = None) -> Settings:
        fn = function or os.environ.get("GPUSHIP_FUNCTION", "")
        if not fn:
            raise SettingError("no function given: pass pkg.module:func or set GPUSHIP_FUNCTION")
        level = os.environ.get("LOG_LEVEL", "INFO").strip().upper() or "INFO"
        level = {"WARN": "WARNING", "FATAL": "CRITICAL"}.get(level, level)
        if level not in ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG", "TRACE"):
            raise SettingError(f"LOG_LEVEL={level!r} is not one of CRITICAL, ERROR, WARNING, INFO, DEBUG")
        return cls(
            function=fn,
            host=os.environ.get("HOST", "0.0.0.0") or "0.0.0.0",
            port=_env_int("PORT", DEFAULT_PORT, 0),
            max_workers=_env_int("MAX_WORKERS", 4, 1),
            max_queue=_env_int("MAX_QUEUE", 256, 0),
            log_level=level,
            max_body=_env_int("MAX_BODY", 64 << 20, 1),
            queue_timeout=_env_int("QUEUE_TIMEOUT", 30, 1),
            body_timeout=_env_int("BODY_TIMEOUT", 30, 1),
            header_timeout=_env_int("HEADER_TIMEOUT", 10, 1),
            graceful_timeout=_env_int("GRACEFUL_TIMEOUT", 25, 0),
            shutdown_delay=_env_int("SHUTDOWN_DELAY", 0, 0),
            warmup=os.environ.get("GPUSHIP_WARMUP") or None,
        )


# -- loading the function ------------------------------------------------------------------------------------
class LoadError(Exception):
    pass


def load_function(ref: str) -> UserFunction:
    """``pkg.module:func`` (or ``pkg.module:obj.method``) -> the callable."""
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise LoadError(f"{ref!r} is not of the form pkg.module:function")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: the working directory is importable
    try:
        obj: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise LoadError(f"cannot import {module_name}: {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise LoadError(f"{module_name} has no attribute {attr!r}") from None
    if not callable(obj):
        raise LoadError(f"{ref} is not callable")
    return obj


def _takes_argument(fn: UserFunction) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in params)


# -- GPU facts -----------------------------------------------------------------------------------------------
class _NvmlMemory(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]


def _version(code: int) -> str:
    """CUDA's integer versions (12040) as text (12.4)."""
    return f"{code // 1000}.{(code % 1000) // 10}"


class GpuFacts(TypedDict, total=False):
    """One GPU as /status and /metrics report it (from a framework, libcuda or NVML)."""

    index: Required[int]
    name: Required[str | None]
    uuid: str | None
    compute_capability: str
    memory_total_bytes: int
    memory_used_bytes: int
    memory_free_bytes: int


class FrameworkFacts(TypedDict, total=False):
    """What the framework found (:func:`_framework_probe`)."""

    name: Required[str]
    version: str
    cuda: str | None
    available: bool
    gpus: list[GpuFacts]
    reason: str


class DeviceFacts(TypedDict, total=False):
    """The device facts of /status (:meth:`GpuProbe.status`)."""

    driver_version: str | None
    cuda_driver_version: str | None
    cuda_runtime_version: str | None
    framework: dict[str, object] | None
    detected_by: str | None
    device: str
    reason: str
    gpus: list[GpuFacts]


class Nvml:
    """The driver's management library (libnvidia-ml.so.1), through ctypes; present with the ``utility``
    driver capability. Reads GPU memory without creating a CUDA context."""

    def __init__(self) -> None:
        self.lib: ctypes.CDLL | None = None
        self.error: str | None = None
        self._lock = threading.Lock()
        try:
            lib = ctypes.CDLL("libnvidia-ml.so.1")
            rc = lib.nvmlInit_v2()
            if rc != 0:
                self.error = f"nvmlInit failed ({self._err(lib, rc)})"
                return
            self.lib = lib
        except OSError:
            self.error = "libnvidia-ml.so.1 not found"

    @staticmethod
    def _err(lib: ctypes.CDLL, rc: int) -> str:
        try:
            lib.nvmlErrorString.restype = ctypes.c_char_p
            message: bytes = lib.nvmlErrorString(rc)
            return message.decode()
        except Exception:  # noqa: BLE001
            return f"error {rc}"

    def _text(self, fn: Callable[..., int], *args: object) -> str | None:
        buf = ctypes.create_string_buffer(256)
        return buf.value.decode(errors="replace") if fn(*args, buf, ctypes.c_uint(256)) == 0 else None

    def driver_version(self) -> str | None:
        return self._text(self.lib.nvmlSystemGetDriverVersion) if self.lib else None

    def cuda_driver_version(self) -> str | None:
        if not self.lib:
            return None
        v = ctypes.c_int()
        return _version(v.value) if self.lib.nvmlSystemGetCudaDriverVersion_v2(ctypes.byref(v)) == 0 else None

    def gpus(self) -> list[GpuFacts]:
        if not self.lib:
            return []
        with self._lock:
            count = ctypes.c_uint()
            if self.lib.nvmlDeviceGetCount_v2(ctypes.byref(count)) != 0:
                return []
            out = []
            for i in range(count.value):
                h = ctypes.c_void_p()
                if self.lib.nvmlDeviceGetHandleByIndex_v2(ctypes.c_uint(i), ctypes.byref(h)) != 0:
                    continue
                g: GpuFacts = {"index": i, "name": self._text(self.lib.nvmlDeviceGetName, h)}
                g["uuid"] = self._text(self.lib.nvmlDeviceGetUUID, h)
                major, minor = ctypes.c_int(), ctypes.c_int()
                if self.lib.nvmlDeviceGetCudaComputeCapability(h, ctypes.byref(major), ctypes.byref(minor)) == 0:
                    g["compute_capability"] = f"{major.value}.{minor.value}"
                mem = _NvmlMemory()
                if self.lib.nvmlDeviceGetMemoryInfo(h, ctypes.byref(mem)) == 0:
                    g["memory_total_bytes"] = mem.total
                    g["memory_used_bytes"] = mem.used
                    g["memory_free_bytes"] = mem.free
                out.append(g)
            return out


class LibCuda:
    """The CUDA driver API (libcuda.so.1), through ctypes; present with the ``compute`` driver capability."""

    CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75
    CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76

    def __init__(self) -> None:
        self.lib: ctypes.CDLL | None = None
        self.error: str | None = None
        try:
            lib = ctypes.CDLL("libcuda.so.1")
        except OSError:
            self.error = "libcuda.so.1 not found"
            return
        rc = lib.cuInit(0)
        if rc != 0:
            self.error = f"cuInit failed: {self._err(lib, rc)}"
            return
        self.lib = lib

    @staticmethod
    def _err(lib: ctypes.CDLL, rc: int) -> str:
        s = ctypes.c_char_p()
        try:
            if lib.cuGetErrorString(rc, ctypes.byref(s)) == 0 and s.value:
                return f"{s.value.decode()} ({rc})"
        except Exception:  # noqa: BLE001
            pass
        return f"CUresult {rc}"

    def driver_version(self) -> str | None:
        if not self.lib:
            return None
        v = ctypes.c_int()
        return _version(v.value) if self.lib.cuDriverGetVersion(ctypes.byref(v)) == 0 else None

    def gpus(self) -> list[GpuFacts]:
        if not self.lib:
            return []
        n = ctypes.c_int()
        if self.lib.cuDeviceGetCount(ctypes.byref(n)) != 0:
            return []
        out = []
        for i in range(n.value):
            dev = ctypes.c_int()
            if self.lib.cuDeviceGet(ctypes.byref(dev), i) != 0:
                continue
            buf = ctypes.create_string_buffer(256)
            self.lib.cuDeviceGetName(buf, 256, dev)
            g: GpuFacts = {"index": i, "name": buf.value.decode(errors="replace")}
            major, minor, total = ctypes.c_int(), ctypes.c_int(), ctypes.c_size_t()
            if (
                self.lib.cuDeviceGetAttribute(
                    ctypes.byref(major), self.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev
                )
                == 0
                and self.lib.cuDeviceGetAttribute(
                    ctypes.byref(minor), self.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev
                )
                == 0
            ):
                g["compute_capability"] = f"{major.value}.{minor.value}"
            if self.lib.cuDeviceTotalMem_v2(ctypes.byref(total), dev) == 0:
                g["memory_total_bytes"] = total.value
            out.append(g)
        return out


def _proc_driver_version() -> str | None:
    """The kernel module's version (visible in containers too), when NVML is not."""
    try:
        with open("/proc/driver/nvidia/version") as fh:
            first = fh.readline()
    except OSError:
        return None
    for word in first.split():
        if word.count(".") >= 1 and word.replace(".", "").isdigit():
            return word
    return None


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _framework(name: str) -> ModuleType:
    """An optional framework, imported by name (none of them is installed where gpuship is type-checked)."""
    return importlib.import_module(name)


def _framework_probe() -> FrameworkFacts | None:
    """What the first importable framework (torch, cupy, numba) sees: its device flag and GPUs."""
    if _importable("torch"):
        try:
            torch = _framework("torch")
            fw: FrameworkFacts = {"name": "torch", "version": str(torch.__version__), "cuda": torch.version.cuda}
            available = bool(torch.cuda.is_available())
            fw["available"] = available
            if available:
                gpus: list[GpuFacts] = []
                for i in range(torch.cuda.device_count()):
                    p = torch.cuda.get_device_properties(i)
                    gpus.append(
                        {
                            "index": i,
                            "name": p.name,
                            "compute_capability": f"{p.major}.{p.minor}",
                            "memory_total_bytes": int(p.total_memory),
                        }
                    )
                fw["gpus"] = gpus
            elif torch.version.cuda is None:
                fw["reason"] = f"torch {torch.__version__} is a CPU-only build"
            return fw
        except Exception as exc:  # noqa: BLE001 - a broken framework is a fact to report, not a crash
            return {"name": "torch", "available": False, "reason": f"torch failed: {type(exc).__name__}: {exc}"}
    if _importable("cupy"):
        try:
            cupy = _framework("cupy")
            rt = cupy.cuda.runtime
            fw = {"name": "cupy", "version": str(cupy.__version__), "cuda": _version(rt.runtimeGetVersion())}
            n = rt.getDeviceCount()
            fw["available"] = n > 0
            gpus = []
            for i in range(n):
                p = rt.getDeviceProperties(i)
                name = p["name"].decode() if isinstance(p["name"], bytes) else str(p["name"])
                gpus.append(
                    {
                        "index": i,
                        "name": name,
                        "compute_capability": f"{p['major']}.{p['minor']}",
                        "memory_total_bytes": int(p["totalGlobalMem"]),
                    }
                )
            fw["gpus"] = gpus
            return fw
        except Exception as exc:  # noqa: BLE001
            return {"name": "cupy", "available": False, "reason": f"cupy sees no GPU: {type(exc).__name__}: {exc}"}
    if _importable("numba"):
        try:
            numba = _framework("numba")
            cuda = _framework("numba.cuda")

            fw = {"name": "numba", "version": str(numba.__version__)}
            available = bool(cuda.is_available())
            fw["available"] = available
            if available:
                ver = cuda.runtime.get_version()
                fw["cuda"] = f"{ver[0]}.{ver[1]}"
                gpus = []
                for i, d in enumerate(cuda.gpus):
                    cc = d.compute_capability
                    name = d.name.decode() if isinstance(d.name, bytes) else str(d.name)
                    gpus.append({"index": i, "name": name, "compute_capability": f"{cc[0]}.{cc[1]}"})
                fw["gpus"] = gpus
            return fw
        except Exception as exc:  # noqa: BLE001
            return {"name": "numba", "available": False, "reason": f"numba sees no GPU: {type(exc).__name__}: {exc}"}
    return None


class GpuProbe:
    """Finds the device once (framework first, then NVML / libcuda); memory is read fresh on each call."""

    def __init__(self) -> None:
        self._static: DeviceFacts | None = None
        self._lock = threading.Lock()
        self._nvml: Nvml | None = None

    @property
    def nvml(self) -> Nvml:
        with self._lock:
            if self._nvml is None:
                self._nvml = Nvml()
            return self._nvml

    def _detect(self) -> DeviceFacts:
        nvml = self.nvml
        cuda = LibCuda()
        fw = _framework_probe()
        driver_gpus = cuda.gpus()
        facts: DeviceFacts = {
            "driver_version": nvml.driver_version() or _proc_driver_version(),
            "cuda_driver_version": cuda.driver_version() or nvml.cuda_driver_version(),
            "cuda_runtime_version": fw.get("cuda") if fw else None,
            "framework": {k: v for k, v in fw.items() if k in ("name", "version", "cuda")} if fw else None,
        }
        if fw is not None:
            facts["detected_by"] = fw["name"]
            gpus = fw.get("gpus") or []
            facts["device"] = "cuda" if fw.get("available") and gpus else "cpu"
            if facts["device"] == "cpu":
                facts["reason"] = fw.get("reason") or self._why_no_gpu(cuda, f"{fw['name']} sees no GPU")
        elif driver_gpus:
            facts["detected_by"] = "libcuda"
            facts["device"] = "cuda"
            gpus = driver_gpus
        else:
            gpus = []
            facts["detected_by"] = "nvml" if nvml.lib else None
            facts["device"] = "cpu"
            facts["reason"] = self._why_no_gpu(cuda, "no GPU")
        facts["gpus"] = gpus if facts["device"] == "cuda" else []
        return facts

    def _why_no_gpu(self, cuda: LibCuda, what: str) -> str:
        nvml_gpus = self.nvml.gpus()
        if cuda.error == "libcuda.so.1 not found":
            if nvml_gpus:
                return (
                    f"{what}: the driver shows {len(nvml_gpus)} GPU(s) but libcuda.so.1 is missing "
                    "(NVIDIA_DRIVER_CAPABILITIES lacks 'compute')"
                )
            return f"{what}: no NVIDIA driver in the container (run with --gpus all or the nvidia runtime)"
        if cuda.error:
            return f"{what}: {cuda.error}"
        return what

    def status(self) -> DeviceFacts:
        with self._lock:
            first = self._static is None
        if first:
            detected = self._detect()
            with self._lock:
                self._static = self._static or detected
        with self._lock:
            facts: DeviceFacts = json.loads(json.dumps(self._static))  # a deep copy
        live = {g["index"]: g for g in self.memory()}
        # NVML numbers every GPU the container holds; a framework only those CUDA_VISIBLE_DEVICES lets
        # through. Add the live memory figures where both see the same set.
        if facts["device"] == "cuda" and live and len(live) == len(facts["gpus"]):
            for g in facts["gpus"]:
                n = live.get(g["index"])
                if n is None:
                    continue
                if n.get("uuid"):
                    g["uuid"] = n["uuid"]
                if "memory_total_bytes" in n:
                    g["memory_total_bytes"] = n["memory_total_bytes"]
                if "memory_used_bytes" in n:
                    g["memory_used_bytes"] = n["memory_used_bytes"]
                if "memory_free_bytes" in n:
                    g["memory_free_bytes"] = n["memory_free_bytes"]
        return facts

    def memory(self) -> list[GpuFacts]:
        """Per-GPU memory from NVML (no CUDA context needed); empty without NVML."""
        nvml = self.nvml
        return nvml.gpus() if nvml.lib else []


def _torch_process_memory() -> list[tuple[int, int, int]]:
    """(device, allocated, reserved) for this process, only if torch already initialised CUDA."""
    torch = sys.modules.get("torch")
    if torch is None:
        return []
    try:
        if not torch.cuda.is_initialized():
            return []
        return [
            (i, int(torch.cuda.memory_allocated(i)), int(torch.cuda.memory_reserved(i)))
            for i in range(torch.cuda.device_count())
        ]
    except Exception:  # noqa: BLE001
        return []


# -- metrics (Prometheus text exposition format 0.0.4) -------------------------------------------------------
def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(v: float) -> str:
    if v == math.inf:
        return "+Inf"
    return repr(float(v)) if isinstance(v, float) and not v.is_integer() else str(int(v))


@dataclass
class Metrics:
    requests: dict[str, int] = field(default_factory=dict)
    buckets: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS))
    latency_sum: float = 0.0
    latency_count: int = 0
    started: float = field(default_factory=time.time)

    def observe(self, status: int, seconds: float | None) -> None:
        key = str(status)
        self.requests[key] = self.requests.get(key, 0) + 1
        if seconds is not None:
            i = bisect.bisect_left(LATENCY_BUCKETS, seconds)
            if i < len(self.buckets):
                self.buckets[i] += 1
            self.latency_sum += seconds
            self.latency_count += 1

    def render(self, rt: Runtime, gpus: list[GpuFacts], torch_mem: list[tuple[int, int, int]]) -> str:
        lines: list[str] = []

        def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
            lines.append(f"# HELP {name} {help_}")
            lines.append(f"# TYPE {name} {kind}")
            lines.extend(f"{name}{labels} {_num(value)}" for labels, value in samples)

        metric(
            "gpuship_requests_total",
            "counter",
            "Invocations (POST /invoke) by HTTP status.",
            [(f'{{status="{s}"}}', n) for s, n in sorted(self.requests.items())] or [('{status="200"}', 0)],
        )
        cumulative, samples = 0, []
        for bound, n in zip(LATENCY_BUCKETS, self.buckets):
            cumulative += n
            samples.append((f'_bucket{{le="{_num(bound)}"}}', cumulative))
        samples.append(('_bucket{le="+Inf"}', self.latency_count))
        lines.append("# HELP gpuship_request_duration_seconds Time to answer an admitted invocation.")
        lines.append("# TYPE gpuship_request_duration_seconds histogram")
        lines.extend(f"gpuship_request_duration_seconds{s} {_num(v)}" for s, v in samples)
        lines.append(f"gpuship_request_duration_seconds_sum {_num(self.latency_sum)}")
        lines.append(f"gpuship_request_duration_seconds_count {self.latency_count}")
        metric(
            "gpuship_in_flight",
            "gauge",
            "Invocations admitted and not yet answered (running + queued).",
            [("", rt.admitted)],
        )
        metric("gpuship_running", "gauge", "Invocations running the function now.", [("", rt.running)])
        metric(
            "gpuship_max_workers",
            "gauge",
            "MAX_WORKERS: invocations allowed to run at once.",
            [("", rt.settings.max_workers)],
        )
        metric("gpuship_ready", "gauge", "1 once the function is imported and warmed up.", [("", int(rt.ready))])
        metric(
            "gpuship_start_time_seconds",
            "gauge",
            "Start time of the process (Unix time).",
            [("", round(self.started, 3))],
        )
        if gpus:

            def gl(g: GpuFacts) -> str:
                return f'{{gpu="{g["index"]}",name="{_label(str(g.get("name") or ""))}"}}'

            metric(
                "gpuship_gpu_memory_used_bytes",
                "gauge",
                "GPU memory in use (all processes, from NVML).",
                [(gl(g), g["memory_used_bytes"]) for g in gpus if "memory_used_bytes" in g],
            )
            metric(
                "gpuship_gpu_memory_total_bytes",
                "gauge",
                "GPU memory in all (from NVML).",
                [(gl(g), g["memory_total_bytes"]) for g in gpus if "memory_total_bytes" in g],
            )
        if torch_mem:
            metric(
                "gpuship_torch_memory_allocated_bytes",
                "gauge",
                "GPU memory this process's tensors hold.",
                [(f'{{gpu="{i}"}}', a) for i, a, _ in torch_mem],
            )
            metric(
                "gpuship_torch_memory_reserved_bytes",
                "gauge",
                "GPU memory torch's caching allocator holds.",
                [(f'{{gpu="{i}"}}', r) for i, _, r in torch_mem],
            )
        return "\n".join(lines) + "\n"


# -- the service ---------------------------------------------------------------------------------------------
class Runtime:
    """Holds the function, its readiness, the bounded executor and the counters of one server process."""

    def __init__(self, settings: Settings, function: UserFunction | None = None) -> None:
        self.settings = settings
        self.function = function
        self.ready = False
        self.ready_error: str | None = "starting: importing the function"
        self.fatal: str | None = None
        self.draining = False
        self.admitted = 0
        self.running = 0
        self.reading = 0
        self.allow_nan = False
        self.metrics = Metrics()
        self.probe = GpuProbe()
        self.executor = ThreadPoolExecutor(settings.max_workers, thread_name_prefix="gpuship-fn")
        self._probe_executor = ThreadPoolExecutor(1, thread_name_prefix="gpuship-probe")
        self.semaphore: asyncio.Semaphore | None = None
        self.on_fatal: Callable[[], None] = lambda: None

    # The function call, wherever it runs.
    async def call(self, payload: object) -> object:
        """The function's answer to ``payload`` (a JSON value): a JSON value or a Response, unchecked here."""
        fn = self.function
        assert fn is not None
        args = (payload,) if _takes_argument(fn) else ()
        result: object
        if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None)):  # noqa: B004 (an object whose __call__ is async)
            pending = fn(*args)
            result = await pending if inspect.isawaitable(pending) else pending
        else:
            loop = asyncio.get_running_loop()
            ctx = contextvars.copy_context()
            result = await loop.run_in_executor(self.executor, functools.partial(ctx.run, fn, *args))
        if inspect.isawaitable(result):
            result = await result
        return result

    async def load(self) -> None:
        """Import the function (in a thread: imports of torch take seconds), then warm it up."""
        loop = asyncio.get_running_loop()
        try:
            if self.function is None:
                self.function = await loop.run_in_executor(self.executor, load_function, self.settings.function)
        except LoadError as exc:
            self.fatal = str(exc)
            log.critical("cannot load %s: %s", self.settings.function, exc)
            self.on_fatal()
            return
        except Exception as exc:  # noqa: BLE001 - the module raised while importing
            self.fatal = f"importing {self.settings.function} raised {type(exc).__name__}: {exc}"
            log.critical("%s\n%s", self.fatal, traceback.format_exc())
            self.on_fatal()
            return
        self.ready_error = "warming up"
        try:
            how = await self._warm_up()
        except Exception as exc:  # noqa: BLE001
            self.ready_error = f"warm-up call failed: {type(exc).__name__}: {exc}"
            log.error("%s\n%s", self.ready_error, traceback.format_exc())
            return
        self.allow_nan = getattr(self.function, "allow_nan", False) is True
        self.ready, self.ready_error = True, None
        log.info("%s ready (%s)", self.settings.function, how)

    async def _warm_up(self) -> str:
        fn = self.function
        assert fn is not None
        if self.settings.warmup is not None:
            try:
                payload = json.loads(self.settings.warmup)
            except ValueError as exc:
                raise ValueError(f"GPUSHIP_WARMUP is not JSON: {exc}") from None
            await self.call(payload)
            return "warm-up call with GPUSHIP_WARMUP"
        hook = getattr(fn, "warmup", None)
        if hook is None:
            return "no warm-up declared"
        if callable(hook):
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(self.executor, hook)
            if inspect.isawaitable(result):
                await result
            return "warm-up hook"
        await self.call(hook)
        return "warm-up call with the function's warmup payload"

    async def status(self) -> dict[str, object]:
        loop = asyncio.get_running_loop()
        facts: dict[str, object] = dict(await loop.run_in_executor(self._probe_executor, self.probe.status))
        facts.update(
            function=self.settings.function,
            ready=self.ready,
            in_flight=self.admitted,
            max_workers=self.settings.max_workers,
            python=platform.python_version(),
            runtime=f"gpuship-runtime {RUNTIME_VERSION}",
            nvidia_visible_devices=os.environ.get("NVIDIA_VISIBLE_DEVICES"),
            cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
        )
        if not self.ready:
            facts["not_ready"] = self.fatal or self.ready_error
        return facts

    def shutdown(self) -> None:
        self.executor.shutdown(wait=True)
        self._probe_executor.shutdown(wait=False, cancel_futures=True)


def _error(status: int, error: str, detail: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    from starlette.responses import JSONResponse

    body = {"error": error}
    if detail is not None:
        body["detail"] = detail
    return JSONResponse(body, status_code=status, headers=headers)


class _TooLarge(Exception):
    pass


class _BadJson(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise _TooLarge(f"{length} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge(f"over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON (give the function an allow_nan = True attribute to accept it)")


def _parse_json(body: bytes, allow_nan: bool) -> object:
    """The request body as a value (empty: None); any malformed body is a :class:`_BadJson`."""
    if not body.strip():
        return None
    try:
        if allow_nan:
            return json.loads(body)
        return json.loads(body, parse_constant=_no_constant)
    except RecursionError:
        raise _BadJson("nested deeper than the runtime parses") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise _BadJson(str(exc)) from None


async def _acquire(semaphore: asyncio.Semaphore, timeout: float) -> bool:
    """Take ``semaphore`` within ``timeout`` seconds; False (holding nothing) if that did not happen."""
    waiter: asyncio.Future[bool] = asyncio.ensure_future(semaphore.acquire())
    try:
        done, _ = await asyncio.wait({waiter}, timeout=timeout)
    except BaseException:  # the request was cancelled while it waited
        _abandon(waiter, semaphore)
        raise
    if done:
        return True
    _abandon(waiter, semaphore)
    return False


def _abandon(waiter: asyncio.Future[bool], semaphore: asyncio.Semaphore) -> None:
    """Stop waiting for ``semaphore``; a place taken just as the wait ran out is given back."""

    def give_back(f: asyncio.Future[bool]) -> None:
        if not f.cancelled() and f.exception() is None:
            semaphore.release()

    waiter.add_done_callback(give_back)
    waiter.cancel()


def _guarded_http(header_timeout: float) -> type[H11Protocol]:
    """Uvicorn's h11 protocol, but a connection whose request headers do not arrive within ``header_timeout``
    seconds of its start (or of its previous response) is closed: a slow client cannot hold sockets open by
    trickling a header a byte at a time (uvicorn's keep-alive timer restarts on every byte)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11(H11Protocol):
        _headers_due: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            self._disarm()
            self._headers_due = self.loop.call_later(header_timeout, self._too_slow)

        def _disarm(self) -> None:
            if self._headers_due is not None:
                self._headers_due.cancel()
                self._headers_due = None

        def _too_slow(self) -> None:
            self._headers_due = None
            if not self.transport.is_closing():
                self.transport.close()

        # uvicorn's H11Protocol narrows asyncio's BaseTransport to Transport (its own override is ignored too)
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def handle_events(self) -> None:
            cycle = self.cycle
            super().handle_events()
            if self.cycle is not cycle:  # a request's headers are in: its body has BODY_TIMEOUT in the app
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request's headers are due in time too

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return GuardedH11


def create_app(settings: Settings, function: UserFunction | None = None) -> Starlette:
    """The Starlette application; ``function`` skips the import (for embedding)."""
    from starlette.applications import Starlette
    from starlette.requests import ClientDisconnect
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route

    rt = Runtime(settings, function)
    capacity = settings.max_workers + settings.max_queue

    async def invoke(request: Request) -> Response:
        if not rt.ready:
            rt.metrics.observe(503, None)
            return _error(503, "not ready", rt.fatal or rt.ready_error, {"Retry-After": "5"})
        if rt.admitted >= capacity or rt.reading >= capacity:
            rt.metrics.observe(503, None)
            return _busy()
        start = time.perf_counter()
        status = 500
        try:
            # The body first, with a deadline and the size limit: a slow or huge upload never holds a place.
            rt.reading += 1
            try:
                body = await asyncio.wait_for(_read_body(request, settings.max_body), settings.body_timeout)
            except _TooLarge as exc:
                status = 413
                return _error(413, "body too large", f"{exc}; MAX_BODY is {settings.max_body} bytes")
            except asyncio.TimeoutError:
                status = 408
                return _error(408, "body too slow", f"not received within BODY_TIMEOUT={settings.body_timeout}s")
            finally:
                rt.reading -= 1
            try:
                payload = _parse_json(body, rt.allow_nan)
            except _BadJson as exc:
                status = 400
                return _error(400, "body is not JSON", str(exc))
            if rt.admitted >= capacity:
                status = 503
                return _busy()
            rt.admitted += 1
            try:
                status, response = await _run(payload)
                return response
            finally:
                rt.admitted -= 1
        except ClientDisconnect:
            status = 499
            return Response(status_code=499)
        finally:
            rt.metrics.observe(status, time.perf_counter() - start)

    def _busy() -> Response:
        return _error(
            503,
            "busy",
            f"{rt.running} running, {rt.admitted - rt.running} queued (MAX_WORKERS="
            f"{settings.max_workers}, MAX_QUEUE={settings.max_queue}); retry later",
            {"Retry-After": "1"},
        )

    async def _run(payload: object) -> tuple[int, Response]:
        """Wait (up to QUEUE_TIMEOUT) for a worker, call the function, render its answer."""
        assert rt.semaphore is not None
        if not await _acquire(rt.semaphore, settings.queue_timeout):
            detail = f"no worker free within QUEUE_TIMEOUT={settings.queue_timeout}s; retry later"
            return 503, _error(503, "busy", detail, {"Retry-After": "1"})
        rt.running += 1
        try:
            result = await rt.call(payload)
        except Exception as exc:  # noqa: BLE001 - the function's failure is the caller's answer
            log.error("%s raised %s: %s\n%s", settings.function, type(exc).__name__, exc, traceback.format_exc())
            return 500, _error(500, "function raised", f"{type(exc).__name__}: {exc}")
        finally:
            rt.running -= 1
            rt.semaphore.release()
        if isinstance(result, Response):
            return result.status_code, result
        try:
            content = json.dumps(result, ensure_ascii=False, allow_nan=rt.allow_nan, separators=(",", ":"))
        except (TypeError, ValueError, RecursionError) as exc:
            return 500, _error(500, "result is not JSON", f"{type(exc).__name__}: {exc}")
        return 200, Response(content.encode("utf-8"), media_type="application/json")

    async def status(request: Request) -> Response:
        return JSONResponse(await rt.status())

    async def healthz(request: Request) -> Response:
        if rt.fatal:
            return _error(500, "failed", rt.fatal)
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if rt.draining:
            return _error(503, "not ready", "shutting down")
        if not rt.ready:
            return _error(503, "not ready", rt.fatal or rt.ready_error, {"Retry-After": "5"})
        return JSONResponse({"status": "ready"})

    async def metrics(request: Request) -> Response:
        loop = asyncio.get_running_loop()
        gpus, torch_mem = await loop.run_in_executor(
            rt._probe_executor, lambda: (rt.probe.memory(), _torch_process_memory())
        )
        text = rt.metrics.render(rt, gpus, torch_mem)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    async def index(request: Request) -> Response:
        return JSONResponse(
            {
                "function": settings.function,
                "endpoints": ["POST /invoke", "GET /status", "GET /healthz", "GET /readyz", "GET /metrics"],
            }
        )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        rt.semaphore = asyncio.Semaphore(settings.max_workers)
        loader = asyncio.create_task(rt.load())
        try:
            yield
        finally:
            loader.cancel()
            await asyncio.get_running_loop().run_in_executor(None, rt.shutdown)

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/invoke", invoke, methods=["POST"]),
            Route("/status", status),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
        ],
        lifespan=lifespan,
    )
    app.state.runtime = rt
    return app


# -- the process ---------------------------------------------------------------------------------------------
def serve(settings: Settings) -> int:
    """Run the server until SIGTERM/SIGINT; in-flight requests finish first. Returns the exit status."""
    import uvicorn

    app = create_app(settings)
    rt: Runtime = app.state.runtime
    level = "trace" if settings.log_level == "TRACE" else settings.log_level.lower()
    logging.basicConfig(level=getattr(logging, settings.log_level, 5), format="%(levelname)s:     %(message)s")
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=level,
        access_log=settings.log_level in ("DEBUG", "TRACE"),
        timeout_graceful_shutdown=settings.graceful_timeout,
        http=_guarded_http(settings.header_timeout),
        lifespan="on",
        server_header=False,
    )

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            delay = settings.shutdown_delay
            if rt.draining or delay <= 0 or sig != signal.SIGTERM:
                rt.draining = True
                super().handle_exit(sig, frame)
                return
            # Keep serving for SHUTDOWN_DELAY seconds with /readyz at 503, so a load balancer (a Kubernetes
            # Service) stops sending new requests before the listener closes; then shut down as usual.
            rt.draining = True
            log.info("SIGTERM: draining for %ss before shutting down", delay)
            timer = threading.Timer(delay, super().handle_exit, (sig, frame))
            timer.daemon = True
            timer.start()

    server = Server(config)

    def stop_fatal() -> None:
        server.should_exit = True

    rt.on_fatal = stop_fatal
    # Uvicorn re-raises the signal it caught once it has shut down; with these handlers in place that is a
    # no-op, so a graceful stop on SIGTERM exits 0 (Kubernetes reads that as a clean stop).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda s, f: None)
    asyncio.run(server.serve())
    if rt.fatal:
        print(f"gpuship-runtime: error: {rt.fatal}", file=sys.stderr)
        return 1
    return 0


def probe(path: str, port: int, timeout: float = 5.0) -> int:
    """Exit status 0 when ``GET http://127.0.0.1:PORT/PATH`` answers 200 (for container health checks)."""
    url = f"http://127.0.0.1:{port}/{path.lstrip('/')}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback only
            return 0 if resp.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"gpuship-runtime: {url}: {exc}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="gpuship_runtime", description="Serve one Python function over HTTP (POST /invoke)."
    )
    parser.add_argument("function", nargs="?", help="pkg.module:func (default: $GPUSHIP_FUNCTION)")
    parser.add_argument("--port", type=int, help="listen port (default: $PORT or 8080)")
    parser.add_argument("--host", help="listen address (default: $HOST or 0.0.0.0)")
    parser.add_argument("--max-workers", type=int, help="functions running at once (default: $MAX_WORKERS or 4)")
    parser.add_argument("--max-queue", type=int, help="requests that may wait (default: $MAX_QUEUE or 256)")
    parser.add_argument("--log-level", help="CRITICAL..DEBUG (default: $LOG_LEVEL or INFO)")
    parser.add_argument("--probe", metavar="PATH", help="check a running server's PATH (e.g. /readyz) and exit")
    args = parser.parse_args(argv)
    for flag, env in (
        ("port", "PORT"),
        ("host", "HOST"),
        ("max_workers", "MAX_WORKERS"),
        ("max_queue", "MAX_QUEUE"),
        ("log_level", "LOG_LEVEL"),
    ):
        value = getattr(args, flag)
        if value is not None:
            os.environ[env] = str(value)
    try:
        if args.probe is not None:
            return probe(args.probe, _env_int("PORT", DEFAULT_PORT, 0))
        settings = Settings.from_env(args.function)
    except SettingError as exc:
        print(f"gpuship-runtime: error: {exc}", file=sys.stderr)
        return 2
    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
