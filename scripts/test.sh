#!/usr/bin/env bash
# The test suite: set up .venv if needed, lint with the project's ruff settings (pyproject.toml), then pytest (extra
# arguments pass through, e.g. -k lora).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
.venv/bin/ruff check vpeft tests benchmarks scripts
.venv/bin/ruff format --check vpeft tests benchmarks scripts
exec .venv/bin/python -m pytest -q "$@"
