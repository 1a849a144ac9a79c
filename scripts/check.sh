#!/usr/bin/env bash
# The rules the code states, checked by machine: formatting, lint, types. scripts/test.sh runs this first.
set -euo pipefail
cd "$(dirname "$0")/.."
uv run --locked ruff format --check src tests
uv run --locked ruff check src tests
uv run --locked mypy
