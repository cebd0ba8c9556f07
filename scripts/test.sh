#!/usr/bin/env bash
# The test suite: set up .venv if needed, then pytest (extra arguments pass through, e.g. -k lora).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
