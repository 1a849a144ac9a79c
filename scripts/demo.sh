#!/usr/bin/env bash
# The README's main job: build the numpy-hello example into an image, load it into Docker, and run it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
uv run --locked gpuship build examples/numpy-hello --output docker:numpy-hello:latest
docker run --rm numpy-hello:latest
