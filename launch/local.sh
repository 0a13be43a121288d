#!/usr/bin/env bash
# The main job on the built-in default, on this machine's CPU (or GPU), no download:
# synthetic domains -> tokenizer -> CPT -> SFT -> RL -> eval, in runs/toy (resumes if present).
# Extra arguments are passed on, e.g. --config.sft.steps=50. A first argument --dry-run prints
# the commands instead of running them.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1-}" = --dry-run ]; then
  shift
  PROG=local.sh
  . launch/lib.sh
  DRY_RUN=1
  step "cd $(q "$PWD")"
  step "bash launch/setup.sh"
  step "exec $(q .venv/bin/rlvr-jax pipeline --config=configs/toy/pipeline.py "--workdir=${WORKDIR:-runs/toy}" "$@")"
  exit 0
fi
bash launch/setup.sh
exec .venv/bin/rlvr-jax pipeline --config=configs/toy/pipeline.py --workdir="${WORKDIR:-runs/toy}" "$@"
