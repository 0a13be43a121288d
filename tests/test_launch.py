"""The launchers (launch/tpu_vm.sh, xpk.sh, gpu.sh, local.sh) in --dry-run: the commands they print
for single-host and multi-host runs match tests/fixtures/launch/*.txt exactly (after the repository
path is replaced by <REPO>; names are fixed by RLVR_JAX_LAUNCH_TIME), and usage errors are one line
with exit status 2. Nothing here needs gcloud, xpk or docker: stand-ins that fail loudly come first
on PATH, so a dry run that tried to call one would be caught.

RLVR_JAX_UPDATE_FIXTURES=1 rewrites the fixture files from the current output."""
import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "launch")
STAMP = "20260131-120000"
TOOLS = ("gcloud", "xpk", "docker", "kubectl", "sbatch", "srun", "scontrol", "ssh", "scp")

RL = ["rlvr-jax", "rl", "--config=configs/qwen2.5_math_1.5b/rl.py"]
RUN = "gs://my-bucket/runs/qwen_math_rl"

CASES = {
    # Cloud TPU VM: one worker (v6e-8), this checkout copied (the default), TFDS data on gs://.
    "tpu_vm_single_host": ("tpu_vm.sh", [
        "--name", "rl-v6e", "--zone", "us-east5-b", "--accelerator", "v6e-8",
        "--data-dir", "gs://my-bucket/tfds", "--dry-run", "--", *RL, f"--workdir={RUN}"]),
    # Multi-host slice (v5p-32: 4 workers), spot, cloned from a URL, --workdir given to the script.
    "tpu_vm_multi_host": ("tpu_vm.sh", [
        "--name", "rl-v5p", "--zone", "us-east5-a", "--accelerator", "v5p-32",
        "--project", "my-project", "--spot", "--repo-url", "https://github.com/example/rlvr_jax.git",
        "--workdir", RUN, "--dry-run", "--", *RL,
        "--config.init.from_hf=/mnt/models/Qwen2.5-Math-1.5B"]),
    # Best-effort (gcloud alpha ... --best-effort), an explicit software version, v5e multi-host.
    "tpu_vm_preemptible": ("tpu_vm.sh", [
        "--name", "sft-v5e", "--zone", "us-west4-a", "--accelerator", "v5litepod-16",
        "--version", "v2-alpha-tpuv5-lite", "--preemptible", "--copy", "--dry-run", "--",
        "rlvr-jax", "sft", "--config=configs/llama3.2_3b/sft_thinking.py",
        "--workdir=gs://my-bucket/runs/llama_sft"]),
    # GKE through xpk: one slice; the workload / image tag come from the workdir and the time.
    "xpk_single_slice": ("xpk.sh", [
        "--cluster", "my-cluster", "--zone", "us-east5-a", "--tpu-type", "v5p-8",
        "--project", "my-project", "--dry-run", "--",
        "rlvr-jax", "sft", "--config=configs/llama3.2_3b/sft_thinking.py",
        "--workdir=gs://my-bucket/runs/llama_sft"]),
    # Multislice, TFDS data, a chosen base image and registry.
    "xpk_multi_slice": ("xpk.sh", [
        "--cluster", "my-cluster", "--zone", "us-east5-a", "--tpu-type", "v5p-128",
        "--num-slices", "2", "--project", "my-project",
        "--image", "us-docker.pkg.dev/my-project/rlvr/rlvr-jax", "--base-image", "python:3.11-slim",
        "--data-dir", "gs://my-bucket/tfds", "--workdir", RUN, "--dry-run", "--", *RL]),
    # One GPU host: one process, every local GPU; an argument that needs quoting.
    "gpu_single_host": ("gpu.sh", [
        "--dry-run", "--", *RL, "--workdir=/shared/runs/qwen_math_rl",
        "--config.eval.files=math500=/data/my data/math500.jsonl"]),
    # Node 1 of 2 through the jax.distributed variables.
    "gpu_multi_node": ("gpu.sh", [
        "--nodes", "2", "--node-rank", "1", "--coordinator", "10.0.0.2:12345",
        "--data-dir", "/shared/tfds", "--dry-run", "--", *RL, "--workdir=/shared/runs/qwen_math_rl"]),
    # The Slurm batch script: SLURM_NTASKS / SLURM_PROCID -> JAX_NUM_PROCESSES / JAX_PROCESS_ID.
    "gpu_slurm": ("gpu.sh", [
        "--slurm", "--nodes", "4", "--gpus-per-node", "8", "--", *RL,
        "--workdir=/shared/runs/qwen_math_rl"]),
    # The local quick study; extra arguments are passed on.
    "local_dry_run": ("local.sh", ["--dry-run", "--config.rl.steps=50"]),
}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  """PATH with failing stand-ins for the cloud tools first; the launch time fixed."""
  stubs = tmp_path_factory.mktemp("stubs")
  calls = stubs / "calls.log"
  for tool in TOOLS:
    path = stubs / tool
    path.write_text(f'#!/bin/sh\necho "{tool} $*" >> "{calls}"\nexit 97\n')
    path.chmod(0o755)
  env = {k: v for k, v in os.environ.items() if k not in ("WORKDIR", "DRY_RUN", "RLVR_JAX_LAUNCH_TIME")}
  env["PATH"] = f"{stubs}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
  env["RLVR_JAX_LAUNCH_TIME"] = STAMP
  yield env
  assert not calls.exists(), "a dry run called a cloud tool:\n" + calls.read_text()


def launch(env, script, args, cwd=None):
  return subprocess.run(["bash", os.path.join(ROOT, "launch", script), *args], env=env,
                        cwd=cwd or "/", capture_output=True, text=True, timeout=60)


def normalise(text: str) -> str:
  for root in {os.path.realpath(ROOT), ROOT}:
    text = text.replace(root, "<REPO>")
  return text


@pytest.mark.parametrize("case", sorted(CASES))
def test_dry_run_prints_the_fixture_commands(env, case, tmp_path):
  script, args = CASES[case]
  proc = launch(env, script, args)
  assert proc.returncode == 0, proc.stderr
  out = normalise(proc.stdout)
  fixture = os.path.join(FIXTURES, case + ".txt")
  if os.environ.get("RLVR_JAX_UPDATE_FIXTURES"):
    os.makedirs(FIXTURES, exist_ok=True)
    with open(fixture, "w") as f:
      f.write(out)
  with open(fixture) as f:
    assert out == f.read(), f"{case}: dry-run output differs from {fixture}"
  # The output is a valid shell script, each command on one line.
  script_file = tmp_path / "out.sh"
  script_file.write_text(proc.stdout)
  syntax = subprocess.run(["bash", "-n", str(script_file)], capture_output=True, text=True)
  assert syntax.returncode == 0, syntax.stderr
  for line in proc.stdout.splitlines():
    shlex.split(line, comments=True)     # every line on its own: balanced quotes
  # A dry run leaves no trace in the repository.
  assert not os.path.exists(os.path.join(ROOT, "build", "launch", "rl-v6e.tar.gz"))
  assert not os.path.exists(os.path.join(ROOT, "logs", "rl-v6e"))


def _lines(env, script, args):
  proc = launch(env, script, args)
  assert proc.returncode == 0, proc.stderr
  return [l for l in proc.stdout.splitlines() if not l.startswith("#")]


def test_tpu_vm_same_commands_on_all_workers_single_and_multi_host(env):
  single = _lines(env, *CASES["tpu_vm_single_host"])
  multi = _lines(env, *CASES["tpu_vm_multi_host"])
  for lines in (single, multi):
    ssh = [l for l in lines if " tpu-vm ssh " in l]
    assert ssh and all("--worker=all" in l for l in ssh)
    assert all("--worker=all" in l for l in lines if " tpu-vm scp " in l)
    # install from the repository's own files, then the TPU jax as its own step
    assert any("bash launch/setup.sh" in l for l in ssh)
    assert any('.venv/bin/pip install -q "jax[tpu]"' in l for l in ssh)
    assert not any("storage.googleapis.com" in l or " -f http" in l for l in lines)
    run = [l for l in ssh if "rlvr-jax rl" in l]
    assert len(run) == 1 and "rlvr_jax_logs/$(hostname).log" in run[0]
    assert any("queued-resources create" in l for l in lines)
    assert any(l.startswith("while :; do state=$(gcloud compute tpus queued-resources describe")
               and "--format='value(state.state)'" in l for l in lines)
  assert any("export TFDS_DATA_DIR=gs://my-bucket/tfds" in l for l in single)
  assert any("create rl-v5p" in l and l.endswith(" --spot") for l in multi)
  # --workdir given to the script is appended to the command
  assert any(f"--workdir={RUN} 2>&1" in l for l in multi)


def test_tpu_vm_preemptible_is_best_effort_through_alpha(env):
  lines = _lines(env, *CASES["tpu_vm_preemptible"])
  create = [l for l in lines if "queued-resources create" in l]
  assert len(create) == 1
  assert "|| gcloud alpha compute tpus queued-resources create sft-v5e" in create[0]
  assert create[0].endswith(" --best-effort")


def test_tpu_vm_relaunch_is_documented_in_the_output(env):
  proc = launch(env, *CASES["tpu_vm_single_host"])
  notes = [l for l in proc.stdout.splitlines() if l.startswith("# relaunch")]
  assert len(notes) == 1 and RUN in notes[0] and "resumes from the last checkpoint" in notes[0]


def test_tpu_vm_runtime_version_follows_the_accelerator(env):
  for accel, version in (("v6e-8", "v2-alpha-tpuv6e"), ("v5p-32", "v2-alpha-tpuv5"),
                         ("v5litepod-8", "v2-alpha-tpuv5-lite"), ("v4-8", "tpu-ubuntu2204-base")):
    lines = _lines(env, "tpu_vm.sh", ["--name", "t", "--zone", "z", "--accelerator", accel,
                                      "--dry-run", "--", "rlvr-jax", "rl", "--workdir=gs://b/r"])
    assert any(f"--runtime-version {version}" in l for l in lines), accel


def test_tpu_vm_local_workdir_warns_on_stderr_only(env):
  proc = launch(env, "tpu_vm.sh", ["--name", "t", "--zone", "z", "--accelerator", "v6e-8",
                                   "--dry-run", "--", "rlvr-jax", "rl", "--workdir", "runs/x"])
  assert proc.returncode == 0
  assert "warning" in proc.stderr and "gs://" in proc.stderr
  assert "warning" not in proc.stdout


XPK_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


@pytest.mark.parametrize("workdir, name", [
    ("gs://b/runs/qwen_math_rl", f"qwen-math-rl-{STAMP}"),
    ("gs://b/runs/qwen_math_rl/", f"qwen-math-rl-{STAMP}"),
    ("gs://b/runs/Qwen2.5-Math_RL.very-long-name-for-a-run", f"qwen2-5-math-rl-very-lon-{STAMP}"),
    ("gs://b/runs/2024_rl", f"rl-{STAMP}"),
    ("gs://b/runs/___", f"rlvr-{STAMP}"),
    ("gs://bucket", f"bucket-{STAMP}"),
])
def test_xpk_workload_name_is_a_valid_k8s_name(env, workdir, name):
  lines = _lines(env, "xpk.sh", ["--cluster", "c", "--zone", "z", "--tpu-type", "v5p-8",
                                 "--project", "p", "--dry-run", "--", "rlvr-jax", "rl",
                                 f"--workdir={workdir}"])
  create = [l for l in lines if l.startswith("xpk workload create")]
  assert len(create) == 1
  words = shlex.split(create[0])
  got = words[words.index("--workload") + 1]
  assert got == name
  assert XPK_NAME.fullmatch(got) and len(got) <= 40
  assert words[words.index("--docker-image") + 1] == f"gcr.io/p/rlvr-jax:{name}"
  # the command runs in the image's checkout and exec's rlvr-jax (so SIGTERM reaches it)
  command = words[words.index("--command") + 1]
  assert command == f"cd /app && exec rlvr-jax rl --workdir={workdir}"


def test_xpk_builds_from_the_repository_dockerfile(env):
  lines = _lines(env, *CASES["xpk_single_slice"])
  assert lines[1].startswith("docker build ") and " -f docker/Dockerfile " in lines[1]
  assert lines[1].endswith(" .")
  assert lines[2].startswith("docker push ")
  with open(os.path.join(ROOT, "docker", "Dockerfile")) as f:
    dockerfile = f.read()
  assert "pip install -e ." in dockerfile and "jax[tpu]" in dockerfile
  assert "ENTRYPOINT" not in dockerfile and "http" not in dockerfile


def test_xpk_no_build_reuses_an_image(env):
  lines = _lines(env, "xpk.sh", ["--cluster", "c", "--zone", "z", "--tpu-type", "v5p-8",
                                 "--project", "p", "--no-build", "--image-tag", "v1",
                                 "--workload", "my-run", "--max-restarts", "0", "--dry-run", "--",
                                 "rlvr-jax", "rl", "--workdir=gs://b/r"])
  assert not any(l.startswith("docker ") for l in lines)
  create = [l for l in lines if l.startswith("xpk workload create")][0]
  assert "--workload my-run --docker-image gcr.io/p/rlvr-jax:v1" in create
  assert "--max-restarts 0 " in create and "--restart-on-user-code-failure" not in create


def test_gpu_exports_the_variables_sharding_reads(env):
  with open(os.path.join(ROOT, "rlvr_jax", "sharding.py")) as f:
    source = f.read().split("def maybe_initialize_distributed", 1)[1].split("\ndef ", 1)[0]
  lines = _lines(env, *CASES["gpu_multi_node"])
  exports = [l for l in lines if l.startswith("export JAX_")]
  assert exports == ["export JAX_COORDINATOR_ADDRESS=10.0.0.2:12345 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=1"]
  for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
    assert f'"{name}"' in source
  single = _lines(env, *CASES["gpu_single_host"])
  assert not any("JAX_" in l for l in single)
  assert '.venv/bin/pip install -q "jax[cuda12]"' in single
  slurm = launch(env, *CASES["gpu_slurm"]).stdout
  assert "JAX_NUM_PROCESSES=$SLURM_NTASKS JAX_PROCESS_ID=$SLURM_PROCID" in slurm


def test_gpu_skip_install(env):
  lines = _lines(env, "gpu.sh", ["--skip-install", "--dry-run", "--", "rlvr-jax", "rl"])
  assert not any("setup.sh" in l or "pip" in l for l in lines)


def test_local_dry_run_keeps_the_default_workdir_and_passes_arguments(env):
  lines = _lines(env, "local.sh", ["--dry-run"])
  assert normalise("\n".join(lines)).splitlines() == [
      "cd <REPO>", "bash launch/setup.sh",
      "exec .venv/bin/rlvr-jax study --config=configs/study/quick.py --workdir=runs/study_quick"]


@pytest.mark.parametrize("script", ["tpu_vm.sh", "xpk.sh", "gpu.sh"])
def test_help(env, script):
  proc = launch(env, script, ["--help"])
  assert proc.returncode == 0
  assert proc.stdout.startswith(f"Usage: bash launch/{script} ")
  assert "--dry-run" in proc.stdout


TPU = ["--name", "t", "--zone", "z", "--accelerator", "v5p-32"]
XPK = ["--cluster", "c", "--zone", "z", "--tpu-type", "v5p-8", "--project", "p"]
CMD = ["--", "rlvr-jax", "rl", "--workdir=gs://b/r"]


@pytest.mark.parametrize("script, args, message", [
    ("tpu_vm.sh", [], "--name is required"),
    ("tpu_vm.sh", ["--name", "t", "--accelerator", "v5p-32", *CMD], "--zone is required"),
    ("tpu_vm.sh", ["--name", "t", "--zone", "z", *CMD], "--accelerator is required"),
    ("tpu_vm.sh", TPU, "no command"),
    ("tpu_vm.sh", [*TPU, "--"], "no command"),
    ("tpu_vm.sh", [*TPU, "--spot", "--preemptible", *CMD], "--spot and --preemptible"),
    ("tpu_vm.sh", [*TPU, "--copy", "--repo-url", "u", *CMD], "--copy and --repo-url"),
    ("tpu_vm.sh", [*TPU, "--zone"], "--zone needs a value"),
    ("tpu_vm.sh", [*TPU, "--project", "--dry-run", *CMD], "--project needs a value"),
    ("tpu_vm.sh", [*TPU, "--bogus", *CMD], "unknown option --bogus"),
    ("tpu_vm.sh", [*TPU, "rlvr-jax", *CMD], "unexpected argument 'rlvr-jax'"),
    ("tpu_vm.sh", [*TPU, "--workdir", "gs://b/other", *CMD], "differs"),
    ("tpu_vm.sh", ["--name", "My_TPU", "--zone", "z", "--accelerator", "v5p-32", *CMD], "--name"),
    ("xpk.sh", ["--zone", "z", "--tpu-type", "v5p-8", *CMD], "--cluster is required"),
    ("xpk.sh", ["--cluster", "c", "--tpu-type", "v5p-8", *CMD], "--zone is required"),
    ("xpk.sh", ["--cluster", "c", "--zone", "z", *CMD], "--tpu-type is required"),
    ("xpk.sh", ["--cluster", "c", "--zone", "z", "--tpu-type", "v5p-8", *CMD], "--project is required"),
    ("xpk.sh", [*XPK, "--num-slices", "0", *CMD], "--num-slices"),
    ("xpk.sh", [*XPK, "--no-build", *CMD], "--no-build needs --image-tag"),
    ("xpk.sh", [*XPK, "--", "rlvr-jax", "rl"], "no workdir"),
    ("xpk.sh", [*XPK, "--workload", "Bad_Name", *CMD], "--workload"),
    ("xpk.sh", XPK, "no command"),
    ("gpu.sh", ["--nodes", "2", "--coordinator", "h:1", *CMD], "needs --node-rank"),
    ("gpu.sh", ["--nodes", "2", "--node-rank", "0", *CMD], "needs --coordinator"),
    ("gpu.sh", ["--nodes", "2", "--node-rank", "2", "--coordinator", "h:1", *CMD], "--node-rank must be"),
    ("gpu.sh", ["--nodes", "2", "--node-rank", "0", "--coordinator", "h", *CMD], "HOST:PORT"),
    ("gpu.sh", ["--nodes", "0", *CMD], "--nodes must be"),
    ("gpu.sh", ["--node-rank", "0", *CMD], "need --nodes > 1"),
    ("gpu.sh", ["--slurm", "--node-rank", "0", *CMD], "--slurm assigns ranks"),
    ("gpu.sh", ["--port", "1", *CMD], "only apply with --slurm"),
    ("gpu.sh", [], "no command"),
])
def test_usage_errors_are_one_line_with_status_2(env, script, args, message):
  proc = launch(env, script, args)
  assert proc.returncode == 2, (proc.stdout, proc.stderr)
  assert proc.stdout == ""
  lines = proc.stderr.splitlines()
  assert len(lines) == 1, proc.stderr
  assert lines[0].startswith(f"{script}: error: ") and message in lines[0], lines[0]


def test_launch_time_must_be_well_formed(env):
  proc = launch({**env, "RLVR_JAX_LAUNCH_TIME": "yesterday"}, "xpk.sh", [*XPK, "--dry-run", *CMD])
  assert proc.returncode == 2 and "RLVR_JAX_LAUNCH_TIME" in proc.stderr


def test_quoting_round_trips_through_bash(env):
  words = ["plain", "", "a b", "it's", "'", "$HOME", 'a"b', "~/x", "a&b;c", "back\\slash", "é"]
  proc = subprocess.run(["bash", "-c", 'PROG=t; . launch/lib.sh; q "$@"', "_", *words], cwd=ROOT,
                        env=env, capture_output=True, text=True)
  assert shlex.split(proc.stdout) == words
  echo = subprocess.run(["bash", "-c", f"printf '%s\\n' {proc.stdout}"], env=env,
                        capture_output=True, text=True)
  assert echo.stdout.split("\n")[:-1] == words


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))
