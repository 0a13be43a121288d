#!/usr/bin/env bash
# Runs an rlvr-jax command on this GPU machine (one process that sees every local GPU), as one
# node of a multi-node run (jax.distributed through JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
# JAX_PROCESS_ID), or prints a Slurm batch script (--slurm). See --help; --dry-run prints every
# command instead of running it.
set -euo pipefail
PROG=gpu.sh
cd "$(dirname "$0")/.."
ROOT=$PWD
. launch/lib.sh

usage() {
  cat <<'EOF'
Usage: bash launch/gpu.sh [--nodes N --node-rank R --coordinator HOST:PORT] [options] -- COMMAND...
       bash launch/gpu.sh --slurm [--nodes N] [--gpus-per-node G] [--port PORT] [options] -- COMMAND...

Runs COMMAND (an rlvr-jax command line) from this checkout on the GPUs of this machine:
  1. installs rlvr_jax with the repository's own launch/setup.sh (.venv), then jax[cuda12],
  2. runs COMMAND as one process per host; it sees every local GPU.
Multi-node: run the same command on every node, with --node-rank 0 .. N-1 and the same
--coordinator (node 0's address and a free port). The launcher exports JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES and JAX_PROCESS_ID, which rlvr-jax passes to jax.distributed.initialize.
--slurm prints a batch script instead (sbatch FILE): srun starts one task per node and maps
SLURM_NTASKS / SLURM_PROCID to JAX_NUM_PROCESSES / JAX_PROCESS_ID; node 0 is the coordinator.

Relaunch after a preemption or a time limit: run the same command again (sbatch the same
script); the run resumes from the last checkpoint of its --workdir (on storage every node sees).

Options:
  --nodes N              nodes (processes) in the run (default 1)
  --node-rank R          this node's rank, 0 .. N-1 (N > 1)
  --coordinator H:P      node 0's address and port (N > 1)
  --workdir DIR          the run's workdir; added to COMMAND as --workdir=DIR when COMMAND has
                         none, must match it otherwise
  --data-dir DIR         TFDS_DATA_DIR for the run
  --skip-install         do not run setup / pip (e.g. a shared file system already holds .venv)
  --slurm                print a Slurm batch script and exit
  --gpus-per-node G      #SBATCH --gpus-per-node (with --slurm)
  --port PORT            coordinator port on the first node (with --slurm; default 12345)
  --dry-run              print the commands, one per line, and exit 0
  -h, --help             this text

Examples:
  bash launch/gpu.sh -- rlvr-jax rl --config=configs/qwen2.5_math_1.5b/rl.py --workdir=/shared/runs/rl
  bash launch/gpu.sh --nodes 2 --node-rank 0 --coordinator 10.0.0.2:12345 -- rlvr-jax rl ...
  bash launch/gpu.sh --slurm --nodes 4 --gpus-per-node 8 -- rlvr-jax rl ... > rl.sbatch && sbatch rl.sbatch
EOF
}

NODES=1 RANK="" COORD="" WORKDIR="" DATA_DIR="" INSTALL=1 SLURM=0 GPUS="" PORT=""
CMD=()
while [ $# -gt 0 ]; do
  if [[ $1 == --*=* ]]; then set -- "${1%%=*}" "${1#*=}" "${@:2}"; fi
  case $1 in
    -h|--help) usage; exit 0 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --slurm) SLURM=1; shift ;;
    --skip-install) INSTALL=0; shift ;;
    --nodes) need_value "$1" $# "${2-}"; NODES=$2; shift 2 ;;
    --node-rank) need_value "$1" $# "${2-}"; RANK=$2; shift 2 ;;
    --coordinator) need_value "$1" $# "${2-}"; COORD=$2; shift 2 ;;
    --workdir) need_value "$1" $# "${2-}"; WORKDIR=$2; shift 2 ;;
    --data-dir) need_value "$1" $# "${2-}"; DATA_DIR=$2; shift 2 ;;
    --gpus-per-node) need_value "$1" $# "${2-}"; GPUS=$2; shift 2 ;;
    --port) need_value "$1" $# "${2-}"; PORT=$2; shift 2 ;;
    --) shift; CMD=("$@"); break ;;
    -*) die "unknown option $1" ;;
    *) die "unexpected argument '$1' (the rlvr-jax command goes after --)" ;;
  esac
done
[ ${#CMD[@]} -gt 0 ] || die "no command: put the rlvr-jax command line after --"
is_count "$NODES" || die "--nodes must be a positive integer, not '$NODES'"
if [ "$SLURM" = 1 ]; then
  [ -z "$RANK$COORD" ] || die "--slurm assigns ranks and the coordinator itself: drop --node-rank / --coordinator"
  [ -z "$GPUS" ] || is_count "$GPUS" || die "--gpus-per-node must be a positive integer, not '$GPUS'"
  PORT=${PORT:-12345}
  [[ $PORT =~ ^[0-9]+$ ]] || die "--port must be a port number, not '$PORT'"
else
  [ -z "$GPUS$PORT" ] || die "--gpus-per-node and --port only apply with --slurm"
  if [ "$NODES" -gt 1 ]; then
    [ -n "$RANK" ] || die "--nodes $NODES needs --node-rank (0 .. $((NODES - 1)))"
    [ -n "$COORD" ] || die "--nodes $NODES needs --coordinator HOST:PORT (node 0's address)"
    [[ $RANK =~ ^[0-9]+$ ]] && [ "$RANK" -lt "$NODES" ] ||
      die "--node-rank must be 0 .. $((NODES - 1)), not '$RANK'"
    [[ $COORD =~ ^[^[:space:]]+:[0-9]+$ ]] || die "--coordinator must be HOST:PORT, not '$COORD'"
  else
    [ -z "$RANK$COORD" ] || die "--node-rank and --coordinator need --nodes > 1"
  fi
fi

if have=$(command_workdir "${CMD[@]}"); then
  [ -z "$WORKDIR" ] || [ "$WORKDIR" = "$have" ] ||
    die "--workdir $WORKDIR differs from the command's --workdir=$have"
elif [ -n "$WORKDIR" ]; then
  CMD+=("--workdir=$WORKDIR")
fi

path="export PATH=$(q "$ROOT/.venv/bin"):\"\$PATH\""
tfds=""
[ -z "$DATA_DIR" ] || tfds="export TFDS_DATA_DIR=$(q "$DATA_DIR")"

if [ "$SLURM" = 1 ]; then
  # A batch script for sbatch, printed (never submitted).
  echo "#!/usr/bin/env bash"
  echo "#SBATCH --job-name=rlvr-jax"
  echo "#SBATCH --nodes=$NODES"
  echo "#SBATCH --ntasks-per-node=1"
  [ -z "$GPUS" ] || echo "#SBATCH --gpus-per-node=$GPUS"
  echo "#SBATCH --exclusive"
  echo "#SBATCH --signal=TERM@120"
  note "one task per node, which sees all of the node's GPUs; SIGTERM 120 s before the time"
  note "limit makes rlvr-jax save a checkpoint and exit 75: sbatch this file again to resume"
  echo "set -euo pipefail"
  echo "cd $(q "$ROOT")"
  if [ "$INSTALL" = 1 ]; then
    echo "bash launch/setup.sh"
    echo ".venv/bin/pip install -q \"jax[cuda12]\""
  fi
  echo "export JAX_COORDINATOR_ADDRESS=\"\$(scontrol show hostnames \"\$SLURM_JOB_NODELIST\" | head -n 1):$PORT\""
  [ -z "$tfds" ] || echo "$tfds"
  echo "$path"
  echo "srun --nodes=$NODES --ntasks-per-node=1 bash -c $(q "JAX_NUM_PROCESSES=\$SLURM_NTASKS JAX_PROCESS_ID=\$SLURM_PROCID exec $(q "${CMD[@]}")")"
  exit 0
fi

if [ "$NODES" = 1 ]; then
  note "single host: one process that sees every local GPU"
else
  note "node $RANK of $NODES: run the same command on every node, with --node-rank 0 .. $((NODES - 1))"
fi
step "cd $(q "$ROOT")"
if [ "$INSTALL" = 1 ]; then
  step "bash launch/setup.sh"
  step ".venv/bin/pip install -q \"jax[cuda12]\""
fi
[ "$NODES" = 1 ] ||
  step "export JAX_COORDINATOR_ADDRESS=$(q "$COORD") JAX_NUM_PROCESSES=$NODES JAX_PROCESS_ID=$RANK"
[ -z "$tfds" ] || step "$tfds"
step "$path"
note "relaunch after a preemption: run this same command again; the run resumes from the last checkpoint of its --workdir"
step "exec $(q "${CMD[@]}")"
