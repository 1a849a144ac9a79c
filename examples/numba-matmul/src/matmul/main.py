"""Multiply two matrices on the GPU with a Numba CUDA kernel, or on the CPU when no GPU is visible.

The kernel is defined inside a function rather than as a method: ``@cuda.jit`` does not work on bound methods
(seed 000's note).
"""

from __future__ import annotations

import math
import sys

import numpy as np


def gpu_available() -> bool:
    try:
        from numba import cuda

        return bool(cuda.is_available())
    except Exception:
        return False


def gpu_name() -> str:
    from numba import cuda

    name = cuda.get_current_device().name
    return name.decode() if isinstance(name, bytes) else str(name)


def multiply_gpu(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from numba import cuda

    @cuda.jit
    def matmul_kernel(x, y, out):
        i, j = cuda.grid(2)
        if i < out.shape[0] and j < out.shape[1]:
            acc = 0.0
            for k in range(x.shape[1]):
                acc += x[i, k] * y[k, j]
            out[i, j] = acc

    c = np.zeros((a.shape[0], b.shape[1]), dtype=a.dtype)
    threads = (16, 16)
    blocks = (math.ceil(c.shape[0] / threads[0]), math.ceil(c.shape[1] / threads[1]))
    d_a, d_b, d_c = cuda.to_device(a), cuda.to_device(b), cuda.to_device(c)
    matmul_kernel[blocks, threads](d_a, d_b, d_c)
    return d_c.copy_to_host()


def multiply_cpu(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from numba import njit

    @njit(cache=False)
    def matmul(x, y):
        out = np.zeros((x.shape[0], y.shape[1]), dtype=x.dtype)
        for i in range(x.shape[0]):
            for j in range(y.shape[1]):
                acc = 0.0
                for k in range(x.shape[1]):
                    acc += x[i, k] * y[k, j]
                out[i, j] = acc
        return out

    return matmul(a, b)


#: 512x512 in 16x16-thread blocks is a grid of 1,024 blocks: enough for every SM of an H100/H200 (132) or B200
#: (148) twice over, so Numba's low-occupancy NumbaPerformanceWarning (grid < 2 x SMs) stays quiet; 128 gave 64.
DEFAULT_N = 512


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_N
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    device = "cuda" if gpu_available() else "cpu"
    c = multiply_gpu(a, b) if device == "cuda" else multiply_cpu(a, b)
    ok = np.allclose(c, a @ b, rtol=1e-3, atol=1e-3)
    where = f"cuda ({gpu_name()}, a Numba CUDA kernel)" if device == "cuda" else "cpu"
    print(f"matmul {n}x{n} on {where}: {'verified against numpy' if ok else 'WRONG RESULT'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
