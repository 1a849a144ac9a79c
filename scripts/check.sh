#!/usr/bin/env bash
# The rules the code states, checked by machine: formatting, lint, types. scripts/test.sh runs this first.
set -euo pipefail
cd "$(dirname "$0")/.."
# every Python file of the repository (tests/test_architecture.py checks that none is left out)
PYTHON_DIRS=(src tests bench scripts examples)
uv run --locked ruff format --check "${PYTHON_DIRS[@]}"
uv run --locked ruff check "${PYTHON_DIRS[@]}"
uv run --locked mypy
