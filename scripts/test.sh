#!/usr/bin/env bash
# The README's test command: set up a fresh Debian 12 machine, run the checks (scripts/check.sh: format, lint,
# types), then the whole default test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
bash scripts/check.sh
exec uv run --locked pytest "$@"
