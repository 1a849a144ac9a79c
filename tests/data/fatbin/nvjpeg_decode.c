// Decodes a JPEG on the GPU with nvJPEG and prints a checksum of its RGB pixels (gpu_selftest.py builds it).
#include <stdio.h>
#include <stdlib.h>
#include <nvjpeg.h>
#include <cuda_runtime.h>
int main(int argc, char** argv) {
    FILE* f = fopen(argv[1], "rb"); fseek(f, 0, SEEK_END); long n = ftell(f); fseek(f, 0, SEEK_SET);
    unsigned char* buf = malloc(n); fread(buf, 1, n, f); fclose(f);
    nvjpegHandle_t h; nvjpegJpegState_t st;
    int s = nvjpegCreateEx(NVJPEG_BACKEND_GPU_HYBRID, NULL, NULL, 0, &h); if (s) { printf("create %d\n", s); return 1; }
    s = nvjpegJpegStateCreate(h, &st); if (s) { printf("state %d\n", s); return 1; }
    int nc; nvjpegChromaSubsampling_t sub; int w[4], hh[4];
    nvjpegGetImageInfo(h, buf, n, &nc, &sub, w, hh);
    nvjpegImage_t img = {0}; img.pitch[0] = 3 * w[0];
    cudaMalloc((void**)&img.channel[0], 3 * w[0] * hh[0]);
    s = nvjpegDecode(h, st, buf, n, NVJPEG_OUTPUT_RGBI, &img, 0);
    cudaError_t ce = cudaDeviceSynchronize();
    if (s || ce) { printf("decode nvjpeg=%d cuda=%d (%s)\n", s, ce, cudaGetErrorString(ce)); return 1; }
    unsigned char* host = malloc(3 * w[0] * hh[0]);
    cudaMemcpy(host, img.channel[0], 3 * w[0] * hh[0], cudaMemcpyDeviceToHost);
    unsigned long sum = 0; for (long i = 0; i < 3L * w[0] * hh[0]; ++i) sum = sum * 31 + host[i];
    printf("%dx%d checksum %lu\n", w[0], hh[0], sum);
    return 0;
}
