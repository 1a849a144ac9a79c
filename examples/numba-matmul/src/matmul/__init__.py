"""GPU matrix multiply with Numba CUDA (seed 000), with a CPU fallback."""
