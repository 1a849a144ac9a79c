"""A PTX matmul run through the CUDA driver API (cuda-bindings), verified against numpy."""
