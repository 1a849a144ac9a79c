#!/usr/bin/env bash
# The GPU proofs of docs/gpu-validation.md, in two halves.
#
#   bash scripts/gpu-validation.sh prepare          # here (x86 build machine, network): build the images, fetch wheels
#   bash scripts/gpu-validation.sh device matmul    # on the GPU host (no network, no Docker): issue 5's proof
#   bash scripts/gpu-validation.sh device prune     # on the GPU host: issue 9's proof (architecture pruning)
#
# `prepare` writes what the GPU host needs under .device/ (git-ignored): gpuship's own dependencies as wheels for
# the host's Python (.device/wheels), the cuda-ptx-matmul image as one OCI archive (.device/gpu), and
# cuda-kernel-lib built for targets H100 and B200 (one OCI layout, .device/prune, tags h100 and b200: they share all but two layers). Carry .device/wheels plus one of the other two
# (each call may carry 64 MiB).
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=.device/wheels
build() { uv run --locked gpuship build "$@"; }
case "${1:-}" in
prepare)
  rm -rf .device/gpu .device/prune "$WHEELS"
  mkdir -p .device/gpu .device/prune "$WHEELS"
  build examples/cuda-ptx-matmul -o oci-archive:.device/gpu/cuda-ptx-matmul.oci.tar --report .device/gpu/cuda-ptx-matmul.json
  # cuda-kernel-lib as it is (targets = ["H100"]), and a copy retargeted to B200 (sm_100 code and PTX only)
  build examples/cuda-kernel-lib -t cuda-kernel-lib:h100 -o oci:.device/prune/cuda-kernel-lib:h100 \
    --report .device/prune/cuda-kernel-lib-h100.json
  b200=$(mktemp -d)
  cp -r examples/cuda-kernel-lib/. "$b200"
  sed -i 's/^targets = \["H100"\].*/targets = ["B200"]/' "$b200/pyproject.toml"
  grep -q '^targets = \["B200"\]$' "$b200/pyproject.toml"
  build "$b200" -t cuda-kernel-lib:b200 -o oci:.device/prune/cuda-kernel-lib:b200 \
    --report .device/prune/cuda-kernel-lib-b200.json
  rm -rf "$b200"
  uv export --locked --no-dev --no-hashes --no-emit-project --format requirements-txt | grep -v '^uv==' \
    > "$WHEELS/requirements.device.txt"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$WHEELS" -r "$WHEELS/requirements.device.txt" 2> >(grep -v "^WARNING: Location" >&2)
  du -sh .device/wheels .device/gpu .device/prune
  ;;
device)
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/gpuship-site "$WHEELS"/*.whl
  export PYTHONPATH="$PWD/src:/tmp/gpuship-site"
  g() { echo "\$ gpuship $*"; python3 -m gpuship "$@"; echo "(exit $?)"; echo; }
  set +e
  nvidia-smi -L
  case "${2:-}" in
  matmul)
    img=oci-archive:.device/gpu/cuda-ptx-matmul.oci.tar
    g doctor
    g run --runtime chroot --gpus all "$img"
    g check --runtime chroot --gpus all "$img"
    # a case the driver cannot serve: PTX of a newer ISA than driver 580 can JIT
    g run --runtime chroot --gpus all -e GPUSHIP_CHECK_PTX_VERSION=9.9 --entrypoint /usr/local/bin/gpuship-check "$img"
    # an image that requires a CUDA line above the driver's 13.0
    g run --runtime chroot --gpus all -e NVIDIA_REQUIRE_CUDA="cuda>=13.2" "$img"
    ;;
  prune)
    for t in h100 b200; do
      img=oci:.device/prune/cuda-kernel-lib:$t
      echo "\$ gpuship inspect $img --json  # the GPU code of its CUDA libraries"
      python3 -m gpuship inspect "$img" --json | python3 -c 'import json, sys
for lib in json.load(sys.stdin)["cuda"]:
    print(lib["path"], "carries", ", ".join(lib["sass"] + lib["ptx"]))'
      echo
      g run --runtime chroot --gpus all "$img"
      g check --runtime chroot --gpus all "$img"
    done
    ;;
  *) echo "usage: $0 device matmul|prune" >&2; exit 2 ;;
  esac
  ;;
*)
  echo "usage: $0 prepare | device matmul|prune" >&2; exit 2 ;;
esac
