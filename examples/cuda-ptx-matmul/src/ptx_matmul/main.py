"""Load the shipped PTX, run the matmul kernel on GPU 0, and check the result against numpy.

Exit codes: 0 verified, 1 wrong result or no GPU visible (with one line saying which).
"""

from __future__ import annotations

import ctypes
import sys
from importlib import resources

import numpy as np


def _check(result):
    """cuda-bindings calls return (CUresult, *values): raise on an error, return the values."""
    from cuda.bindings import driver

    err, *values = result
    if err != driver.CUresult.CUDA_SUCCESS:
        _, name = driver.cuGetErrorName(err)
        raise RuntimeError(name.decode() if isinstance(name, bytes) else str(name))
    return values[0] if len(values) == 1 else values


def run(n: int = 256) -> tuple[str, float]:
    from cuda.bindings import driver

    _check(driver.cuInit(0))
    dev = _check(driver.cuDeviceGet(0))
    name = _check(driver.cuDeviceGetName(64, dev)).split(b"\0", 1)[0].decode()
    ctx = _check(driver.cuCtxCreate(None, 0, dev)) if _ctx_create_takes_params() else _check(driver.cuCtxCreate(0, dev))
    try:
        ptx = resources.files("ptx_matmul").joinpath("matmul.ptx").read_bytes() + b"\0"
        module = _check(driver.cuModuleLoadData(ptx))
        kernel = _check(driver.cuModuleGetFunction(module, b"matmul"))
        rng = np.random.default_rng(0)
        a = rng.random((n, n), dtype=np.float32)
        b = rng.random((n, n), dtype=np.float32)
        c = np.zeros((n, n), dtype=np.float32)
        nbytes = a.nbytes
        d_a, d_b, d_c = (_check(driver.cuMemAlloc(nbytes)) for _ in range(3))
        _check(driver.cuMemcpyHtoD(d_a, a.ctypes.data, nbytes))
        _check(driver.cuMemcpyHtoD(d_b, b.ctypes.data, nbytes))
        args = [
            np.array([int(d_a)], dtype=np.uint64),
            np.array([int(d_b)], dtype=np.uint64),
            np.array([int(d_c)], dtype=np.uint64),
            np.array([n], dtype=np.int32),
        ]
        params = np.array([arg.ctypes.data for arg in args], dtype=np.uint64)
        block = 16
        grid = (n + block - 1) // block
        _check(driver.cuLaunchKernel(kernel, grid, grid, 1, block, block, 1, 0, 0, params.ctypes.data, 0))
        _check(driver.cuCtxSynchronize())
        _check(driver.cuMemcpyDtoH(c.ctypes.data, d_c, nbytes))
        for d in (d_a, d_b, d_c):
            _check(driver.cuMemFree(d))
        err = float(np.max(np.abs(c - a @ b)))
        return name, err
    finally:
        driver.cuCtxDestroy(ctx)


def _ctx_create_takes_params() -> bool:
    """cuda-bindings 13 added a ctxCreateParams argument to cuCtxCreate (CUDA 13's cuCtxCreate_v4)."""
    from cuda.bindings import driver

    doc = driver.cuCtxCreate.__doc__ or ""
    return "ctxCreateParams" in doc or "CUctxCreateParams" in doc


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 256
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        print("no GPU visible: libcuda.so.1 is not loadable (start the container with GPU support)")
        return 1
    name, err = run(n)
    ok = err < 1e-3 * n
    print(f"matmul {n}x{n} on {name}: max abs error {err:.2e} -> {'verified' if ok else 'WRONG RESULT'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
