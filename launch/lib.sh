# Helpers shared by the launchers (tpu_vm.sh, xpk.sh, gpu.sh, local.sh --dry-run); sourced, not run.
#
# Every launcher builds each step as one shell line and hands it to `step`: with --dry-run the
# line is printed (so the dry run shows exactly what would run, one command per line, and exits
# 0); otherwise it is echoed to stderr with a "+ " prefix and evaluated. Informational lines are
# printed as shell comments ("# ...") so a dry run's output stays a valid shell script.

DRY_RUN=0

# q WORD... : the words shell-quoted (as Python's shlex.quote does) and joined by spaces.
q() {
  local out="" word rest piece
  for word in "$@"; do
    if [[ -n $word && $word != *[!A-Za-z0-9_@%+=:,./-]* ]]; then
      piece=$word
    else
      piece="'"
      rest=$word
      while [[ $rest == *"'"* ]]; do
        piece+="${rest%%"'"*}'\\''"
        rest=${rest#*"'"}
      done
      piece+="$rest'"
    fi
    out+="${out:+ }$piece"
  done
  printf '%s' "$out"
}

# die MESSAGE : one line on stderr, exit status 2 (usage errors).
die() {
  printf '%s: error: %s\n' "$PROG" "$*" >&2
  exit 2
}

# step LINE : print it (dry run) or run it.
step() {
  if [ "$DRY_RUN" = 1 ]; then
    printf '%s\n' "$1"
  else
    printf '+ %s\n' "$1" >&2
    eval "$1"
  fi
}

# note TEXT : an informational line, printed as a shell comment.
note() {
  printf '# %s\n' "$*"
}

# warn TEXT : a warning on stderr (never part of a dry run's stdout).
warn() {
  printf '%s: warning: %s\n' "$PROG" "$*" >&2
}

# launch_stamp : UTC time as YYYYMMDD-HHMMSS; RLVR_JAX_LAUNCH_TIME (same format) fixes it (tests).
launch_stamp() {
  if [ -n "${RLVR_JAX_LAUNCH_TIME:-}" ]; then
    [[ $RLVR_JAX_LAUNCH_TIME =~ ^[0-9]{8}-[0-9]{6}$ ]] ||
      die "RLVR_JAX_LAUNCH_TIME must look like 20260131-235959, not '$RLVR_JAX_LAUNCH_TIME'"
    printf '%s' "$RLVR_JAX_LAUNCH_TIME"
  else
    date -u +%Y%m%d-%H%M%S
  fi
}

# command_workdir WORD... : the value of --workdir=V / --workdir V in an rlvr-jax command line.
command_workdir() {
  local prev=""
  for word in "$@"; do
    case $word in
      --workdir=*) printf '%s' "${word#--workdir=}"; return 0 ;;
    esac
    if [ "$prev" = --workdir ]; then printf '%s' "$word"; return 0; fi
    prev=$word
  done
  return 1
}

# need_value OPTION COUNT NEXT : dies unless OPTION is followed by a value (COUNT: words left).
need_value() {
  [ "$2" -ge 2 ] && [[ $3 != -* ]] || die "$1 needs a value"
}

# is_count VALUE : a positive integer.
is_count() {
  [[ $1 =~ ^[1-9][0-9]*$ ]]
}
