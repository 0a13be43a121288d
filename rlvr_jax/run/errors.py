"""Errors a user can act on. The CLI prints each as one line (no traceback) and exits 2;
`RLVR_JAX_TRACEBACK=1` shows the traceback."""
from __future__ import annotations

# Exit statuses of the run commands (`rlvr-jax cpt|sft|rl|pipeline|...`).
EXIT_OK = 0
EXIT_FAILED = 1        # an unexpected error (a bug): the traceback is printed
EXIT_USER_ERROR = 2    # bad input or a run the user must act on: one line says what to do
EXIT_PREEMPTED = 75    # stopped by SIGTERM/SIGINT after saving a checkpoint (EX_TEMPFAIL): rerun
                       # the same command to resume; nothing may build on this run yet


class RunError(RuntimeError):
  """A failure the user can act on; its message names the file / field / step and the fix."""


class NonFiniteError(RunError):
  """Too many non-finite updates in a row; the last good checkpoint is left intact."""


class BlowUpError(RunError):
  """The health guard saw a blow-up (a huge update or a loss spike); healthy checkpoints kept."""


class WorkdirBusyError(RunError):
  """Another live process holds the run directory's lock."""


class ResumeMismatchError(RunError):
  """A resume with a config that differs from the one the run was started with."""


class CorruptCheckpointError(RunError):
  """No checkpoint of a run can be read."""


class UnfinishedRunError(RunError):
  """A run given as the starting point of another has not finished."""
