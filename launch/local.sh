#!/usr/bin/env bash
# The main job on the built-in default, on this machine's CPU (or GPU), no download:
# synthetic domains -> tokenizer -> CPT -> SFT -> RL -> eval, in runs/toy (resumes if present).
# Extra arguments are passed on, e.g. --config.sft.steps=50.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
exec .venv/bin/rlvr-jax pipeline --config=configs/toy/pipeline.py --workdir="${WORKDIR:-runs/toy}" "$@"
