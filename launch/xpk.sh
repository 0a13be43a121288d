#!/usr/bin/env bash
# Runs an rlvr-jax command as one xpk workload on a GKE TPU cluster, from an image built from this
# checkout with docker/Dockerfile. See --help; --dry-run prints every command instead of running it.
set -euo pipefail
PROG=xpk.sh
cd "$(dirname "$0")/.."
ROOT=$PWD
. launch/lib.sh

usage() {
  cat <<'EOF'
Usage: bash launch/xpk.sh --cluster CLUSTER --zone ZONE --tpu-type TYPE [options] -- COMMAND...

Runs COMMAND (an rlvr-jax command line) as one xpk workload on a GKE cluster made with
`xpk cluster create`:
  1. builds the image from this checkout (docker build -f docker/Dockerfile: pip install -e .
     plus jax[tpu]) and pushes it,
  2. creates the workload (xpk workload create --docker-image IMAGE --command ...); every host of
     every slice runs COMMAND (GKE sets the TPU environment; nothing to set).
The workload is named after the workdir's last component and the UTC launch time (lowercase,
at most 40 characters), e.g. qwen-math-rl-20260131-235959; one workload per run of this script.

Preemption: rlvr-jax saves a checkpoint on SIGTERM and exits with status 75; with
--max-restarts N (default 3; passed with --restart-on-user-code-failure) the JobSet restarts
the workload up to N times, and each restart resumes from the last checkpoint in --workdir
(gs://). After that, run this script again with the same --workdir: the new workload resumes
the same run.

Required:
  --cluster CLUSTER      the xpk / GKE cluster
  --zone ZONE            its zone, e.g. us-east5-a
  --tpu-type TYPE        slice type, e.g. v5p-128, v6e-256
Options:
  --num-slices N         slices (default 1; more than 1 is multislice over DCN)
  --project PROJECT      Google Cloud project; the image goes to gcr.io/PROJECT/rlvr-jax
  --image REPOSITORY     image repository instead (e.g. us-docker.pkg.dev/P/repo/rlvr-jax)
  --image-tag TAG        image tag (default: the workload name)
  --base-image IMAGE     base image for docker/Dockerfile (default there: python:3.11-slim)
  --no-build             push nothing and use REPOSITORY:TAG as it is (needs --image-tag)
  --workload NAME        workload name instead of the derived one
  --workdir DIR          the run's workdir (gs://bucket/run); added to COMMAND as
                         --workdir=DIR when COMMAND has none, must match it otherwise
  --data-dir DIR         TFDS_DATA_DIR in the containers (gs://bucket/tfds)
  --max-restarts N       JobSet restarts after a failure or preemption (default 3; 0: none)
  --dry-run              print the commands, one per line, and exit 0
  -h, --help             this text
Needs docker (authenticated for the registry: gcloud auth configure-docker) and xpk.
RLVR_JAX_LAUNCH_TIME=YYYYMMDD-HHMMSS fixes the launch time used in the name.

Example:
  bash launch/xpk.sh --cluster my-cluster --zone us-east5-a --tpu-type v5p-128 --project my-proj \
    -- rlvr-jax rl --config=configs/qwen2.5_math_1.5b/rl.py --workdir=gs://my-bucket/runs/qwen_math_rl
EOF
}

CLUSTER="" ZONE="" TPU_TYPE="" SLICES=1 PROJECT="" IMAGE_REPO="" TAG="" BASE_IMAGE="" BUILD=1
WORKLOAD="" WORKDIR="" DATA_DIR="" RESTARTS=3
CMD=()
while [ $# -gt 0 ]; do
  if [[ $1 == --*=* ]]; then set -- "${1%%=*}" "${1#*=}" "${@:2}"; fi
  case $1 in
    -h|--help) usage; exit 0 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --no-build) BUILD=0; shift ;;
    --cluster) need_value "$1" $# "${2-}"; CLUSTER=$2; shift 2 ;;
    --zone) need_value "$1" $# "${2-}"; ZONE=$2; shift 2 ;;
    --tpu-type) need_value "$1" $# "${2-}"; TPU_TYPE=$2; shift 2 ;;
    --num-slices) need_value "$1" $# "${2-}"; SLICES=$2; shift 2 ;;
    --project) need_value "$1" $# "${2-}"; PROJECT=$2; shift 2 ;;
    --image) need_value "$1" $# "${2-}"; IMAGE_REPO=$2; shift 2 ;;
    --image-tag) need_value "$1" $# "${2-}"; TAG=$2; shift 2 ;;
    --base-image) need_value "$1" $# "${2-}"; BASE_IMAGE=$2; shift 2 ;;
    --workload) need_value "$1" $# "${2-}"; WORKLOAD=$2; shift 2 ;;
    --workdir) need_value "$1" $# "${2-}"; WORKDIR=$2; shift 2 ;;
    --data-dir) need_value "$1" $# "${2-}"; DATA_DIR=$2; shift 2 ;;
    --max-restarts) need_value "$1" $# "${2-}"; RESTARTS=$2; shift 2 ;;
    --) shift; CMD=("$@"); break ;;
    -*) die "unknown option $1" ;;
    *) die "unexpected argument '$1' (the rlvr-jax command goes after --)" ;;
  esac
done
[ -n "$CLUSTER" ] || die "--cluster is required"
[ -n "$ZONE" ] || die "--zone is required"
[ -n "$TPU_TYPE" ] || die "--tpu-type is required (e.g. v5p-128)"
[ ${#CMD[@]} -gt 0 ] || die "no command: put the rlvr-jax command line after --"
is_count "$SLICES" || die "--num-slices must be a positive integer, not '$SLICES'"
[[ $RESTARTS =~ ^[0-9]+$ ]] || die "--max-restarts must be a whole number, not '$RESTARTS'"
if [ -z "$IMAGE_REPO" ]; then
  [ -n "$PROJECT" ] || die "--project is required to name the image gcr.io/PROJECT/rlvr-jax (or give --image)"
  IMAGE_REPO="gcr.io/$PROJECT/rlvr-jax"
fi
[ "$BUILD" = 1 ] || [ -n "$TAG" ] || die "--no-build needs --image-tag (the image to run)"

if have=$(command_workdir "${CMD[@]}"); then
  [ -z "$WORKDIR" ] || [ "$WORKDIR" = "$have" ] ||
    die "--workdir $WORKDIR differs from the command's --workdir=$have"
  WORKDIR=$have
elif [ -n "$WORKDIR" ]; then
  CMD+=("--workdir=$WORKDIR")
else
  die "no workdir: give --workdir gs://bucket/run (or --workdir= in the command)"
fi
[[ $WORKDIR == gs://* ]] ||
  warn "--workdir $WORKDIR is inside the container: it is lost when the workload ends; use gs://"

if [ -z "$WORKLOAD" ]; then
  # <workdir basename>-<YYYYMMDD-HHMMSS>: a valid xpk / Kubernetes name, at most 40 characters.
  stamp=$(launch_stamp)
  base=${WORKDIR%"${WORKDIR##*[!/]}"}
  base=$(printf '%s' "${base##*/}" | tr 'A-Z' 'a-z' | sed -e 's/[^a-z0-9-]/-/g' -e 's/--*/-/g' -e 's/^[^a-z]*//')
  base=${base:0:$((40 - 1 - ${#stamp}))}
  while [[ $base == *- ]]; do base=${base%-}; done
  WORKLOAD="${base:-rlvr}-$stamp"
fi
[[ $WORKLOAD =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]] && [ ${#WORKLOAD} -le 40 ] ||
  die "--workload '$WORKLOAD' must be at most 40 lowercase letters, digits and dashes, starting with a letter"
TAG=${TAG:-$WORKLOAD}
[[ $TAG =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "--image-tag '$TAG' is not a valid docker tag"
IMAGE=$(q "$IMAGE_REPO:$TAG")

at=" --zone $(q "$ZONE")"
[ -z "$PROJECT" ] || at+=" --project $(q "$PROJECT")"
env=""
[ -z "$DATA_DIR" ] || env=" && export TFDS_DATA_DIR=$(q "$DATA_DIR")"

if [ "$SLICES" = 1 ]; then
  note "workload $WORKLOAD: one $TPU_TYPE slice on cluster $CLUSTER"
else
  note "workload $WORKLOAD: $SLICES $TPU_TYPE slices (multislice) on cluster $CLUSTER"
fi
step "cd $(q "$ROOT")"
if [ "$BUILD" = 1 ]; then
  build="docker build --platform linux/amd64 -f docker/Dockerfile"
  [ -z "$BASE_IMAGE" ] || build+=" --build-arg $(q "BASE_IMAGE=$BASE_IMAGE")"
  step "$build -t $IMAGE ."
  step "docker push $IMAGE"
fi
# exec: xpk forwards SIGTERM to the command's process, which must be rlvr-jax itself (it saves a
# checkpoint and exits 75); --restart-on-user-code-failure lets that exit status restart the JobSet.
restart=" --max-restarts $RESTARTS"
[ "$RESTARTS" = 0 ] || restart+=" --restart-on-user-code-failure"
step "xpk workload create --cluster $(q "$CLUSTER") --workload $WORKLOAD --docker-image $IMAGE --tpu-type $(q "$TPU_TYPE") --num-slices $SLICES$restart$at --command $(q "cd /app$env && exec $(q "${CMD[@]}")")"
note "follow it: xpk workload list --cluster $(q "$CLUSTER")$at --filter-by-job $WORKLOAD"
if [ "$RESTARTS" = 0 ]; then
  note "relaunch after a preemption: run this same command again; the new workload resumes from the last checkpoint in $WORKDIR"
else
  note "relaunch after a preemption: up to $RESTARTS restarts resume by themselves; after that run this same command again, and the new workload resumes from the last checkpoint in $WORKDIR"
fi
