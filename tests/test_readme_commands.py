"""The README's first command, typed as a user types it: `bash launch/local.sh` from a fresh copy
of the repository, with the default relative workdir (runs/study_quick), tiny sizes appended."""
import json
import os
import shlex
import shutil
import subprocess
import sys

import pytest

from test_study import TINY

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _repository_files() -> list[str]:
  """What a clone holds: the tracked files and the untracked ones git does not ignore."""
  out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                       capture_output=True, text=True, check=True).stdout
  return [p for p in out.splitlines() if os.path.isfile(os.path.join(ROOT, p))]


def _readme_first_command() -> str:
  with open(os.path.join(ROOT, "README.md")) as f:
    for line in f:
      if line.startswith("bash launch/"):
        return line.split("#")[0].strip()
  raise AssertionError("README.md has no `bash launch/...` command line")


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git to list the repository")
def test_readme_main_command_runs_from_a_fresh_copy_with_a_relative_workdir(tmp_path):
  command = _readme_first_command()
  assert command == "bash launch/local.sh"
  repo = tmp_path / "clone"
  for rel in _repository_files():
    os.makedirs(repo / os.path.dirname(rel), exist_ok=True)
    shutil.copy2(os.path.join(ROOT, rel), repo / rel)
  # The installed environment is reused (launch/setup.sh sees it is up to date and installs
  # nothing); everything else comes from the copy. Bring it up to date here first, so that the
  # copy's setup never re-points the shared editable install at the temporary copy.
  subprocess.run(["bash", "launch/setup.sh"], cwd=ROOT, check=True, capture_output=True,
                 env={**os.environ, "EXTRAS": "test"})
  os.symlink(os.path.join(ROOT, ".venv"), repo / ".venv")
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ""}
  env.pop("WORKDIR", None)
  proc = subprocess.run(["bash", "-c", f"{command} {' '.join(map(shlex.quote, TINY))}"], cwd=repo, env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
  run = repo / "runs" / "study_quick"    # the default workdir, relative to where it was typed
  with open(run / "report.json") as f:
    report = json.load(f)
  assert [v["finding"] for v in report["verdicts"]] == [1, 2, 3]
  with open(run / "study.json") as f:
    stages = json.load(f)["stages"]
  for stage in stages:
    with open(run / stage["dir"] / "status.json") as f:
      assert json.load(f)["status"] in ("completed", "saturated"), stage["name"]
  for finding in (1, 3):                     # the verdict lines end the output
    assert f"Finding {finding} (" in proc.stdout
  assert "runs/study_quick/report.md" in proc.stdout
  assert "Traceback" not in proc.stderr


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))
