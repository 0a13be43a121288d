#!/usr/bin/env bash
# Installs rlvr_jax with its test extras into ./.venv and runs the whole test suite.
# pytest's exit status is returned as is (5 = no tests collected counts as a failure).
# Two pytest-xdist workers (PYTEST_WORKERS), each test file on one worker: the suite is bound by
# single-threaded tracing and compiling, so two workers finish ~25% sooner on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=test bash launch/setup.sh
export JAX_PLATFORMS=cpu TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest -q -p no:cacheprovider --durations=15 \
  -n "${PYTEST_WORKERS:-2}" --dist loadfile "$@" tests
