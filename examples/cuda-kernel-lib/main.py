"""Runs the vector add of kernels/libvecadd.so (built by nvcc for sm_80, sm_90 and sm_100 + PTX) on GPU 0.

cuda-bindings finds the GPU and names it; the kernel library, loaded with ctypes, adds two vectors on it and
verifies every element. Exit codes: 0 verified; 1 no GPU visible, no kernel image for this GPU, or a wrong result
(one line saying which).
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

LIBRARY = Path(__file__).resolve().parent / "kernels" / "libvecadd.so"
NO_KERNEL_IMAGE = 209  # cudaErrorNoKernelImageForDevice


def gpu0() -> tuple[str, str]:
    """The name and the ``sm_XY`` of GPU 0, through the CUDA driver API (cuda-bindings)."""
    from cuda.bindings import driver

    def ok(result):  # cuda-bindings calls return (CUresult, *values)
        err, *values = result
        if err != driver.CUresult.CUDA_SUCCESS:
            raise RuntimeError(f"{driver.cuGetErrorName(err)[1].decode()} ({int(err)})")
        return values[0] if len(values) == 1 else values

    ok(driver.cuInit(0))
    dev = ok(driver.cuDeviceGet(0))
    name = ok(driver.cuDeviceGetName(64, dev)).split(b"\0", 1)[0].decode()
    attr = driver.CUdevice_attribute
    major = ok(driver.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev))
    minor = ok(driver.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev))
    return name, f"sm_{major}{minor}"


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1 << 20
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        print("no GPU visible: libcuda.so.1 is not loadable (start the container with GPU support)")
        return 1
    try:
        name, sm = gpu0()
    except RuntimeError as exc:
        print(f"no GPU visible: cuInit/cuDeviceGet failed: {exc}")
        return 1
    rc = ctypes.CDLL(str(LIBRARY)).vecadd_verified(ctypes.c_int(n))
    if rc == NO_KERNEL_IMAGE:
        print(f"{LIBRARY.name} has no kernel image for {name} ({sm}): it was built or pruned for other GPUs")
        return 1
    if rc:
        print(f"vector add on {name} ({sm}) failed: " + ("WRONG RESULT" if rc < 0 else f"CUDA error {rc}"))
        return 1
    print(f"vector add of {n} floats on {name} ({sm}) by {LIBRARY.name}: verified")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
