#!/usr/bin/env bash
# Creates ./.venv (if missing) and installs rlvr_jax into it. EXTRAS=test adds the test-only
# references (transformers, torch CPU). Idempotent: when .venv already holds this pyproject.toml's
# install (with at least the extras asked for) it does nothing, else it installs what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
  .venv/bin/pip install -q --upgrade pip setuptools wheel
fi
stamp=.venv/.rlvr_jax-install
deps=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ -f "$stamp" ] && .venv/bin/python -I -c "import rlvr_jax" 2>/dev/null && [ -x .venv/bin/rlvr-jax ]; then
  read -r have_deps have_extras < "$stamp" || true
  if [ "$have_deps" = "$deps" ] && { [ -z "${EXTRAS:-}" ] || [ "${have_extras:-}" = "${EXTRAS}" ]; }; then
    exit 0
  fi
fi
spec="."
[ -n "${EXTRAS:-}" ] && spec=".[${EXTRAS}]"
.venv/bin/pip install -q -e "$spec"
echo "$deps ${EXTRAS:-}" > "$stamp"
