// The CUDA code behind gpuship's fatbin fixtures (see make_fixtures.sh): examples/cuda-kernel-lib's vector add,
// plus the entry point the GPU self-test (selftest.c, gpu_selftest.py) calls.
#include "../../../examples/cuda-kernel-lib/kernels/vecadd.cu"

// Adds two vectors on the GPU and checks the result. Returns 0 on success, the CUDA error code on a CUDA
// failure (209 = no kernel image for this GPU, 222 = PTX too new for the driver), or -1 on a wrong result.
extern "C" int gpuship_selftest(void) { return vecadd_verified(1 << 16); }
