#!/usr/bin/env bash
# The GPU proofs of docs/gpu-validation.md, in two halves: images built here, run on a GPU host that has the NVIDIA
# driver but no network, no Docker and no runc, and takes files only in calls of limited size.
#
#   bash scripts/gpu-validation.sh prepare [base|numba|torch]...  # here (x86, network): images, parts, wheels
#   bash scripts/gpu-validation.sh pack [SIZE [WHAT...]]          # here: the carry folders .device/x01, x02, ...
#   bash scripts/gpu-validation.sh device receive [PROOF]...      # on the GPU host, once per call (see below)
#
# `prepare` writes under .device/ (git-ignored):
#   wheels/   gpuship's own dependencies as cp312 wheels (the GPU host's Python 3.12 has no network)
#   gpu/      cuda-ptx-matmul as one oci-archive (issue 5's proof)
#   prune/    cuda-kernel-lib for targets H100 and B200 (one OCI layout, tags h100 and b200: issue 9's proof)
#   selftest/ the pruned self-test libraries and nvJPEG (tests/data/fatbin/gpu_selftest.py; needs nvcc here)
#   numba/    examples/numba-matmul as oci-archive parts (gpuship image convert --split) + .parts.json
#   torch/    examples/torch-status for targets = ["H100"], traced-slimmed (its own GET /status, proven by the
#             second run), as oci-archive parts; sizes.json compares it with the unpruned image and the wheels
# `pack` bins all of that (or WHAT of it: wheels torch), in that order, into folders of at most SIZE (default 60m: a call carries 64 MiB with
# the checkout), which the calls carry one each: carry [".device/x01"], then [".device/x02"], ...
#
# On the GPU host, every call runs `device receive` first: it copies the carried .device/x*/ into
# /tmp/gpuship-device (which outlives the call while the host stays warm) and installs the wheels once. Then the
# proofs whose files have all arrived:
#   host      gpuship-check's driver-only core and frameworks on the host's own Python (no image)
#   matmul    cuda-ptx-matmul: doctor, run, check, a PTX ISA the driver cannot JIT, a CUDA the driver lacks
#   prune     cuda-kernel-lib pruned for H100 (runs) and for B200 (refused, named by gpuship-check)
#   selftest  the pruned libraries and nvJPEG straight on the driver
#   runner    tests/test_run_gpu_host.py (pytest, the built-in runner injecting the driver)
#   numba     numba-matmul: its Numba CUDA kernel verified against numpy, check, --gpus none for both
#   torch     torch-status: the function on the GPU, a GPU matmul against the CPU's, check, GET /status, and
#             bench/serve_load.py against the served image
# e.g.  bash scripts/gpu-validation.sh device receive host matmul 2>&1 | tee $OUT/gpu-validation.log
set -euo pipefail
cd "$(dirname "$0")/.."
D=/tmp/gpuship-device # where the GPU host keeps what arrived
gs() { uv run --locked gpuship "$@"; }

prepare_base() {
  rm -rf .device/gpu .device/prune .device/selftest .device/wheels
  mkdir -p .device/gpu .device/prune .device/wheels
  gs build examples/cuda-ptx-matmul -o oci-archive:.device/gpu/cuda-ptx-matmul.oci.tar \
    --report .device/gpu/cuda-ptx-matmul.json
  # cuda-kernel-lib as it is (targets = ["H100"]), and a copy retargeted to B200 (sm_100 code and PTX only)
  gs build examples/cuda-kernel-lib -t cuda-kernel-lib:h100 -o oci:.device/prune/cuda-kernel-lib:h100 \
    --report .device/prune/cuda-kernel-lib-h100.json
  b200=$(mktemp -d)
  cp -r examples/cuda-kernel-lib/. "$b200"
  sed -i 's/^targets = \["H100"\].*/targets = ["B200"]/' "$b200/pyproject.toml"
  grep -q '^targets = \["B200"\]$' "$b200/pyproject.toml"
  gs build "$b200" -t cuda-kernel-lib:b200 -o oci:.device/prune/cuda-kernel-lib:b200 \
    --report .device/prune/cuda-kernel-lib-b200.json
  rm -rf "$b200"
  uv run --locked python tests/data/fatbin/gpu_selftest.py prepare .device/selftest
  # gpuship's dependencies (not uv: the GPU host builds nothing), and the function runtime's two for `host`
  uv export --locked --no-dev --no-hashes --no-emit-project --format requirements-txt | grep -v '^uv==' \
    > .device/wheels/requirements.device.txt
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .device/wheels -r .device/wheels/requirements.device.txt 2> >(grep -v "^WARNING: Location" >&2)
  sha256sum uv.lock | cut -d' ' -f1 > .device/wheels/uv.lock.sha256 # receive compares it with the checkout's
  du -sh .device/wheels .device/gpu .device/prune .device/selftest
}

# split IMAGE DIR NAME: the image as oci-archive parts DIR/NAME.oci.tar.NNN of 60 MiB and DIR/NAME.oci.tar.parts.json
split() { gs image convert "$1" "oci-archive:$2/$3.oci.tar" --split 60m; }

prepare_numba() {
  rm -rf .device/numba && mkdir -p .device/numba
  local tmp
  tmp=$(mktemp -d)
  gs build examples/numba-matmul -o "oci-archive:$tmp/numba-matmul.oci.tar" --report .device/numba/numba-matmul.json
  split "$tmp/numba-matmul.oci.tar" .device/numba numba-matmul
  rm -rf "$tmp"
}

prepare_torch() {
  rm -rf .device/torch && mkdir -p .device/torch
  local tmp port
  tmp=$(mktemp -d)
  cp -r examples/torch-status/. "$tmp/h100"
  sed -i 's/^targets = .*/targets = ["H100"]/' "$tmp/h100/pyproject.toml"
  grep -q '^targets = \["H100"\]$' "$tmp/h100/pyproject.toml"
  gs build "$tmp/h100" -o "oci-archive:$tmp/torch-h100.oci.tar" --report .device/torch/torch-h100.json
  # the same lock unpruned, for the size comparison (its layers are the ones built above, before pruning)
  cp -r "$tmp/h100/." "$tmp/all"
  sed -i 's/^\[tool.gpuship.gpu\]$/[tool.gpuship.gpu]\nprune-archs = false/' "$tmp/all/pyproject.toml"
  grep -q '^prune-archs = false$' "$tmp/all/pyproject.toml"
  gs build "$tmp/all" -o "oci-archive:$tmp/torch-unpruned.oci.tar"
  # traced slimming with its own workload: the function runtime answering GET /status (on the CPU here)
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  gs slim "oci-archive:$tmp/torch-h100.oci.tar" --http /status -e "PORT=$port" \
    -o "oci-archive:$tmp/torch-h100-slim.oci.tar" --report .device/torch/torch-h100-slim.json
  split "$tmp/torch-h100-slim.oci.tar" .device/torch torch-status-h100-slim
  uv run --locked python scripts/gpu_sizes.py "$tmp/h100" "oci-archive:$tmp/torch-unpruned.oci.tar" \
    "oci-archive:$tmp/torch-h100.oci.tar" "oci-archive:$tmp/torch-h100-slim.oci.tar" \
    .device/torch/torch-status-h100-slim.oci.tar.parts.json | tee .device/torch/sizes.txt
  rm -rf "$tmp"
}

pack() {
  # Bin what prepare made into .device/x01, x02, ... (hard links), each at most $1; one folder per call.
  rm -rf .device/x[0-9]*
  python3 - "$@" <<'EOF'
import os, sys
from pathlib import Path

units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
arg = sys.argv[1].lower().rstrip("ib")
limit = int(arg[:-1]) * units[arg[-1]] if arg[-1] in units else int(arg)
root = Path(".device")
items = []  # (path relative to .device, size): small trees whole, split archives part by part
for name in sys.argv[2:] or ("wheels", "gpu", "prune", "selftest", "numba", "torch"):
    top = root / name
    if not top.exists():
        continue
    if name in ("numba", "torch"):
        items += [(p.relative_to(root), p.stat().st_size) for p in sorted(top.iterdir()) if p.is_file()]
    else:
        items.append((top.relative_to(root), sum(p.stat().st_size for p in top.rglob("*") if p.is_file())))
bins: list[list] = []
for rel, size in items:
    if size > limit:
        sys.exit(f"{rel} ({size} bytes) is bigger than one call's {limit}: split it")
    if not bins or sum(s for _, s in bins[-1]) + size > limit:
        bins.append([])
    bins[-1].append((rel, size))
for i, b in enumerate(bins, 1):
    dest = root / f"x{i:02d}"
    for rel, _ in b:
        src = root / rel
        files = [src] if src.is_file() else [p for p in src.rglob("*") if p.is_file()]
        for f in files:
            out = dest / f.relative_to(root)
            out.parent.mkdir(parents=True, exist_ok=True)
            os.link(f, out)
    print(f"x{i:02d}  {sum(s for _, s in b) / 2**20:6.1f} MiB  " + " ".join(str(r) for r, _ in b))
EOF
}

# -- on the GPU host ----------------------------------------------------------------------------------------------
receive() {
  mkdir -p "$D"
  for x in .device/x[0-9]*/; do
    [ -d "$x" ] && cp -a "$x". "$D/"
  done
  if [ ! -e /tmp/gpuship-site/.done ] && ls "$D"/wheels/*.whl > /dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/gpuship-site "$D"/wheels/*.whl
    touch /tmp/gpuship-site/.done
  fi
  if [ -e "$D/wheels/uv.lock.sha256" ] && [ "$(sha256sum uv.lock | cut -d' ' -f1)" != "$(cat "$D/wheels/uv.lock.sha256")" ]; then
    echo "warning: the wheels were fetched for another uv.lock than this checkout's: run prepare base again" >&2
  fi
  echo "received: $(cd "$D" && find . -type f | wc -l) files, $(du -sm "$D" | cut -f1) MiB in $D"
}

g() { echo "\$ gpuship $*"; python3 -m gpuship "$@"; echo "(exit $?)"; echo; }
have() { # have NAME.parts.json: every part listed there has arrived (else say what is still missing)
  python3 -c 'import json, os, sys
m = sys.argv[1]
if not os.path.exists(m):
    sys.exit(f"skipped: {m} has not arrived")
missing = [p["name"] for p in json.load(open(m))["parts"] if not os.path.exists(os.path.join(os.path.dirname(m), p["name"]))]
if missing:
    sys.exit(f"skipped: {len(missing)} parts of {m} have not arrived yet")' "$1"
}

proof_host() {
  local c="python3 -I -S src/gpuship/check/gpuship_check.py"
  for a in "--no-frameworks" "--no-frameworks --ptx-version 9.0" "--no-frameworks --ptx-version 9.1"; do
    echo "\$ gpuship_check.py $a"
    $c $a
    echo "(exit $?)"
    echo
  done
  echo "\$ GPUSHIP_CHECK_PTX_VERSION=9.9 gpuship_check.py --no-frameworks"
  GPUSHIP_CHECK_PTX_VERSION=9.9 $c --no-frameworks
  echo "(exit $?)"
  echo
  echo "\$ gpuship_check.py  # frameworks on the host's own Python"
  python3 src/gpuship/check/gpuship_check.py
  echo "(exit $?)"
  echo
}

proof_matmul() {
  local img=oci-archive:$D/gpu/cuda-ptx-matmul.oci.tar
  [ -e "$D/gpu/cuda-ptx-matmul.oci.tar" ] || { echo "skipped: cuda-ptx-matmul has not arrived"; return; }
  g doctor
  g run --runtime chroot --gpus all "$img"
  g check --runtime chroot --gpus all "$img"
  # a case the driver cannot serve: PTX of a newer ISA than driver 580 can JIT
  g run --runtime chroot --gpus all -e GPUSHIP_CHECK_PTX_VERSION=9.9 --entrypoint /usr/local/bin/gpuship-check "$img"
  # an image that requires a CUDA line above the driver's 13.0
  g run --runtime chroot --gpus all -e NVIDIA_REQUIRE_CUDA="cuda>=13.2" "$img"
}

proof_prune() {
  [ -e "$D/prune/cuda-kernel-lib/index.json" ] || { echo "skipped: cuda-kernel-lib has not arrived"; return; }
  for t in h100 b200; do
    img=oci:$D/prune/cuda-kernel-lib:$t
    echo "\$ gpuship inspect $img --json  # the GPU code of its CUDA libraries"
    python3 -m gpuship inspect "$img" --json | python3 -c 'import json, sys
for lib in json.load(sys.stdin)["cuda"]:
    print(lib["path"], "carries", ", ".join(lib["sass"] + lib["ptx"]))'
    echo
    g run --runtime chroot --gpus all "$img"
    g check --runtime chroot --gpus all "$img"
  done
}

proof_selftest() {
  [ -e "$D/selftest/expected.json" ] || { echo "skipped: the self-test libraries have not arrived"; return; }
  echo "\$ python3 tests/data/fatbin/gpu_selftest.py run $D/selftest"
  python3 tests/data/fatbin/gpu_selftest.py run "$D/selftest"
  echo "(exit $?)"
  echo
}

proof_runner() {
  echo "\$ GPUSHIP_GPU_TESTS=1 python3 -m pytest -m slow tests/test_run_gpu_host.py"
  GPUSHIP_GPU_TESTS=1 python3 -m pytest -q -p no:cacheprovider -m slow tests/test_run_gpu_host.py 2>&1 | tail -n 15
  echo
}

proof_numba() {
  local m=$D/numba/numba-matmul.oci.tar.parts.json
  have "$m" || return 0
  g image ls "$m"
  echo "\$ gpuship run --runtime chroot --gpus all $m"
  python3 -m gpuship run --runtime chroot --gpus all "$m" 2>&1 | tee /tmp/numba-run.log
  echo "(exit ${PIPESTATUS[0]})"
  echo "NumbaPerformanceWarning lines in that run: $(grep -c NumbaPerformanceWarning /tmp/numba-run.log || true)"
  echo
  g check --runtime chroot --gpus all "$m"
  g check --runtime chroot --gpus none "$m"
  g run --runtime chroot --gpus none "$m"
}

proof_torch() {
  local m=$D/torch/torch-status-h100-slim.oci.tar.parts.json port=18080
  have "$m" || return 0
  g image ls "$m"
  # the function called directly, and a matmul on the GPU against the CPU's
  g run --runtime chroot --gpus all -v "$PWD/scripts:/probe:ro" --entrypoint python3 "$m" -- /probe/gpu_torch_probe.py
  g check --runtime chroot --gpus all "$m"
  # served: GET /status from the function runtime
  local serve=(--runtime chroot --gpus all -e PORT=$port -e MAX_WORKERS=4 -e MAX_QUEUE=64 -e LOG_LEVEL=WARNING "$m")
  echo "\$ gpuship run ${serve[*]} &  # then GET /status"
  python3 -m gpuship run "${serve[@]}" > /tmp/torch-serve.log 2>&1 &
  local pid=$!
  python3 - "$port" <<'EOF'
import json, sys, time, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}/status"
for _ in range(240):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            print(json.dumps(json.load(r), indent=1)); break
    except OSError:
        time.sleep(0.5)
else:
    print("no answer from", url)
EOF
  # issue 8's load figure, now against the image: 2,000 POST /invoke (a 256x256 matmul each), 64 at a time
  echo "\$ python3 bench/serve_load.py --url http://127.0.0.1:$port --requests 2000 --concurrency 64 --work 256"
  python3 bench/serve_load.py --url "http://127.0.0.1:$port" --requests 2000 --concurrency 64 --work 256
  echo "(exit $?)"
  kill -TERM "$pid" 2> /dev/null || true
  wait "$pid" 2> /dev/null || true
  echo "(server log, last lines)"
  tail -n 5 /tmp/torch-serve.log
  echo
}

device() {
  export PYTHONPATH="$PWD/src:/tmp/gpuship-site" GPUSHIP_CACHE=/tmp/gpuship-cache PYTHONUNBUFFERED=1
  set +e
  for step in "$@"; do
    case "$step" in
    receive) receive ;;
    host | matmul | prune | selftest | runner | numba | torch)
      echo "=== $step  ($(date -u +%FT%TZ); $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader))"
      "proof_$step"
      ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
    esac
  done
}

case "${1:-}" in
prepare)
  shift
  [ $# -gt 0 ] || set -- base numba torch
  for what in "$@"; do "prepare_$what"; done
  ;;
pack)
  shift
  pack "${1:-60m}" "${@:2}"
  ;;
device)
  shift
  device "$@"
  ;;
*)
  echo "usage: $0 prepare [base|numba|torch]... | pack [SIZE [WHAT...]] | device receive [host|matmul|prune|selftest|runner|numba|torch]..." >&2
  exit 2
  ;;
esac
