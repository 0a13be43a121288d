#!/usr/bin/env bash
# Runs an rlvr-jax command on a Cloud TPU VM slice (single host or multi-host) created through a
# queued resource. See --help; --dry-run prints every command instead of running it.
set -euo pipefail
PROG=tpu_vm.sh
cd "$(dirname "$0")/.."
ROOT=$PWD
. launch/lib.sh

usage() {
  cat <<'EOF'
Usage: bash launch/tpu_vm.sh --name NAME --zone ZONE --accelerator TYPE [options] -- COMMAND...

Runs COMMAND (an rlvr-jax command line) on every worker of a Cloud TPU VM slice:
  1. creates the queued resource NAME (kept if it is already there; deleted and created again
     if it was preempted or failed) and waits until it is ACTIVE,
  2. copies this checkout (--copy, the default) or clones --repo-url onto all workers
     (into ~/rlvr_jax; its .venv and runs/ are kept across relaunches),
  3. installs rlvr_jax on all workers with the repository's own launch/setup.sh, then jax[tpu],
  4. runs COMMAND on all workers (--worker=all), each writing ~/rlvr_jax_logs/<host>.log,
  5. gathers the workers' logs into logs/NAME/.
The same commands serve single-host slices (v5litepod-8, v6e-8: one worker) and multi-host
slices (v5p-32, v6e-16, ...: the TPU runtime connects the workers; nothing to set).

Needs gcloud (authenticated; for --worker=all gcloud advises `ssh-add ~/.ssh/google_compute_engine`
first). The run's output comes back over SSH: start the launcher inside tmux or screen.

Relaunch after a preemption: run the same command again. The slice is recreated and the run
resumes from the last checkpoint of its --workdir, which must be on gs:// to survive the VM.

Required:
  --name NAME            queued resource and TPU VM name
  --zone ZONE            e.g. us-east5-a
  --accelerator TYPE     accelerator type, e.g. v5litepod-8, v6e-8, v5p-32
Options:
  --version VERSION      TPU software version (default: v2-alpha-tpuv6e for v6e,
                         v2-alpha-tpuv5 for v5p, v2-alpha-tpuv5-lite for v5litepod,
                         tpu-ubuntu2204-base otherwise)
  --project PROJECT      Google Cloud project (default: gcloud's configured project)
  --spot                 Spot capacity (queued-resources create --spot)
  --preemptible          best-effort capacity (gcloud alpha ... create --best-effort)
  --copy                 copy this checkout to the workers (default)
  --repo-url URL         clone URL on the workers instead (pulled again on a relaunch)
  --workdir DIR          the run's workdir (gs://bucket/run); added to COMMAND as
                         --workdir=DIR when COMMAND has none, must match it otherwise
  --data-dir DIR         TFDS_DATA_DIR on the workers (gs://bucket/tfds)
  --python PYTHON        worker Python for the virtualenv, installed with apt when
                         missing (default: python3.11; jax needs >= 3.11)
  --dry-run              print the commands, one per line, and exit 0
  -h, --help             this text

Example:
  bash launch/tpu_vm.sh --name rl-v5p --zone us-east5-a --accelerator v5p-32 --spot \
    --data-dir gs://my-bucket/tfds -- rlvr-jax rl --config=configs/qwen2.5_math_1.5b/rl.py \
    --workdir=gs://my-bucket/runs/qwen_math_rl
EOF
}

NAME="" ZONE="" ACCEL="" VERSION="" PROJECT="" CAPACITY="" SOURCE="" REPO_URL=""
WORKDIR="" DATA_DIR="" PY=python3.11
CMD=()
while [ $# -gt 0 ]; do
  if [[ $1 == --*=* ]]; then set -- "${1%%=*}" "${1#*=}" "${@:2}"; fi
  case $1 in
    -h|--help) usage; exit 0 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --spot|--preemptible)
      [ -z "$CAPACITY" ] || [ "$CAPACITY" = "$1" ] || die "--spot and --preemptible exclude each other"
      CAPACITY=$1; shift ;;
    --copy)
      [ "$SOURCE" != url ] || die "--copy and --repo-url exclude each other"
      SOURCE=copy; shift ;;
    --repo-url)
      need_value "$1" $# "${2-}"
      [ "$SOURCE" != copy ] || die "--copy and --repo-url exclude each other"
      SOURCE=url; REPO_URL=$2; shift 2 ;;
    --name) need_value "$1" $# "${2-}"; NAME=$2; shift 2 ;;
    --zone) need_value "$1" $# "${2-}"; ZONE=$2; shift 2 ;;
    --accelerator) need_value "$1" $# "${2-}"; ACCEL=$2; shift 2 ;;
    --version) need_value "$1" $# "${2-}"; VERSION=$2; shift 2 ;;
    --project) need_value "$1" $# "${2-}"; PROJECT=$2; shift 2 ;;
    --workdir) need_value "$1" $# "${2-}"; WORKDIR=$2; shift 2 ;;
    --data-dir) need_value "$1" $# "${2-}"; DATA_DIR=$2; shift 2 ;;
    --python) need_value "$1" $# "${2-}"; PY=$2; shift 2 ;;
    --) shift; CMD=("$@"); break ;;
    -*) die "unknown option $1" ;;
    *) die "unexpected argument '$1' (the rlvr-jax command goes after --)" ;;
  esac
done
[ -n "$NAME" ] || die "--name is required"
[ -n "$ZONE" ] || die "--zone is required"
[ -n "$ACCEL" ] || die "--accelerator is required (e.g. v5litepod-8, v6e-8, v5p-32)"
[ ${#CMD[@]} -gt 0 ] || die "no command: put the rlvr-jax command line after --"
[[ $NAME =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]] ||
  die "--name '$NAME' must be lowercase letters, digits and dashes, starting with a letter"
SOURCE=${SOURCE:-copy}

if have=$(command_workdir "${CMD[@]}"); then
  [ -z "$WORKDIR" ] || [ "$WORKDIR" = "$have" ] ||
    die "--workdir $WORKDIR differs from the command's --workdir=$have"
  WORKDIR=$have
elif [ -n "$WORKDIR" ]; then
  CMD+=("--workdir=$WORKDIR")
fi
if [ -z "$WORKDIR" ]; then
  warn "no --workdir: the command will have to name one (use gs:// to resume after a preemption)"
elif [[ $WORKDIR != gs://* ]]; then
  warn "--workdir $WORKDIR is on the workers' disks: it is lost with the VM and cannot resume after a preemption; use gs://"
fi

if [ -z "$VERSION" ]; then
  case $ACCEL in
    v6e-*) VERSION=v2-alpha-tpuv6e ;;
    v5p-*) VERSION=v2-alpha-tpuv5 ;;
    v5litepod-*) VERSION=v2-alpha-tpuv5-lite ;;
    *) VERSION=tpu-ubuntu2204-base ;;
  esac
fi

# Workers in the slice, when the accelerator type says (v2-v5p name TensorCores, 8 per host;
# v5e / v6e name chips, up to 8 on one host, 4 per host in multi-host slices).
hosts=""
count=${ACCEL##*-}
if [[ $count =~ ^[0-9]+$ ]]; then
  case ${ACCEL%-*} in
    v2|v3|v4|v5p) hosts=$(( count <= 8 ? 1 : count / 8 )) ;;
    v5litepod|v6e) hosts=$(( count <= 8 ? 1 : count / 4 )) ;;
  esac
fi

N=$(q "$NAME")
P=""
[ -z "$PROJECT" ] || P=" --project $(q "$PROJECT")"
at=" --zone $(q "$ZONE")$P"
QR="gcloud compute tpus queued-resources"
VM="gcloud compute tpus tpu-vm"
describe="$QR describe $N$at --format='value(state.state)'"
on_all() { printf '%s' "$VM ssh $N$at --worker=all --command $(q "$1")"; }

case $hosts in
  "") note "$ACCEL: the commands below run on every worker of the slice" ;;
  1) note "$ACCEL: single host (one worker)" ;;
  *) note "$ACCEL: multi-host, $hosts workers; the same command runs on every worker" ;;
esac
step "cd $(q "$ROOT")"

# 1. The queued resource: keep a live one, replace a preempted or failed one, wait for ACTIVE.
create="$QR create $N --node-id $N$at --accelerator-type $(q "$ACCEL") --runtime-version $(q "$VERSION")"
case $CAPACITY in
  --spot) create+=" --spot" ;;
  --preemptible) create="gcloud alpha ${create#gcloud } --best-effort" ;;
esac
step "state=\$($describe 2>/dev/null || true)"
step "case \"\$state\" in FAILED|SUSPENDING|SUSPENDED) $QR delete $N$at --force --quiet; state= ;; esac"
step "[ -n \"\$state\" ] || $create"
step "while :; do state=\$($describe 2>/dev/null || true); case \"\$state\" in ACTIVE) break ;; FAILED|SUSPENDING|SUSPENDED|DELETING) echo \"$PROG: queued resource $NAME is \$state; run this script again\" >&2; exit 1 ;; esac; echo \"waiting for $NAME: \${state:-?}\" >&2; sleep 30; done"

# 2. The code on every worker.
if [ "$SOURCE" = copy ]; then
  tarball=$(q "build/launch/$NAME.tar.gz")
  step "mkdir -p build/launch"
  step "tar -czf $tarball --exclude=./.git --exclude=./.venv --exclude=./build --exclude=./runs --exclude=./logs --exclude=__pycache__ --exclude='*.egg-info' --exclude=.pytest_cache ."
  step "$VM scp $tarball $N:rlvr_jax.tar.gz$at --worker=all"
  step "$(on_all "mkdir -p ~/rlvr_jax && find ~/rlvr_jax -mindepth 1 -maxdepth 1 ! -name .venv ! -name runs -exec rm -rf {} + && tar -xzf ~/rlvr_jax.tar.gz -C ~/rlvr_jax")"
else
  step "$(on_all "if [ -d ~/rlvr_jax/.git ]; then git -C ~/rlvr_jax pull -q --ff-only; else rm -rf ~/rlvr_jax && git clone -q $(q "$REPO_URL") ~/rlvr_jax; fi")"
fi

# 3. Install: the repository's setup (its own pyproject.toml), then the TPU build of jax.
py=$(q "$PY")
apt="sudo DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600"
step "$(on_all "$py -c \"import ensurepip\" 2>/dev/null || { $apt update -qq && $apt install -y -qq $py $(q "$PY-venv"); }; cd ~/rlvr_jax && PYTHON=$py bash launch/setup.sh")"
step "$(on_all "cd ~/rlvr_jax && .venv/bin/pip install -q \"jax[tpu]\"")"

# 4. The same command on every worker, each logging to its own file.
# RLVR_JAX_DISTRIBUTED=1: every worker calls jax.distributed.initialize(), which finds the
# slice's coordinator from the TPU VM metadata (the shell of a TPU VM does not have it).
env=" && export RLVR_JAX_DISTRIBUTED=1"
[ -z "$DATA_DIR" ] || env="$env && export TFDS_DATA_DIR=$(q "$DATA_DIR")"
rc=0
step "$(on_all "mkdir -p ~/rlvr_jax_logs && cd ~/rlvr_jax && . .venv/bin/activate$env && set -o pipefail && $(q "${CMD[@]}") 2>&1 | tee -a ~/rlvr_jax_logs/\$(hostname).log")" || rc=$?

# 5. The logs, gathered back.
logs=$(q "logs/$NAME")
step "mkdir -p $logs"
step "$VM scp $N:'rlvr_jax_logs/*' $logs/$at --worker=all" || warn "could not gather the workers' logs"

if [ "$rc" = 75 ]; then
  note "the run was preempted (exit status 75) and saved a checkpoint"
fi
note "relaunch after a preemption: run this same command again; the slice is recreated if it was preempted and the run resumes from the last checkpoint in ${WORKDIR:-its --workdir}"
note "logs: logs/$NAME/<worker>.log"
note "delete the slice when done: $QR delete $N$at --force --quiet"
exit "$rc"
