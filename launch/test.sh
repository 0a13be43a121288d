#!/usr/bin/env bash
# Installs rlvr_jax with its test extras into ./.venv and runs the whole test suite.
# pytest's exit status is returned as is (5 = no tests collected counts as a failure).
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=test bash launch/setup.sh
export JAX_PLATFORMS=cpu TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest -q -p no:cacheprovider --durations=15 "$@" tests
