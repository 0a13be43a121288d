#!/usr/bin/env bash
# The main job on the built-in default, on this machine's CPU (or GPU), no download: the quick
# study (configs/study/quick.py): base model -> CPT -> {non-thinking, thinking} SFT -> RL on N = 8
# problems x 2 seeds -> report with verdicts on the paper's findings, in runs/study_quick
# (resumes if present). Extra arguments are passed on, e.g. --config.rl.steps=60. A first
# argument --dry-run prints the commands instead of running them.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1-}" = --dry-run ]; then
  shift
  PROG=local.sh
  . launch/lib.sh
  DRY_RUN=1
  step "cd $(q "$PWD")"
  step "bash launch/setup.sh"
  step "exec $(q .venv/bin/rlvr-jax study --config=configs/study/quick.py "--workdir=${WORKDIR:-runs/study_quick}" "$@")"
  exit 0
fi
bash launch/setup.sh
exec .venv/bin/rlvr-jax study --config=configs/study/quick.py --workdir="${WORKDIR:-runs/study_quick}" "$@"
