#!/usr/bin/env bash
# The README's test command: set up a fresh Debian 12 machine and run the whole default test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec uv run --locked pytest "$@"
