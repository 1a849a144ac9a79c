#!/usr/bin/env bash
# Rebuilds kernels/libvecadd.so (committed) with nvcc: SASS for sm_80, sm_90, sm_100 and compute_100 PTX, the
# CUDA runtime linked in statically (the library needs only the driver's libcuda.so.1, injected at run time).
set -euo pipefail
cd "$(dirname "$0")"
"${NVCC:-nvcc}" -shared -Xcompiler -fPIC -frandom-seed=1 -Xlinker --build-id=none -cudart static \
  -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
  -gencode arch=compute_100,code='[sm_100,compute_100]' -o libvecadd.so vecadd.cu
strip --strip-unneeded libvecadd.so
ls -l libvecadd.so
