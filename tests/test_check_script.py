"""gpuship-check: standard library only, the right failure on a machine without a GPU (this one), the same inside
a real container built from the Debian base, the diagnoses through a stand-in libcuda, and its image entries.

The framework-free core was also run for real on an H100 (driver 580.159.04, CUDA 13.0): vector add verified at
PTX ISA 7.0 and 9.0, and ISA 9.1 / 9.9 refused with CUDA_ERROR_UNSUPPORTED_PTX_VERSION (222) and the message
tested below. docs/gpu.md has the commands.
"""

from __future__ import annotations

import ast
import ctypes
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gpuship.cache import Cache
from gpuship.check import (
    CHECK_PATH,
    MANIFEST_PATH,
    check_entries,
    check_script,
    check_source,
    gpu_manifest,
    gpuship_check,
)
from gpuship.cuda import GpuSettings, plan_gpu

SCRIPT = Path(gpuship_check.__file__)


def run_check(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The script as images run it: a bare interpreter, no site-packages (-S), isolated (-I)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("NVIDIA_", "GPUSHIP_"))}
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-I", "-S", str(SCRIPT), *args], capture_output=True, text=True, env=full, timeout=120
    )


def _real_driver_here() -> bool:
    try:
        ctypes.CDLL("libcuda.so.1")
        return True
    except OSError:
        return False


# -- standard library only ----------------------------------------------------------------------------------------


def test_the_script_imports_only_the_standard_library() -> None:
    tree = ast.parse(check_source())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    assert names and names <= set(sys.stdlib_module_names) | {"__future__"}, names - set(sys.stdlib_module_names)


# -- on this machine: no GPU ----------------------------------------------------------------------------------------


@pytest.mark.skipif(_real_driver_here(), reason="this machine has an NVIDIA driver")
def test_without_a_gpu_it_exits_1_with_no_gpu_visible() -> None:
    proc = run_check()
    assert proc.returncode == 1, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == (
        "FAIL driver: no GPU visible: the container was started without GPU support "
        "(use --gpus all / the nvidia runtime / CDI): libcuda.so.1 is not loadable"
    )
    assert lines[-1] == "gpuship-check: 1 check failed" and proc.stderr == ""


@pytest.mark.skipif(_real_driver_here(), reason="this machine has an NVIDIA driver")
def test_json_output_parses_and_names_the_failure(tmp_path: Path) -> None:
    manifest = tmp_path / "gpu.json"
    manifest.write_bytes(
        gpu_manifest(plan_gpu(["torch"], GpuSettings.from_table({"targets": ["H100"]}), "linux/amd64"))
    )
    proc = run_check("--json", "--manifest", str(manifest))
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert doc["ok"] is False and doc["image"]["cuda"] == "13.0" and doc["image"]["targets"] == ["sm_90"]
    assert len(doc["failures"]) == 1 and doc["failures"][0].startswith("no GPU visible")
    assert doc["checks"][0]["check"] == "driver" and doc["checks"][0]["ok"] is False


def test_bad_arguments_exit_2() -> None:
    proc = run_check("--ptx-version", "nine")
    assert proc.returncode == 2 and "--ptx-version must look like 7.0" in proc.stderr


# -- the built-in PTX -------------------------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("ptxas") is None, reason="needs ptxas (CUDA toolkit) on PATH")
@pytest.mark.parametrize("arch", ["sm_75", "sm_80", "sm_90", "sm_100", "sm_120"])
def test_the_builtin_ptx_assembles_for_every_current_gpu(tmp_path: Path, arch: str) -> None:
    src = tmp_path / "vadd.ptx"
    src.write_text(gpuship_check.ptx_source())  # .version 7.0, .target sm_52: every driver since R450 JITs it
    proc = subprocess.run(
        ["ptxas", f"-arch={arch}", str(src), "-o", str(tmp_path / "vadd.cubin")], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert "gpuship_vadd" in gpuship_check.ptx_source() and ".version 7.0" in gpuship_check.ptx_source()


# -- the diagnoses, through a stand-in libcuda ------------------------------------------------------------------------

FAKE_LIBCUDA = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
/* A stand-in for the driver on a machine without one: the CUDA driver API entry points gpuship-check calls, with
   the C signatures of cuda.h. Memory is host memory and the one kernel (c = a + b) runs on the CPU, so the check's
   ctypes marshalling (pointers, sizes, kernelParams) is exercised; error codes come from FAKE_* variables. */
static int env(const char *n, int d) { const char *v = getenv(n); return v ? atoi(v) : d; }
int cuInit(unsigned f) { (void)f; return env("FAKE_CUINIT", 0); }
int cuDriverGetVersion(int *v) { *v = env("FAKE_DRIVER_CUDA", 13000); return 0; }
int cuDeviceGetCount(int *n) { *n = 1; return 0; }
int cuDeviceGet(int *d, int o) { *d = o; return 0; }
int cuDeviceGetName(char *b, int len, int d) { (void)d; snprintf(b, len, "Fake GPU"); return 0; }
int cuDeviceTotalMem_v2(size_t *m, int d) { (void)d; *m = (size_t)16 << 30; return 0; }
int cuDeviceGetAttribute(int *v, int a, int d) {
  (void)d; *v = a == 75 ? env("FAKE_CC_MAJOR", 9) : a == 76 ? env("FAKE_CC_MINOR", 0) : 132; return 0; }
int cuCtxCreate_v2(void **c, unsigned f, int d) { (void)f; (void)d; *c = (void *)0x1; return 0; }
int cuCtxDestroy_v2(void *c) { (void)c; return 0; }
int cuCtxSynchronize(void) { return 0; }
int cuModuleLoadDataEx(void **m, const void *img, unsigned n, int *opts, void **vals) {
  const char *p = strstr((const char *)img, ".version ");
  int maj = 0, min = 0;
  if (!p || sscanf(p + 9, "%d.%d", &maj, &min) != 2) return 218;
  if (maj * 10 + min > env("FAKE_PTX_ISA", 90)) {
    for (unsigned i = 0; i < n; i++) if (opts[i] == 5) strcpy((char *)vals[i], "Unsupported .version");
    return 222;
  }
  *m = (void *)0x2; return 0; }
int cuModuleGetFunction(void **f, void *m, const char *name) { (void)m; *f = (void *)0x3; return strcmp(name, "gpuship_vadd") ? 500 : 0; }
int cuModuleUnload(void *m) { (void)m; return 0; }
int cuMemAlloc_v2(uint64_t *p, size_t n) { *p = (uint64_t)(uintptr_t)malloc(n); return 0; }
int cuMemFree_v2(uint64_t p) { free((void *)(uintptr_t)p); return 0; }
int cuMemcpyHtoD_v2(uint64_t d, const void *h, size_t n) { memcpy((void *)(uintptr_t)d, h, n); return 0; }
int cuMemcpyDtoH_v2(void *h, uint64_t d, size_t n) { memcpy(h, (void *)(uintptr_t)d, n); return 0; }
int cuLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                   unsigned shm, void *stream, void **params, void **extra) {
  (void)f; (void)gy; (void)gz; (void)by; (void)bz; (void)shm; (void)stream; (void)extra;
  float *a = (float *)(uintptr_t)*(uint64_t *)params[0], *b = (float *)(uintptr_t)*(uint64_t *)params[1];
  float *c = (float *)(uintptr_t)*(uint64_t *)params[2];
  int n = *(int *)params[3];
  for (unsigned i = 0; i < gx * bx; i++) if ((int)i < n) c[i] = a[i] + b[i] + env("FAKE_WRONG", 0);
  return 0; }
int cuGetErrorName(int e, const char **s) {
  *s = e == 100 ? "CUDA_ERROR_NO_DEVICE" : e == 34 ? "CUDA_ERROR_STUB_LIBRARY" : e == 222 ?
       "CUDA_ERROR_UNSUPPORTED_PTX_VERSION" : "CUDA_ERROR_UNKNOWN"; return 0; }
int cuGetErrorString(int e, const char **s) { (void)e; *s = "fake"; return 0; }
"""


@pytest.fixture(scope="module")
def fake_driver(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if _real_driver_here():
        pytest.skip("a real libcuda.so.1 would be loaded first")
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.fail("a C compiler is needed to build the stand-in libcuda (apt-get install gcc)")
    d = tmp_path_factory.mktemp("fake-driver")
    (d / "fake.c").write_text(FAKE_LIBCUDA)
    subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", str(d / "libcuda.so.1"), str(d / "fake.c")], check=True)
    return d


def fake(fake_driver: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_check("--no-frameworks", *args, env={"GPUSHIP_DRIVER_LIB_DIRS": str(fake_driver), **env})


def test_the_core_marshals_the_vector_add_correctly(fake_driver: Path) -> None:
    proc = fake(fake_driver)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok   gpu0: Fake GPU, 16.0 GiB, sm_90, 132 SMs" in proc.stdout
    assert "ok   gpu0 ptx: vector add of 4096 floats verified (16x256 threads): PTX ISA 7.0" in proc.stdout
    assert "note nvml: libnvidia-ml.so.1 not loadable" in proc.stdout


def test_a_wrong_result_fails(fake_driver: Path) -> None:
    proc = fake(fake_driver, FAKE_WRONG="1")
    assert proc.returncode == 1 and "4096 of 4096 sums wrong (c[0] = 2.0, expected 1)" in proc.stdout


def test_no_device_assigned(fake_driver: Path) -> None:
    proc = fake(fake_driver, FAKE_CUINIT="100", NVIDIA_VISIBLE_DEVICES="void")
    assert proc.returncode == 1
    assert (
        "FAIL driver: no GPU visible: the driver is injected but no GPU is assigned to the container "
        "(NVIDIA_VISIBLE_DEVICES=void)" in proc.stdout
    )


def test_the_toolkit_stub_is_not_a_driver(fake_driver: Path) -> None:
    proc = fake(fake_driver, FAKE_CUINIT="34")
    assert proc.returncode == 1 and "is the CUDA toolkit's stub, not the driver" in proc.stdout


def test_a_driver_older_than_the_images_cuda(fake_driver: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "gpu.json"
    manifest.write_bytes(
        gpu_manifest(plan_gpu(["torch"], GpuSettings.from_table({"targets": ["H100"]}), "linux/amd64"))
    )
    proc = fake(fake_driver, "--manifest", str(manifest), FAKE_DRIVER_CUDA="12020")
    assert proc.returncode == 1
    assert (
        "FAIL driver: the driver (unknown, CUDA 12.2) is older than this image's CUDA 13.0: it needs driver >= "
        "580.65.06; update the host driver" in proc.stdout
    )
    # and from the environment alone, as NVIDIA's images state it
    proc = fake(fake_driver, NVIDIA_REQUIRE_CUDA="cuda>=12.8 brand=tesla,driver>=470", FAKE_DRIVER_CUDA="12020")
    assert proc.returncode == 1 and "older than this image's CUDA 12.8: it needs driver >= 570.26" in proc.stdout


def test_ptx_newer_than_the_driver(fake_driver: Path) -> None:
    proc = fake(fake_driver, "--ptx-version", "9.1")
    assert proc.returncode == 1
    assert (
        "FAIL gpu0 ptx: the driver (unknown, CUDA 13.0) is older than the PTX (ISA 9.1): it JITs PTX up to ISA 9.0 "
        "(CUDA_ERROR_UNSUPPORTED_PTX_VERSION, 222); PTX ISA 9.1 needs driver >= 590.44.01 (CUDA 13.1)" in proc.stdout
    )
    proc = fake(fake_driver, GPUSHIP_CHECK_PTX_VERSION="9.9")
    assert "older than the PTX (ISA 9.9)" in proc.stdout and "newer than every CUDA gpuship knows" in proc.stdout


def test_an_architecture_the_image_lacks(fake_driver: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "gpu.json"
    manifest.write_bytes(
        gpu_manifest(plan_gpu(["torch"], GpuSettings.from_table({"targets": ["B200"]}), "linux/amd64"))
    )
    ok = fake(fake_driver, "--manifest", str(manifest))  # an sm_90 GPU: torch's cu130 wheel has sm_90 kernels
    assert "note gpu0 arch: sm_90 is not among the image's targets (sm_100)" in ok.stdout and ok.returncode == 0
    volta = fake(fake_driver, "--manifest", str(manifest), FAKE_CC_MAJOR="7", FAKE_CC_MINOR="0")
    assert volta.returncode == 1
    assert (
        "FAIL gpu0 arch: image built for other GPUs: torch is built for sm_75, sm_80, sm_86, sm_90, sm_100, sm_120; "
        "this GPU is sm_70 (Fake GPU)" in volta.stdout
    )
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps({"cuda": "13.0", "targets": ["sm_100"], "frameworks": []}))
    proc = fake(fake_driver, "--manifest", str(bare))
    assert proc.returncode == 1 and "image built for sm_100; this GPU is sm_90 (Fake GPU)" in proc.stdout


def test_an_image_pruned_for_other_gpus(fake_driver: Path, tmp_path: Path) -> None:
    """prune-archs kept only B200 code: an sm_90 GPU fails with the targets named, though a framework JITs."""

    def manifest(kept: list[str]) -> str:
        path = tmp_path / f"gpu-{'-'.join(kept)}.json"
        path.write_text(
            json.dumps(
                {
                    "cuda": "13.0",
                    "targets": ["sm_100"],
                    "frameworks": ["cuda-bindings"],
                    "archs": {"cuda-bindings": {"sass": [], "ptx": "", "jit": True}},
                    "pruned": {"targets": ["sm_100"], "archs": kept},
                }
            )
        )
        return str(path)

    proc = fake(fake_driver, "--manifest", manifest(["sm_100", "compute_100"]))
    assert proc.returncode == 1
    assert (
        "FAIL gpu0 arch: image built for sm_100; this GPU is sm_90 (Fake GPU): prune-archs removed the GPU code "
        'for other GPUs (kept sm_100, compute_100): rebuild with targets including "sm_90"' in proc.stdout
    )
    assert "FAIL gpu0 arch" in fake(fake_driver, "--manifest", manifest(["sm_80", "sm_100"])).stdout  # SASS: same major
    for runs in (["sm_90", "compute_100"], ["compute_80"], ["sm_90a"]):  # SASS for sm_90, or older PTX
        proc = fake(fake_driver, "--manifest", manifest(runs))
        assert "FAIL gpu0 arch" not in proc.stdout, (runs, proc.stdout)


# -- the image entries --------------------------------------------------------------------------------------------


def test_check_entries_and_manifest() -> None:
    p = plan_gpu(["torch", "cupy"], GpuSettings.from_table({"targets": ["H100", "L4"]}), "linux/amd64")
    entries = {e.path: e for e in check_entries(p)}
    assert set(entries) == {"etc/gpuship", MANIFEST_PATH, "usr/local/bin", CHECK_PATH}
    script = entries[CHECK_PATH]
    assert (
        script.mode == 0o755
        and script.read() == check_script()
        and script.read().startswith(b"#!/opt/venv/bin/python -I\n")
    )
    assert check_script("/usr/bin/python3").startswith(b"#!/usr/bin/python3 -I\n")
    doc = json.loads(entries[MANIFEST_PATH].read())
    assert doc["cuda"] == "13.0" and doc["require_cuda"] == "13.0" and doc["min_driver"] == "580.65.06"
    assert doc["targets"] == ["sm_90", "sm_89"] and doc["frameworks"] == ["torch", "cupy"]
    assert doc["archs"]["cupy"]["jit"] is True and "sm_89" in doc["archs"]["cupy"]["sass"]
    assert "sm_90" in doc["archs"]["torch"]["sass"] and doc["python"] == "/opt/venv/bin/python"
    assert gpu_manifest(p) == gpu_manifest(p) and gpu_manifest(p, ptx_version="9.9") != gpu_manifest(p)
    assert json.loads(gpu_manifest(p, ptx_version="9.9"))["check"] == {"ptx_version": "9.9"}
    assert check_entries(plan_gpu(["numpy"], GpuSettings(), "linux/amd64")) == []


# -- inside a real container ----------------------------------------------------------------------------------------


@pytest.mark.docker
def test_in_a_container_without_gpus_it_says_so(shared_cache: Cache, docker) -> None:  # type: ignore[no-untyped-def]
    """The Debian base + the check layer, run by Docker without --gpus: exit 1, 'no GPU visible'."""
    from gpuship.oci import ImageConfig, append_layers, build_layer, empty_image
    from gpuship.oci.sinks import load_into_engine
    from gpuship.sources.debian import build_base

    base = build_base("debian-bookworm", "linux/amd64", cache=shared_cache)
    p = plan_gpu(["torch"], GpuSettings.from_table({"targets": ["H100"]}), "linux/amd64")
    layer = build_layer(check_entries(p, python="/usr/bin/python3"), shared_cache)
    cfg = ImageConfig(
        env=base.config.env + tuple(f"{k}={v}" for k, v in p.env.items()),
        entrypoint=("/usr/local/bin/gpuship-check",),
        user=base.config.user,
        working_dir="/",
    )
    image = append_layers(empty_image(base.platform, cfg), [*base.layers, layer], created_by="test")
    tag = docker.tag()
    load_into_engine(image, tag)
    try:
        proc = docker.run("run", "--rm", tag, check=False, timeout=120)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "FAIL driver: no GPU visible: the container was started without GPU support" in proc.stdout
        doc = json.loads(docker.run("run", "--rm", tag, "--json", check=False, timeout=120).stdout)
        assert doc["image"]["cuda"] == "13.0" and doc["failures"][0].startswith("no GPU visible")
    finally:
        docker.run("rmi", "-f", tag, check=False)
