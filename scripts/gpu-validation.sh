#!/usr/bin/env bash
# The GPU proof of docs/gpu-validation.md, in two halves.
#
#   bash scripts/gpu-validation.sh prepare   # here (x86 build machine, network): build the images, fetch wheels
#   bash scripts/gpu-validation.sh device    # on the GPU host (no network, no Docker): run and check them
#
# `prepare` writes everything the GPU host needs under .device/ (git-ignored, carried to the device): the
# cuda-ptx-matmul image as one OCI archive, and gpuship's own dependencies as wheels for the host's Python.
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=.device/gpu
case "${1:-}" in
prepare)
  mkdir -p "$DEV/wheels"
  uv run --locked gpuship build examples/cuda-ptx-matmul -o "oci-archive:$DEV/cuda-ptx-matmul.oci.tar" \
    --report "$DEV/cuda-ptx-matmul.json"
  uv export --locked --no-dev --no-hashes --no-emit-project --format requirements-txt > "$DEV/requirements.txt"
  grep -v '^uv==' "$DEV/requirements.txt" > "$DEV/requirements.device.txt"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$DEV/wheels" -r "$DEV/requirements.device.txt"
  du -sh "$DEV"
  ;;
device)
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/gpuship-site "$DEV"/wheels/*.whl
  export PYTHONPATH="$PWD/src:/tmp/gpuship-site"
  g() { echo "\$ gpuship $*"; python3 -m gpuship "$@"; echo "(exit $?)"; echo; }
  set +e
  nvidia-smi -L
  g doctor
  g run --runtime chroot --gpus all "oci-archive:$DEV/cuda-ptx-matmul.oci.tar"
  g check --runtime chroot --gpus all "oci-archive:$DEV/cuda-ptx-matmul.oci.tar"
  # a case the driver cannot serve: PTX of a newer ISA than driver 580 can JIT
  g run --runtime chroot --gpus all -e GPUSHIP_CHECK_PTX_VERSION=9.9 --entrypoint /usr/local/bin/gpuship-check \
    "oci-archive:$DEV/cuda-ptx-matmul.oci.tar"
  # an image that requires a CUDA line above the driver's 13.0
  g run --runtime chroot --gpus all -e NVIDIA_REQUIRE_CUDA="cuda>=13.2" "oci-archive:$DEV/cuda-ptx-matmul.oci.tar"
  ;;
*)
  echo "usage: $0 prepare|device" >&2; exit 2 ;;
esac
