// The tiny CUDA kernel behind gpuship's fatbin fixtures (see make_fixtures.sh).
#include <cuda_runtime.h>

extern "C" __global__ void gpuship_add(const float* a, const float* b, float* c, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) c[i] = a[i] + b[i];
}

// Adds two vectors on the GPU and checks the result. Returns 0 on success, the CUDA error code on a CUDA
// failure (209 = no kernel image for this GPU, 222 = PTX too new for the driver), or -1 on a wrong result.
extern "C" int gpuship_selftest(void) {
    const int n = 1 << 16;
    float *a, *b, *c;
    cudaError_t err = cudaMallocManaged(&a, n * sizeof(float));
    if (err) return (int)err;
    cudaMallocManaged(&b, n * sizeof(float));
    cudaMallocManaged(&c, n * sizeof(float));
    for (int i = 0; i < n; ++i) { a[i] = (float)i; b[i] = 2.0f * i; c[i] = 0.0f; }
    gpuship_add<<<(n + 255) / 256, 256>>>(a, b, c, n);
    err = cudaGetLastError();
    if (!err) err = cudaDeviceSynchronize();
    int bad = 0;
    if (!err) for (int i = 0; i < n; ++i) bad += c[i] != 3.0f * i;
    cudaFree(a); cudaFree(b); cudaFree(c);
    return err ? (int)err : (bad ? -1 : 0);
}
