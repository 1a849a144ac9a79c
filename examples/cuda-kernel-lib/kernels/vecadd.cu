// The example's GPU code: a vector add, compiled by nvcc into a shared library that carries machine code (SASS)
// for sm_80, sm_90 and sm_100 plus compute_100 PTX (see build.sh). gpuship's prune-archs keeps what the image's
// targets need.
#include <cuda_runtime.h>

extern "C" __global__ void vecadd(const float* a, const float* b, float* c, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) c[i] = a[i] + b[i];
}

// Adds two vectors of n floats on the GPU and checks every element. Returns 0 when verified, the CUDA error
// code on a CUDA failure (209: no kernel image for this GPU), or -1 on a wrong result.
extern "C" int vecadd_verified(int n) {
    float *a, *b, *c;
    cudaError_t err = cudaMallocManaged(&a, n * sizeof(float));
    if (err) return (int)err;
    cudaMallocManaged(&b, n * sizeof(float));
    cudaMallocManaged(&c, n * sizeof(float));
    for (int i = 0; i < n; ++i) { a[i] = (float)i; b[i] = 2.0f * i; c[i] = 0.0f; }
    vecadd<<<(n + 255) / 256, 256>>>(a, b, c, n);
    err = cudaGetLastError();
    if (!err) err = cudaDeviceSynchronize();
    int bad = 0;
    if (!err) for (int i = 0; i < n; ++i) bad += c[i] != 3.0f * i;
    cudaFree(a); cudaFree(b); cudaFree(c);
    return err ? (int)err : (bad ? -1 : 0);
}
