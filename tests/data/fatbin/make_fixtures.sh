#!/usr/bin/env bash
# Builds gpuship's fatbin fixtures from kernel.cu with nvcc (CUDA 13.0 made the committed ones).
#
#   bash make_fixtures.sh            the small committed fixtures, next to this script:
#       libmultiarch.so   sm_80, sm_90, sm_100 + compute_100 PTX   (nvcc's default compression)
#       libvariants.so    sm_80, sm_86, sm_90a, sm_103f + compute_80 PTX   (every entry LZ4-compressed)
#   bash make_fixtures.sh --gpu DIR  the GPU self-test set, for a machine with a GPU and a driver (not committed):
#       DIR/libselftest_multi.so   sm_80, sm_90, sm_100 + compute_100 PTX, CUDA runtime linked in statically
#       DIR/libselftest_ptx80.so   sm_80 + compute_80 PTX only (pruned for H100, the driver must JIT the PTX)
#       DIR/selftest               loads a library and runs its kernel: exit 0 when the GPU ran it
#   Prune them with gpuship (tests/test_prune_gpu.py shows how) and run DIR/selftest LIB on the GPU host.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
NVCC="${NVCC:-nvcc}"
common=(-shared -Xcompiler -fPIC -frandom-seed=1 -Xlinker --build-id=none)

if [ "${1:-}" = "--gpu" ]; then
  out="${2:?usage: make_fixtures.sh --gpu DIR}"
  mkdir -p "$out"
  "$NVCC" "${common[@]}" -cudart static -o "$out/libselftest_multi.so" "$here/kernel.cu" \
    -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
    -gencode arch=compute_100,code='[sm_100,compute_100]'
  "$NVCC" "${common[@]}" -cudart static -o "$out/libselftest_ptx80.so" "$here/kernel.cu" \
    -gencode arch=compute_80,code='[sm_80,compute_80]'
  "${CC:-cc}" -O2 -o "$out/selftest" "$here/selftest.c" -ldl
  exit 0
fi

"$NVCC" "${common[@]}" -cudart shared -o "$here/libmultiarch.so" "$here/kernel.cu" \
  -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
  -gencode arch=compute_100,code='[sm_100,compute_100]'
"$NVCC" "${common[@]}" -cudart shared --compress-mode=speed -Xfatbin -compress-all -o "$here/libvariants.so" "$here/kernel.cu" \
  -gencode arch=compute_80,code='[sm_80,compute_80]' -gencode arch=compute_86,code=sm_86 \
  -gencode arch=compute_90a,code=sm_90a -gencode arch=compute_103f,code=sm_103f
strip --strip-unneeded "$here/libmultiarch.so" "$here/libvariants.so"
ls -l "$here"/lib*.so
