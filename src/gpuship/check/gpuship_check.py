"""gpuship-check: prove that this container can use its GPU, or say in one line per failure why not.

Standard library only: gpuship copies this one file into every GPU image (``/usr/local/bin/gpuship-check``)
and it must run with nothing else (``python3 -I -S gpuship_check.py`` works).

What it checks, in order:

1. the driver: ``libcuda.so.1`` loads (it is injected by the NVIDIA runtime / CDI, never part of the image),
   ``cuInit`` succeeds, ``cuDriverGetVersion`` and NVML's ``nvmlSystemGetDriverVersion`` give the versions, and
   the driver is new enough for the image's CUDA (``/etc/gpuship/gpu.json`` or ``NVIDIA_REQUIRE_CUDA``);
2. each GPU: name, memory and compute capability, and whether the image has code for that architecture;
3. the framework-free core: a built-in PTX vector add is JIT-compiled by the driver (``cuModuleLoadDataEx``),
   launched (``cuLaunchKernel``) and its result verified, through ctypes on libcuda alone;
4. each framework the image carries (torch, cupy, numba-cuda, jax, cuda-bindings): it sees the GPU and a tiny
   kernel's result is right (each in its own process, so one crash cannot hide the others).

Exit status 0 when everything passed, 1 otherwise (2 for bad arguments). ``--json`` prints one JSON document.
``--ptx-version 9.9`` (or ``GPUSHIP_CHECK_PTX_VERSION``, or ``"check": {"ptx_version": ...}`` in gpu.json) writes
the core kernel with that PTX ISA version, to prove the "PTX newer than the driver" diagnosis.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import subprocess
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: this file runs on the image's Python, whatever its age
    from collections.abc import Callable

MANIFEST = "/etc/gpuship/gpu.json"
ENV_MANIFEST = "GPUSHIP_GPU_MANIFEST"
ENV_PTX = "GPUSHIP_CHECK_PTX_VERSION"
ENV_LIB_DIRS = "GPUSHIP_DRIVER_LIB_DIRS"

#: Where a driver's libraries may live when the loader's path does not name them (the NVIDIA runtime's own
#: directory first). Never a ``stubs`` directory: the toolkit's stub libcuda is not a driver.
DRIVER_DIRS = (
    "/usr/local/nvidia/lib64",
    "/usr/local/nvidia/lib",
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/lib/wsl/lib",
)

NO_GPU = "no GPU visible: the container was started without GPU support (use --gpus all / the nvidia runtime / CDI)"

#: CUDA toolkit -> PTX ISA version (a copy of gpuship.cuda.data.PTX_ISA; a test keeps them equal).
PTX_ISA = {
    "11.0": "7.0",
    "11.1": "7.1",
    "11.2": "7.2",
    "11.3": "7.3",
    "11.4": "7.4",
    "11.5": "7.5",
    "11.6": "7.6",
    "11.7": "7.7",
    "11.8": "7.8",
    "12.0": "8.0",
    "12.1": "8.1",
    "12.2": "8.2",
    "12.3": "8.3",
    "12.4": "8.4",
    "12.5": "8.5",
    "12.6": "8.5",
    "12.8": "8.7",
    "12.9": "8.8",
    "13.0": "9.0",
    "13.1": "9.1",
    "13.2": "9.2",
}
#: CUDA toolkit -> minimum driver (a copy of gpuship.cuda.data.MIN_DRIVER; a test keeps them equal).
MIN_DRIVER = {
    "11.0": "450.36.06",
    "11.1": "455.23.05",
    "11.2": "460.27.03",
    "11.3": "465.19.01",
    "11.4": "470.42.01",
    "11.5": "495.29.05",
    "11.6": "510.39.01",
    "11.7": "515.43.04",
    "11.8": "520.61.05",
    "12.0": "525.60.13",
    "12.1": "530.30.02",
    "12.2": "535.54.03",
    "12.3": "545.23.06",
    "12.4": "550.54.14",
    "12.5": "555.42.02",
    "12.6": "560.28.03",
    "12.8": "570.26",
    "12.9": "575.51.03",
    "13.0": "580.65.06",
    "13.1": "590.44.01",
    "13.2": "595.45.04",
}

# CUDA driver API constants (cuda.h)
CUDA_SUCCESS = 0
CUDA_ERROR_NOT_INITIALIZED = 3
CUDA_ERROR_STUB_LIBRARY = 34
CUDA_ERROR_INSUFFICIENT_DRIVER = 35
CUDA_ERROR_NO_DEVICE = 100
CUDA_ERROR_NO_BINARY_FOR_GPU = 209
CUDA_ERROR_INVALID_PTX = 218
CUDA_ERROR_JIT_COMPILER_NOT_FOUND = 221
CUDA_ERROR_UNSUPPORTED_PTX_VERSION = 222
CUDA_ERROR_SYSTEM_DRIVER_MISMATCH = 803
CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE = 804
CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16
CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75
CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76
CU_JIT_INFO_LOG_BUFFER = 3
CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES = 4
CU_JIT_ERROR_LOG_BUFFER = 5
CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES = 6

DEFAULT_PTX_VERSION = "7.0"  # CUDA 11.0's ISA: every driver since R450 JITs it

#: The built-in kernel: c[i] = a[i] + b[i]. Written by hand against the PTX ISA; ``{version}`` and ``{target}``
#: are filled in at run time (checked with ptxas 13.0 at .version 7.0 / .target sm_52).
PTX_VADD = """\
.version {version}
.target {target}
.address_size 64

.visible .entry gpuship_vadd(
    .param .u64 gpuship_vadd_a,
    .param .u64 gpuship_vadd_b,
    .param .u64 gpuship_vadd_c,
    .param .u32 gpuship_vadd_n
)
{{
    .reg .pred  %p<2>;
    .reg .f32   %f<4>;
    .reg .b32   %r<6>;
    .reg .b64   %rd<11>;

    ld.param.u64    %rd1, [gpuship_vadd_a];
    ld.param.u64    %rd2, [gpuship_vadd_b];
    ld.param.u64    %rd3, [gpuship_vadd_c];
    ld.param.u32    %r2, [gpuship_vadd_n];
    mov.u32         %r3, %ctaid.x;
    mov.u32         %r4, %ntid.x;
    mov.u32         %r5, %tid.x;
    mad.lo.s32      %r1, %r3, %r4, %r5;
    setp.ge.s32     %p1, %r1, %r2;
    @%p1 bra        DONE;
    cvta.to.global.u64  %rd4, %rd1;
    mul.wide.s32    %rd5, %r1, 4;
    add.s64         %rd6, %rd4, %rd5;
    cvta.to.global.u64  %rd7, %rd2;
    add.s64         %rd8, %rd7, %rd5;
    ld.global.f32   %f1, [%rd6];
    ld.global.f32   %f2, [%rd8];
    add.f32         %f3, %f1, %f2;
    cvta.to.global.u64  %rd9, %rd3;
    add.s64         %rd10, %rd9, %rd5;
    st.global.f32   [%rd10], %f3;
DONE:
    ret;
}}
"""


def ptx_source(version: str = DEFAULT_PTX_VERSION, target: str = "sm_52") -> str:
    return PTX_VADD.format(version=version, target=target)


# -- small helpers ------------------------------------------------------------------------------------------------


def vt(text: str) -> tuple:
    return tuple(int(p) for p in re.findall(r"\d+", str(text)))


def cuda_str(version: int) -> str:
    """cuDriverGetVersion's 13000 -> "13.0"."""
    return f"{version // 1000}.{(version % 1000) // 10}"


def driver_ptx_isa(driver_cuda: str) -> str:
    """The newest PTX ISA a driver reporting CUDA ``driver_cuda`` JITs (13.N beyond the table -> 9.N)."""
    if driver_cuda in PTX_ISA:
        return PTX_ISA[driver_cuda]
    major, minor = vt(driver_cuda)[:2]
    newest = max(PTX_ISA, key=vt)
    if vt(driver_cuda) > vt(newest):
        return f"{major - 4}.{minor}"
    older = [k for k in PTX_ISA if vt(k) <= (major, minor)]
    return PTX_ISA[max(older, key=vt)] if older else "0.0"


def cuda_for_ptx_isa(isa: str) -> str | None:
    for line in sorted(PTX_ISA, key=vt):
        if vt(PTX_ISA[line]) >= vt(isa):
            return line
    return None


def read_manifest(path: str | None = None) -> dict:
    path = path or os.environ.get(ENV_MANIFEST) or MANIFEST
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def required_cuda(manifest: dict) -> str:
    """The CUDA version this image needs the driver to report: gpu.json, else NVIDIA_REQUIRE_CUDA."""
    if manifest.get("require_cuda"):
        return str(manifest["require_cuda"])
    env = os.environ.get("NVIDIA_REQUIRE_CUDA", "")
    m = re.search(r"cuda>=\s*(\d+\.\d+)", env)
    return m.group(1) if m else ""


# -- the driver through ctypes ------------------------------------------------------------------------------------


class CudaError(Exception):
    def __init__(self, call: str, code: int, name: str, text: str, log: str = "") -> None:
        super().__init__(f"{call}: {name} ({code}): {text}")
        self.call, self.code, self.name, self.text, self.log = call, code, name, text, log


def load_driver_library(soname: str) -> tuple[ctypes.CDLL, str] | None:
    """Load ``soname`` (libcuda.so.1 / libnvidia-ml.so.1) from the loader's path, else from known driver dirs."""
    try:
        lib = ctypes.CDLL(soname)
        return lib, _loaded_path(soname) or soname
    except OSError:
        pass
    dirs = [d for d in os.environ.get(ENV_LIB_DIRS, "").split(":") if d] + list(DRIVER_DIRS)
    for d in dirs:
        path = os.path.join(d, soname)
        if os.path.exists(path) and "stubs" not in path.split(os.sep):
            try:
                return ctypes.CDLL(path), path
            except OSError:
                continue
    return None


def _loaded_path(soname: str) -> str:
    """Where the loader found ``soname`` (from /proc/self/maps)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                stem = soname.split(".so", 1)[0] + ".so"  # libcuda.so.1 is mapped as libcuda.so.580.159.04
                if re.search(rf"/{re.escape(stem)}(\.[\d.]+)?$", line.rstrip()):
                    return line.split()[-1]
    except OSError:
        pass
    return ""


class Cuda:
    """The handful of CUDA driver API entry points the check needs, with their exact C signatures."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib
        c = ctypes
        u64, vp, ci, cu, sz = c.c_uint64, c.c_void_p, c.c_int, c.c_uint, c.c_size_t
        P = c.POINTER
        sigs = {
            "cuInit": [cu],
            "cuDriverGetVersion": [P(ci)],
            "cuDeviceGetCount": [P(ci)],
            "cuDeviceGet": [P(ci), ci],
            "cuDeviceGetName": [c.c_char_p, ci, ci],
            "cuDeviceTotalMem_v2": [P(sz), ci],
            "cuDeviceGetAttribute": [P(ci), ci, ci],
            "cuCtxCreate_v2": [P(vp), cu, ci],
            "cuCtxDestroy_v2": [vp],
            "cuCtxSynchronize": [],
            "cuDevicePrimaryCtxRetain": [P(vp), ci],
            "cuDevicePrimaryCtxRelease_v2": [ci],
            "cuCtxSetCurrent": [vp],
            "cuModuleLoadDataEx": [P(vp), vp, cu, P(ci), P(vp)],
            "cuModuleGetFunction": [P(vp), vp, c.c_char_p],
            "cuModuleUnload": [vp],
            "cuMemAlloc_v2": [P(u64), sz],
            "cuMemFree_v2": [u64],
            "cuMemcpyHtoD_v2": [u64, vp, sz],
            "cuMemcpyDtoH_v2": [vp, u64, sz],
            "cuLaunchKernel": [vp, cu, cu, cu, cu, cu, cu, cu, vp, P(vp), P(vp)],
            "cuGetErrorName": [ci, P(c.c_char_p)],
            "cuGetErrorString": [ci, P(c.c_char_p)],
        }
        self.fns: dict[str, Callable[..., int]] = {}
        for name, args in sigs.items():
            fn = getattr(lib, name, None)
            if fn is None:
                continue
            fn.argtypes = args
            fn.restype = ci
            self.fns[name] = fn

    def has(self, name: str) -> bool:
        return name in self.fns

    def error_name(self, code: int) -> tuple[str, str]:
        name = ctypes.c_char_p()
        text = ctypes.c_char_p()
        n = s = ""
        if self.has("cuGetErrorName") and self.fns["cuGetErrorName"](code, ctypes.byref(name)) == 0 and name.value:
            n = name.value.decode(errors="replace")
        if self.has("cuGetErrorString") and self.fns["cuGetErrorString"](code, ctypes.byref(text)) == 0 and text.value:
            s = text.value.decode(errors="replace")
        return n or f"CUDA error {code}", s

    def call(self, name: str, *args: object, log: str = "") -> None:
        fn = self.fns.get(name)
        if fn is None:
            raise CudaError(name, -1, "missing", f"libcuda has no {name}")
        code = fn(*args)
        if code != CUDA_SUCCESS:
            n, s = self.error_name(code)
            raise CudaError(name, code, n, s, log)

    # -- queries --
    def driver_version(self) -> int:
        v = ctypes.c_int()
        self.call("cuDriverGetVersion", ctypes.byref(v))
        return v.value

    def device_count(self) -> int:
        n = ctypes.c_int()
        self.call("cuDeviceGetCount", ctypes.byref(n))
        return n.value

    def device(self, ordinal: int) -> int:
        d = ctypes.c_int()
        self.call("cuDeviceGet", ctypes.byref(d), ordinal)
        return d.value

    def device_info(self, dev: int) -> dict:
        buf = ctypes.create_string_buffer(256)
        self.call("cuDeviceGetName", buf, len(buf), dev)
        mem = ctypes.c_size_t()
        self.call("cuDeviceTotalMem_v2", ctypes.byref(mem), dev)
        major, minor, sms = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
        self.call("cuDeviceGetAttribute", ctypes.byref(major), CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev)
        self.call("cuDeviceGetAttribute", ctypes.byref(minor), CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev)
        self.call("cuDeviceGetAttribute", ctypes.byref(sms), CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev)
        return {
            "name": buf.value.decode(errors="replace"),
            "memory_bytes": mem.value,
            "cc": f"{major.value}.{minor.value}",
            "sm": f"sm_{major.value}{minor.value}",
            "multiprocessors": sms.value,
        }

    # -- the core: JIT a PTX vector add, run it, verify it --
    def run_vadd(self, dev: int, ptx: str, n: int = 4096) -> str:
        """Load ``ptx`` on device ``dev``, add two vectors of ``n`` floats, verify; returns a description."""
        ctx = ctypes.c_void_p()
        primary = False
        if self.has("cuCtxCreate_v2"):
            self.call("cuCtxCreate_v2", ctypes.byref(ctx), 0, dev)
        else:  # a driver without the _v2 symbol: the primary context does the same job
            self.call("cuDevicePrimaryCtxRetain", ctypes.byref(ctx), dev)
            self.call("cuCtxSetCurrent", ctx)
            primary = True
        module = ctypes.c_void_p()
        ptrs: list[ctypes.c_uint64] = []
        try:
            image = ctypes.create_string_buffer(ptx.encode())  # NUL-terminated, as cuModuleLoadData wants
            err_log = ctypes.create_string_buffer(8192)
            info_log = ctypes.create_string_buffer(8192)
            opts = (ctypes.c_int * 4)(
                CU_JIT_ERROR_LOG_BUFFER,
                CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
                CU_JIT_INFO_LOG_BUFFER,
                CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES,
            )
            vals = (ctypes.c_void_p * 4)(
                ctypes.cast(err_log, ctypes.c_void_p),
                ctypes.c_void_p(len(err_log)),
                ctypes.cast(info_log, ctypes.c_void_p),
                ctypes.c_void_p(len(info_log)),
            )
            try:
                self.call(
                    "cuModuleLoadDataEx", ctypes.byref(module), ctypes.cast(image, ctypes.c_void_p), 4, opts, vals
                )
            except CudaError as exc:
                exc.log = err_log.value.decode(errors="replace").strip()
                raise
            fn = ctypes.c_void_p()
            self.call("cuModuleGetFunction", ctypes.byref(fn), module, b"gpuship_vadd")

            nbytes = n * 4
            a = (ctypes.c_float * n)(*[float(i) for i in range(n)])
            b = (ctypes.c_float * n)(*[float(2 * i + 1) for i in range(n)])
            c = (ctypes.c_float * n)()
            for _ in range(3):
                p = ctypes.c_uint64()
                self.call("cuMemAlloc_v2", ctypes.byref(p), nbytes)
                ptrs.append(p)
            d_a, d_b, d_c = ptrs
            self.call("cuMemcpyHtoD_v2", d_a, ctypes.cast(a, ctypes.c_void_p), nbytes)
            self.call("cuMemcpyHtoD_v2", d_b, ctypes.cast(b, ctypes.c_void_p), nbytes)
            args = [ctypes.c_uint64(d_a.value), ctypes.c_uint64(d_b.value), ctypes.c_uint64(d_c.value), ctypes.c_int(n)]
            params = (ctypes.c_void_p * 4)(*[ctypes.addressof(x) for x in args])
            block = 256
            grid = (n + block - 1) // block
            self.call("cuLaunchKernel", fn, grid, 1, 1, block, 1, 1, 0, None, params, None)
            self.call("cuCtxSynchronize")
            self.call("cuMemcpyDtoH_v2", ctypes.cast(c, ctypes.c_void_p), d_c, nbytes)
            wrong = [i for i in range(n) if c[i] != float(3 * i + 1)]
            if wrong:
                i = wrong[0]
                raise CudaError(
                    "verify",
                    -2,
                    "wrong result",
                    f"{len(wrong)} of {n} sums wrong (c[{i}] = {c[i]}, expected {3 * i + 1})",
                )
            return f"vector add of {n} floats verified ({grid}x{block} threads)"
        finally:
            for p in ptrs:
                self.fns["cuMemFree_v2"](p)
            if module.value:
                self.fns["cuModuleUnload"](module)
            if primary:
                self.fns["cuDevicePrimaryCtxRelease_v2"](dev)
            elif ctx.value:
                self.fns["cuCtxDestroy_v2"](ctx)


class _NvmlMemory(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]


def nvml_info() -> dict:
    """Driver version and GPUs from NVML (``libnvidia-ml.so.1``, the ``utility`` capability). {} if absent."""
    found = load_driver_library("libnvidia-ml.so.1")
    if found is None:
        return {}
    lib, path = found
    c = ctypes
    out: dict = {"library": path}
    try:
        if lib.nvmlInit_v2() != 0:
            out["error"] = "nvmlInit failed"
            return out
    except AttributeError:
        return out
    try:
        buf = c.create_string_buffer(96)
        lib.nvmlSystemGetDriverVersion.argtypes = [c.c_char_p, c.c_uint]
        if lib.nvmlSystemGetDriverVersion(buf, len(buf)) == 0:
            out["driver_version"] = buf.value.decode()
        v = c.c_int()
        if hasattr(lib, "nvmlSystemGetCudaDriverVersion_v2") and lib.nvmlSystemGetCudaDriverVersion_v2(c.byref(v)) == 0:
            out["cuda"] = cuda_str(v.value)
        count = c.c_uint()
        gpus = []
        if lib.nvmlDeviceGetCount_v2(c.byref(count)) == 0:
            lib.nvmlDeviceGetHandleByIndex_v2.argtypes = [c.c_uint, c.POINTER(c.c_void_p)]
            lib.nvmlDeviceGetName.argtypes = [c.c_void_p, c.c_char_p, c.c_uint]
            lib.nvmlDeviceGetUUID.argtypes = [c.c_void_p, c.c_char_p, c.c_uint]
            lib.nvmlDeviceGetMemoryInfo.argtypes = [c.c_void_p, c.POINTER(_NvmlMemory)]
            lib.nvmlDeviceGetCudaComputeCapability.argtypes = [c.c_void_p, c.POINTER(c.c_int), c.POINTER(c.c_int)]
            for i in range(count.value):
                h = c.c_void_p()
                if lib.nvmlDeviceGetHandleByIndex_v2(i, c.byref(h)) != 0:
                    continue
                g: dict = {"index": i}
                if lib.nvmlDeviceGetName(h, buf, len(buf)) == 0:
                    g["name"] = buf.value.decode(errors="replace")
                if lib.nvmlDeviceGetUUID(h, buf, len(buf)) == 0:
                    g["uuid"] = buf.value.decode(errors="replace")
                mem = _NvmlMemory()
                if lib.nvmlDeviceGetMemoryInfo(h, c.byref(mem)) == 0:
                    g["memory_bytes"] = mem.total
                ma, mi = c.c_int(), c.c_int()
                if lib.nvmlDeviceGetCudaComputeCapability(h, c.byref(ma), c.byref(mi)) == 0:
                    g["cc"] = f"{ma.value}.{mi.value}"
                    g["sm"] = f"sm_{ma.value}{mi.value}"
                gpus.append(g)
        out["gpus"] = gpus
    finally:
        lib.nvmlShutdown()
    return out


def proc_driver_version() -> str:
    """The kernel module's version from /proc/driver/nvidia/version (visible in containers too)."""
    try:
        with open("/proc/driver/nvidia/version", encoding="utf-8") as fh:
            m = re.search(r"Kernel Module(?: for \S+)?\s+(\d+\.\d+(?:\.\d+)?)", fh.read())
            return m.group(1) if m else ""
    except OSError:
        return ""


# -- the report ---------------------------------------------------------------------------------------------------


class Report:
    def __init__(self) -> None:
        self.checks: list[dict] = []
        self.facts: dict = {}

    def ok(self, name: str, detail: str) -> None:
        self.checks.append({"check": name, "ok": True, "detail": detail})

    def fail(self, name: str, cause: str, **extra: object) -> None:
        self.checks.append({"check": name, "ok": False, "detail": cause, **extra})

    def note(self, name: str, detail: str) -> None:
        self.checks.append({"check": name, "ok": None, "detail": detail})

    @property
    def failures(self) -> list[dict]:
        return [c for c in self.checks if c["ok"] is False]

    def to_json(self) -> dict:
        return {
            "ok": not self.failures,
            **self.facts,
            "checks": self.checks,
            "failures": [c["detail"] for c in self.failures],
        }


def _no_driver_cause() -> str:
    """Why libcuda.so.1 is missing: no GPU support at all, or devices without the compute capability."""
    devices = os.path.exists("/dev/nvidiactl") or any(re.fullmatch(r"nvidia\d+", n) for n in _listdir("/dev"))
    nvml = load_driver_library("libnvidia-ml.so.1") is not None
    if devices or nvml:
        caps = os.environ.get("NVIDIA_DRIVER_CAPABILITIES", "")
        return (
            "no GPU visible: the GPU devices are there but libcuda.so.1 is not: the driver's compute libraries were not "
            f"injected (NVIDIA_DRIVER_CAPABILITIES={caps or 'unset'}; it must include compute, e.g. compute,utility)"
        )
    return NO_GPU + ": libcuda.so.1 is not loadable"


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _init_cause(exc: CudaError) -> str:
    visible = os.environ.get("NVIDIA_VISIBLE_DEVICES")
    if exc.code == CUDA_ERROR_NO_DEVICE:
        extra = f" (NVIDIA_VISIBLE_DEVICES={visible})" if visible is not None else ""
        return f"no GPU visible: the driver is injected but no GPU is assigned to the container{extra}"
    if exc.code == CUDA_ERROR_STUB_LIBRARY:
        return (
            "no GPU visible: the libcuda.so.1 found is the CUDA toolkit's stub, not the driver: start the container with "
            "GPU support, and do not put a stubs directory on LD_LIBRARY_PATH"
        )
    if exc.code == CUDA_ERROR_INSUFFICIENT_DRIVER:
        return "the driver is older than this libcuda expects (CUDA_ERROR_INSUFFICIENT_DRIVER): update the host driver"
    if exc.code == CUDA_ERROR_SYSTEM_DRIVER_MISMATCH:
        return (
            "libcuda and the kernel driver disagree (CUDA_ERROR_SYSTEM_DRIVER_MISMATCH, 803): a forward-compatibility "
            "libcuda (cuda-compat) in the image does not match the host driver: remove it or match the host"
        )
    if exc.code == CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE:
        return (
            "forward compatibility (cuda-compat) is used but this GPU does not support it (804): only data-center GPUs "
            "do; update the host driver instead"
        )
    return f"cuInit failed: {exc.name} ({exc.code}) {exc.text}"


def check_driver(report: Report, manifest: dict) -> Cuda | None:
    found = load_driver_library("libcuda.so.1")
    if found is None:
        report.fail("driver", _no_driver_cause())
        return None
    lib, path = found
    cuda = Cuda(lib)
    report.facts["libcuda"] = path
    try:
        cuda.call("cuInit", 0)
    except CudaError as exc:
        report.fail("driver", _init_cause(exc), code=exc.code)
        return None
    version = cuda.driver_version()
    driver_cuda = cuda_str(version)
    nv = nvml_info()
    driver = nv.get("driver_version") or proc_driver_version()
    report.facts["driver"] = {"version": driver, "cuda": driver_cuda, "ptx_isa": driver_ptx_isa(driver_cuda)}
    if nv.get("gpus"):
        report.facts["nvml_gpus"] = nv["gpus"]
    shown = f"driver {driver} " if driver else "driver "
    need = required_cuda(manifest)
    if need and vt(driver_cuda) < vt(need):
        image_cuda = manifest.get("cuda") or need
        need_driver = manifest.get("min_driver") or MIN_DRIVER.get(need, "")
        branch = str(vt(driver)[0]) if driver else ""
        report.fail(
            "driver",
            f"the driver ({driver or 'unknown'}, CUDA {driver_cuda}) is older than this image's CUDA {image_cuda}: it needs "
            f"driver >= {need_driver or need}; update the host driver"
            + (f', or rebuild the image with min-driver = "{branch}"' if branch else ""),
        )
    else:
        report.ok(
            "driver",
            f"{shown}(CUDA {driver_cuda}, JITs PTX up to ISA {driver_ptx_isa(driver_cuda)}) from {path}"
            + (f"; image needs CUDA >= {need}" if need else ""),
        )
    if not nv:
        report.note(
            "nvml",
            "libnvidia-ml.so.1 not loadable (NVIDIA_DRIVER_CAPABILITIES lacks utility): nvidia-smi will not work",
        )
    return cuda


def cc_tuple(arch: str) -> tuple:
    """``"sm_90"`` / ``"sm_90a"`` / ``"90"`` / ``"9.0"`` -> ``(9, 0)``."""
    text = str(arch).strip().lower()
    m = re.fullmatch(r"(?:sm_|compute_)?(\d+)[af]?", text)
    if m:
        digits = m.group(1)
        return (int(digits[:-1] or 0), int(digits[-1]))
    return vt(text)[:2]


def _runs_on(cc: str, sass: list, ptx: str) -> bool:
    """SASS runs on the same major and an equal or higher minor; PTX is JIT-compiled for equal or newer GPUs."""
    have = cc_tuple(cc)
    for a in sass:
        av = cc_tuple(a)
        if av[0] == have[0] and av[1] <= have[1]:
            return True
    return bool(ptx) and cc_tuple(ptx) <= have


def check_arch(report: Report, index: int, gpu: dict, manifest: dict) -> None:
    name = f"gpu{index} arch"
    cc, smv = gpu["cc"], gpu["sm"]
    archs = manifest.get("archs") or {}
    targets = [str(t) for t in manifest.get("targets") or []]
    pruned = manifest.get("pruned") or {}
    kept = [str(a).split(":")[-1] for a in pruned.get("archs") or []]
    if kept:  # prune-archs left only these: the GPU must be able to run one of them
        sass = [a for a in kept if a.startswith("sm_")]
        ptxs = [a for a in kept if a.startswith("compute_")]
        if not any(_runs_on(cc, sass, p) for p in ptxs or [""]):
            built = ", ".join(str(t) for t in pruned.get("targets") or targets) or ", ".join(kept)
            report.fail(
                name,
                f"image built for {built}; this GPU is {smv} ({gpu['name']}): prune-archs removed the GPU code for "
                f'other GPUs (kept {", ".join(kept)}): rebuild with targets including "{smv}"',
            )
            return
    lacking = []
    for fw, a in archs.items():
        sass, ptx = a.get("sass") or [], a.get("ptx") or ""
        if sass and not _runs_on(cc, sass, ptx):
            built = ", ".join(sass) + (f" (+PTX {ptx})" if ptx else "")
            lacking.append(f"{fw} is built for {built}")
    if lacking:
        report.fail(
            name,
            f"image built for other GPUs: {'; '.join(lacking)}; this GPU is {smv} ({gpu['name']}): rebuild with "
            f'targets including "{smv}"',
        )
        return
    if targets and not archs and not _runs_on(cc, targets, ""):
        report.fail(
            name,
            f'image built for {", ".join(targets)}; this GPU is {smv} ({gpu["name"]}): rebuild with targets including "{smv}"',
        )
        return
    if targets and not _runs_on(cc, targets, ""):
        report.note(
            name, f"{smv} is not among the image's targets ({', '.join(targets)}), but its frameworks carry code for it"
        )
    else:
        report.ok(name, f"{smv} is covered" + (f" (targets {', '.join(targets)})" if targets else ""))


def check_core(report: Report, cuda: Cuda, index: int, dev: int, gpu: dict, ptx_version: str, driver_cuda: str) -> None:
    name = f"gpu{index} ptx"
    cc = vt(gpu["cc"])
    target = "sm_52" if cc >= (5, 2) else f"sm_{cc[0]}{cc[1]}"
    try:
        detail = cuda.run_vadd(dev, ptx_source(ptx_version, target))
        report.ok(name, f"{detail}: PTX ISA {ptx_version} JIT-compiled by the driver for {gpu['sm']}")
    except CudaError as exc:
        report.fail(
            name,
            _core_cause(exc, ptx_version, driver_cuda, report.facts.get("driver", {}).get("version", "")),
            code=exc.code,
        )


def _core_cause(exc: CudaError, isa: str, driver_cuda: str, driver: str) -> str:
    if exc.code == CUDA_ERROR_UNSUPPORTED_PTX_VERSION:
        can = driver_ptx_isa(driver_cuda)
        line = cuda_for_ptx_isa(isa)
        need = (
            f"PTX ISA {isa} needs driver >= {MIN_DRIVER[line]} (CUDA {line})"
            if line
            else (f"PTX ISA {isa} is newer than every CUDA gpuship knows")
        )
        return (
            f"the driver ({driver or 'unknown'}, CUDA {driver_cuda}) is older than the PTX (ISA {isa}): it JITs PTX up to "
            f"ISA {can} (CUDA_ERROR_UNSUPPORTED_PTX_VERSION, 222); {need}: update the host driver, or build the image for "
            f"CUDA <= {driver_cuda}"
        )
    if exc.code == CUDA_ERROR_JIT_COMPILER_NOT_FOUND:
        return (
            "the driver's PTX JIT compiler (libnvidia-ptxjitcompiler) is missing (221): the compute capability was not "
            "fully injected"
        )
    if exc.code in (CUDA_ERROR_INVALID_PTX, CUDA_ERROR_NO_BINARY_FOR_GPU):
        return f"the driver could not compile the PTX: {exc.name} ({exc.code}) {exc.log or exc.text}".strip()
    return f"{exc.call} failed: {exc.name} ({exc.code}) {exc.text}" + (f": {exc.log}" if exc.log else "")


# -- frameworks, each in its own process --------------------------------------------------------------------------

_PRELUDE = "import json, sys\nout = {'ok': False}\ntry:\n"
_EPILOGUE = (
    "except ModuleNotFoundError as e:\n"
    "    out['missing'] = True\n    out['error'] = f'{type(e).__name__}: {e}'\n"
    "except BaseException as e:\n"
    "    out['error'] = f'{type(e).__name__}: {e}'\n"
    "print('GPUSHIP-CHECK ' + json.dumps(out))\n"
)

PROBES: dict[str, str] = {
    "torch": """
    import torch
    out['version'] = torch.__version__
    if not torch.cuda.is_available():
        raise RuntimeError('torch.cuda.is_available() is False (torch CUDA %s)' % torch.version.cuda)
    d = torch.device('cuda', 0)
    x = torch.arange(1024, device=d, dtype=torch.float32)
    s = float((x * 2 + 1).sum().item())
    m = torch.ones(64, 64, device=d) @ torch.ones(64, 64, device=d)
    cap = torch.cuda.get_device_capability(0)
    ok = s == 1048576.0 and float(m.sum().item()) == 262144.0
    out['ok'] = ok
    out['detail'] = 'torch %s (CUDA %s) on %s sm_%d%d: vector sum and 64x64 matmul %s' % (
        torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0), cap[0], cap[1],
        'verified' if ok else 'WRONG')
""",
    "cupy": """
    import cupy as cp
    out['version'] = cp.__version__
    k = cp.ElementwiseKernel('float32 x', 'float32 y', 'y = 2 * x + 1', 'gpuship_check')
    y = k(cp.arange(1024, dtype=cp.float32))
    s = float(y.sum())
    name = cp.cuda.runtime.getDeviceProperties(0)['name']
    name = name.decode() if isinstance(name, bytes) else name
    out['ok'] = s == 1048576.0
    out['detail'] = 'cupy %s (CUDA runtime %s) on %s sm_%s: NVRTC-compiled kernel %s' % (
        cp.__version__, cp.cuda.runtime.runtimeGetVersion(), name, cp.cuda.Device(0).compute_capability,
        'verified' if out['ok'] else 'WRONG')
""",
    "numba-cuda": """
    import numpy as np
    from numba import cuda
    if not cuda.is_available():
        raise RuntimeError('numba.cuda.is_available() is False')
    @cuda.jit
    def k(a):
        i = cuda.grid(1)
        if i < a.size:
            a[i] = 2 * i + 1
    a = cuda.device_array(1024, dtype=np.float32)
    k[4, 256](a)
    s = float(a.copy_to_host().sum())
    dev = cuda.get_current_device()
    out['ok'] = s == 1048576.0
    out['detail'] = 'numba-cuda on %s sm_%d%d: NVVM-compiled kernel %s' % (
        dev.name.decode() if isinstance(dev.name, bytes) else dev.name, dev.compute_capability[0],
        dev.compute_capability[1], 'verified' if out['ok'] else 'WRONG')
""",
    "jax": """
    import jax, jax.numpy as jnp
    out['version'] = jax.__version__
    gpus = jax.devices('gpu')
    x = jax.device_put(jnp.arange(1024, dtype=jnp.float32), gpus[0])
    s = float((x * 2 + 1).sum())
    out['ok'] = s == 1048576.0
    out['detail'] = 'jax %s on %s: XLA kernel %s' % (jax.__version__, gpus[0].device_kind, 'verified' if out['ok'] else 'WRONG')
""",
    "cuda-bindings": """
    import ctypes
    from cuda.bindings import driver as drv
    def chk(r):
        err, *vals = r
        if int(err) != 0:
            _, name = drv.cuGetErrorName(err)
            raise RuntimeError(name.decode() if isinstance(name, bytes) else str(name))
        return vals[0] if len(vals) == 1 else vals
    chk(drv.cuInit(0))
    dev = chk(drv.cuDeviceGet(0))
    name = chk(drv.cuDeviceGetName(128, dev)).split(b'\\0', 1)[0].decode()
    ctx = chk(drv.cuDevicePrimaryCtxRetain(dev))
    chk(drv.cuCtxSetCurrent(ctx))
    ptr = chk(drv.cuMemAlloc(4096))
    chk(drv.cuMemsetD32(ptr, 0x3F800000, 1024))
    buf = (ctypes.c_float * 1024)()
    chk(drv.cuMemcpyDtoH(ctypes.addressof(buf), ptr, 4096))
    chk(drv.cuMemFree(ptr))
    chk(drv.cuDevicePrimaryCtxRelease(dev))
    out['ok'] = all(v == 1.0 for v in buf)
    import cuda.bindings
    out['detail'] = 'cuda-bindings %s on %s: cuMemsetD32 round trip %s' % (
        getattr(cuda.bindings, '__version__', '?'), name, 'verified' if out['ok'] else 'WRONG')
""",
}


def probe_source(framework: str) -> str:
    return _PRELUDE + PROBES[framework].strip("\n") + "\n" + _EPILOGUE


def _framework_cause(fw: str, error: str, gpu_sm: str) -> str:
    lib = re.search(r"(lib[\w.+-]+\.so[\d.]*): cannot open shared object file", error)
    if lib:
        return f"{fw}: library missing: {lib.group(1)} cannot be loaded (a CUDA library wheel is missing or was pruned)"
    if "libNVVM cannot be found" in error or "NvvmSupportError" in error:
        return f"{fw}: libNVVM cannot be found: install numba-cuda with its CUDA extra (numba-cuda[cu12] / [cu13])"
    if "no kernel image is available" in error:
        return f'{fw}: has no kernels for this GPU ({gpu_sm}): rebuild the image with targets including "{gpu_sm}"'
    if "UNSUPPORTED_PTX_VERSION" in error or "unsupported toolchain" in error:
        return f"{fw}: its PTX is newer than the driver can JIT: update the host driver or build for an older CUDA line"
    if "driver version is insufficient" in error or "INSUFFICIENT_DRIVER" in error:
        return f"{fw}: the driver is older than {fw}'s CUDA runtime: update the host driver ({error})"
    return f"{fw}: {error}"


def check_frameworks(
    report: Report, manifest: dict, python: str, timeout: float, gpu_sm: str, only: list | None
) -> None:
    listed = [str(f) for f in manifest.get("frameworks") or []]
    names = only or listed or list(PROBES)
    env = dict(os.environ)
    if env.get("LD_LIBRARY_PATH"):
        report.note("env", f"LD_LIBRARY_PATH={env['LD_LIBRARY_PATH']} can shadow the CUDA libraries of the wheels")
    for fw in names:
        if fw not in PROBES:
            report.note(fw, "no probe for this framework")
            continue
        start = time.monotonic()
        try:
            proc = subprocess.run(
                [python, "-c", probe_source(fw)], capture_output=True, text=True, timeout=timeout, env=env
            )
        except subprocess.TimeoutExpired:
            report.fail(fw, f"{fw}: no answer within {timeout:.0f}s")
            continue
        except OSError as exc:
            report.fail(fw, f"{fw}: cannot run {python}: {exc.strerror}")
            continue
        result = None
        for line in proc.stdout.splitlines():
            if line.startswith("GPUSHIP-CHECK "):
                result = json.loads(line[len("GPUSHIP-CHECK ") :])
        secs = time.monotonic() - start
        if result is None:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
            report.fail(fw, f"{fw}: the probe crashed ({proc.returncode}): {tail[0]}")
        elif result.get("missing"):
            if fw in listed:
                report.fail(fw, f"{fw}: listed in the image but not importable: {result.get('error')}")
            elif only:
                report.fail(fw, f"{fw}: not installed")
        elif result.get("ok"):
            report.ok(fw, f"{result.get('detail')} ({secs:.1f}s)")
        else:
            report.fail(fw, _framework_cause(fw, result.get("error") or result.get("detail") or "failed", gpu_sm))


# -- main ---------------------------------------------------------------------------------------------------------


def run_checks(
    manifest: dict,
    ptx_version: str,
    frameworks: bool = True,
    python: str = "",
    timeout: float = 300.0,
    only: list | None = None,
) -> Report:
    report = Report()
    report.facts["image"] = {
        k: manifest[k] for k in ("cuda", "require_cuda", "min_driver", "targets", "frameworks") if k in manifest
    }
    cuda = check_driver(report, manifest)
    if cuda is None:
        return report
    driver_cuda = report.facts["driver"]["cuda"]
    try:
        count = cuda.device_count()
    except CudaError as exc:
        report.fail("gpus", _init_cause(exc))
        return report
    if count == 0:
        report.fail("gpus", "no GPU visible: the driver reports no devices")
        return report
    gpus = []
    for i in range(count):
        try:
            dev = cuda.device(i)
            info = cuda.device_info(dev)
        except CudaError as exc:
            report.fail(f"gpu{i}", f"GPU {i}: {exc}")
            continue
        info["index"] = i
        gpus.append(info)
        report.ok(
            f"gpu{i}",
            f"{info['name']}, {info['memory_bytes'] / 2**30:.1f} GiB, {info['sm']}, {info['multiprocessors']} SMs",
        )
        check_arch(report, i, info, manifest)
        check_core(report, cuda, i, dev, info, ptx_version, driver_cuda)
    report.facts["gpus"] = gpus
    if frameworks and gpus:
        check_frameworks(
            report, manifest, python or manifest.get("python") or sys.executable, timeout, gpus[0]["sm"], only
        )
    return report


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="gpuship-check",
        description="Check that this container can use its GPU: driver, GPUs, a PTX kernel through the driver API, "
        "and each GPU framework in the image. Exit 0 when all pass, 1 otherwise.",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of lines")
    parser.add_argument(
        "--manifest", default=None, help=f"the image's GPU facts (default {MANIFEST}, or ${ENV_MANIFEST})"
    )
    parser.add_argument(
        "--ptx-version",
        default=None,
        help=f"PTX ISA version of the built-in kernel (default {DEFAULT_PTX_VERSION}; also ${ENV_PTX})",
    )
    parser.add_argument("--no-frameworks", action="store_true", help="only the driver, the GPUs and the PTX kernel")
    parser.add_argument("--framework", action="append", default=None, help="check only this framework (repeatable)")
    parser.add_argument("--python", default="", help="interpreter for the framework probes (default: the image's)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per framework probe (default 300)")
    args = parser.parse_args(argv)

    manifest = read_manifest(args.manifest)
    ptx_version = (
        args.ptx_version
        or os.environ.get(ENV_PTX)
        or str((manifest.get("check") or {}).get("ptx_version") or "")
        or DEFAULT_PTX_VERSION
    )
    if not re.fullmatch(r"\d+\.\d+", ptx_version):
        parser.error(f"--ptx-version must look like 7.0, not {ptx_version!r}")
    report = run_checks(
        manifest,
        ptx_version,
        frameworks=not args.no_frameworks,
        python=args.python,
        timeout=args.timeout,
        only=args.framework,
    )
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        for c in report.checks:
            tag = "ok  " if c["ok"] else ("FAIL" if c["ok"] is False else "note")
            print(f"{tag} {c['check']}: {c['detail']}")
        n = len(report.failures)
        print("gpuship-check: all checks passed" if not n else f"gpuship-check: {n} check{'s' if n > 1 else ''} failed")
    return 0 if not report.failures else 1


if __name__ == "__main__":
    sys.exit(main())
