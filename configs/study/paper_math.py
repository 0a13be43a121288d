"""The paper's study at full scale on MATH: the toy study's design with real data, models and
budgets (it differs from configs/study/toy.py only in those).

rlvr-jax study --config=configs/study/paper_math.py --workdir=gs://BUCKET/studies/math \
  [--config.base_model=models/Qwen2.5-Math-1.5B --config.conditions=base+none ...]

Model: Llama-3.2-3B (base), the model of the paper's CPT / SFT interventions (section 4);
Qwen2.5-Math-1.5B is `--config.base_model=... --config.conditions=base+none` with
`--config.rl.data.template=chatml --config.rl.eval.template=chatml` (the RL configs' own
template). Data: the paper's sets, read from DATA/<name>/ as downloaded from the Hugging Face
hub (docs/DATA_SETS.md): Skywork-OR1 math for RL; MATH-500, AIME24, AIME25, AMC, Minerva,
OlympiadBench in-domain and GPQA-Diamond out-of-domain for evaluation. CPT needs a domain
corpus and SFT needs traces: give them as --config.cpt.data.files=... and
--config.sft.data.files=... (JSONL problem / answer / thinking / solution). Faithfulness at
full scale needs a judge (--config.diagnose.judge.backend=http ...); without one, finding 2 is
reported as not measured. Unfaithful-trace SFT needs a step verifier, which only the synthetic
domains have, so the `unfaithful` conditions are left out here.

Each stage is a long accelerator job: run the stages through the launchers (launch/tpu_vm.sh,
launch/xpk.sh, launch/gpu.sh) one `rlvr-jax study` process at a time, or use
`--config.dry_run=True` to see the plan first.
"""
from rlvr_jax.config_utils import load_config_file
from rlvr_jax.data import paper_sets

DATA = "data/paper_sets"                  # DATA/<set name>/ as downloaded
LLAMA = "models/Llama-3.2-3B"            # HF directory of meta-llama/Llama-3.2-3B (base)


def get_config():
  c = load_config_file(__file__, "toy.py")
  c.name = "paper_math"                # the study's name (report title)
  c.base_model = LLAMA                 # HF dir / hub id of the base model (no `base` stage)
  c.conditions = "base+none,base+nothink,base+think,cpt+none,cpt+nothink,cpt+think"  # PRE+SFT
  c.seeds = 3                          # seeds 0..seeds-1 of every RL setting
  c.saturation.margin = 50             # the paper's margin (of 496 steps)

  c.cpt = load_config_file(__file__, "../llama3.2_3b/cpt.py")   # CPT on the domain corpus
  c.sft = load_config_file(__file__, "../llama3.2_3b/sft_thinking.py")  # SFT (thinking per condition)
  c.rl = load_config_file(__file__, "../qwen2.5_math_1.5b/rl.py")  # the paper's GRPO recipe
  c.rl.data.template = c.rl.eval.template = "llama3"
  c.rl.data.files = f"paper:skywork_or1_math:{DATA}/skywork_or1_math"
  c.rl.eval.files = paper_sets.eval_files_spec("math", DATA)
  c.diagnose.data.domains = ""
  c.diagnose.data.files = f"paper:math500:{DATA}/math500"
  c.diagnose.template = "llama3"
  c.diagnose.n_prompts = 8             # the paper: 8 prompts x 16 rollouts
  c.diagnose.k = 16
  c.diagnose.max_new_tokens = 2048
  c.diagnose.programmatic = False      # exact labels exist only for the synthetic domains
  c.diagnose.interventions = True

  # data.n_pool sizes the synthetic pools only; the real pool is data.files (data.pool_limit)
  c.setting.noisy.rl.data.n_train = 0          # γ = 0.7 on the whole training set
  c.setting.noisy.rl.data.label_noise_samples = 96   # the paper's 96 samples per prompt
  c.setting.large.label = "N=pool, true reward"
  return c
