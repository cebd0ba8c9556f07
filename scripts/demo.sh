#!/usr/bin/env bash
# The main job on the embedded default: set up .venv if needed, then `vpeft demo` (extra arguments pass through).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
exec .venv/bin/vpeft demo "$@"
