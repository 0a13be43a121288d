#!/usr/bin/env bash
# Creates ./.venv (if missing) and installs rlvr_jax into it. EXTRAS=test adds the test-only
# references (transformers, torch CPU). Idempotent: re-running only installs what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
  .venv/bin/pip install -q --upgrade pip setuptools wheel
fi
spec="."
[ -n "${EXTRAS:-}" ] && spec=".[${EXTRAS}]"
.venv/bin/pip install -q -e "$spec"
