"""The paper's study, scaled down to the synthetic domains on CPU (the full toy study).

rlvr-jax study --config=configs/study/toy.py --workdir=runs/study_toy [--config.dry_run=True]

Pre-RL conditions {base, cpt} × {no SFT, non-thinking SFT, thinking SFT on faithful traces,
thinking SFT on unfaithful traces}; RL settings: scarce data (N = 8, difficulty-filtered,
stratified), noisy labels (γ = 0.7, most frequent wrong answer), the two proxy rewards (majority
vote, self-certainty) and the large-N true-reward run that the gap G needs; 3 seeds each;
faithfulness and diversity of every pre-RL model. The domain is `chain` (chains of single-digit
additions and subtractions, rlvr_jax/data/domains/chain.py), built so that a 1M-parameter model
can learn its steps: with traces it reaches ~0.4-0.7 held-out accuracy with exact faithfulness
labels, which `arith` (0.1-0.3, almost no correct traces) does not. The base model is pre-trained
on the other synthetic domains (arith, units, graph) and CPT continues it on the chain corpus.
configs/study/quick.py is the README's subset. The full-scale protocol differs only in data, model and budgets
(configs/study/paper_math.py).
"""
import os

from ml_collections import ConfigDict
from ml_collections.config_dict import placeholder

from rlvr_jax.config_utils import load_config_file

TOY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "toy", "x.py")
DOMAIN = "chain"          # the trained and evaluated synthetic domain (see its module docstring)
LEVEL = 2                 # its difficulty level in SFT, RL and in-domain eval (3 steps)


def _toy(name):
  return load_config_file(TOY, f"{name}.py")


def _section(**fields) -> ConfigDict:
  """A nested ConfigDict from dotted keyword names: _section(data__n_train=8)."""
  c = ConfigDict()
  for key, value in fields.items():
    node = c
    *parents, leaf = key.split("__")
    for p in parents:
      if p not in node:
        node[p] = ConfigDict()
      node = node[p]
    node[leaf] = value
  return c


def _setting(kind: str, label: str, **rl) -> ConfigDict:
  s = ConfigDict()
  s.kind = kind                        # scarce | noisy | proxy | true
  s.label = label                      # how tables and plots name the setting
  s.rl = _section(**rl)                # overrides of the rl section, nested like it
  return s


def get_config() -> ConfigDict:
  c = ConfigDict()
  c.name = "toy"                       # the study's name (report title)
  c.dry_run = False                    # print the stages and time estimates; run nothing
  c.report_only = False                # run nothing; rewrite the report from the run directories
  c.base_model = ""                    # HF dir / hub id of the base model ('' = train the `base` stage)
  c.conditions = ("base+none,base+nothink,base+think,base+unfaithful,"
                  "cpt+none,cpt+nothink,cpt+think,cpt+unfaithful")  # pre-RL conditions PRE+SFT
  c.unfaithful_trace = "unfaithful_foreign_steps"  # data.trace of the `unfaithful` SFT
  c.settings = "scarce,noisy,majority,self_certainty,large"  # RL settings (sections setting.NAME)
  c.large_setting = "large"            # the large-N true-reward setting the gap G is taken to ('' = none)
  c.seeds = 3                          # seeds 0..seeds-1 of every RL setting
  c.diagnose_conditions = True         # faithfulness and diversity of every pre-RL model
  c.metric = ""                        # in-domain held-out metric ('' = eval/<domain>_eval/avg@k)

  c.saturation = ConfigDict()
  c.saturation.epsilon = 0.99          # t_sat: first t <= T - margin with r_t >= epsilon * r_max
  c.saturation.margin = 5              # steps at the end that cannot be t_sat (the paper: 50 of 496)
  c.saturation.window = placeholder(int)  # moving-average window of the reward (None = raw)
  c.saturation.r_max_over = "all"      # r_max over "all" steps (the paper) or "pre_margin"

  c.base = _toy("cpt")                 # the base model: pre-training on the other domains
  c.base.data.domains = "arith,units,graph"
  c.base.steps = 200
  c.cpt = _toy("cpt")                  # CPT: the base model continued on the domain's corpus
  c.cpt.data.domains = DOMAIN
  c.cpt.steps = 200
  c.sft = _toy("sft")                  # SFT (data.thinking / data.trace set per condition)
  c.sft.data.domains = DOMAIN
  c.sft.data.difficulty = LEVEL
  c.sft.seq_len = 144
  c.sft.steps = 120
  c.rl = _toy("rl")                    # RL, the settings' common part
  c.rl.data.domains = DOMAIN
  c.rl.data.difficulty = LEVEL
  c.rl.optim.lr = 1e-4
  c.rl.steps = 50
  c.rl.eval_every = 10
  c.rl.checkpoint_every = 25
  c.rl.rl.max_new_tokens = 80
  c.rl.eval.domains = f"{DOMAIN},arith"  # in-domain chain; out of domain: chain levels 4-5, arith
  c.rl.eval.splits = "eval,ood"
  c.rl.eval.difficulty = LEVEL
  c.rl.eval.n = 64
  c.rl.eval.k = 4
  c.rl.eval.ks = (1, 4)
  c.rl.eval.max_new_tokens = 80
  c.rl.eval.greedy = False
  c.rl.eval.write_samples = False
  c.diagnose = load_config_file(TOY, "../diagnose.py")  # pre-RL faithfulness and diversity
  c.diagnose.data.domains = DOMAIN
  c.diagnose.data.difficulty = LEVEL
  c.diagnose.n_prompts = 8
  c.diagnose.k = 8
  c.diagnose.max_new_tokens = 80
  c.diagnose.interventions = False

  c.setting = ConfigDict()             # RL settings: kind, label and rl overrides
  c.setting.scarce = _setting("scarce", "N=8", data__n_train=8, data__difficulty_filter=True,
                              data__n_pool=64)
  c.setting.noisy = _setting("noisy", "γ=0.7", data__n_train=32, data__n_pool=64,
                             data__label_noise=0.7, data__label_noise_samples=32)
  c.setting.majority = _setting("proxy", "majority vote", reward__weights__boxed_answer_match=0.0,
                                reward__weights__majority_vote=1.0, rl__vote_samples=16)
  c.setting.self_certainty = _setting("proxy", "self-certainty",
                                      reward__weights__boxed_answer_match=0.0,
                                      reward__weights__self_certainty=1.0)
  c.setting.large = _setting("true", "N=256, true reward", data__n_pool=256, data__n_train=0)
  return c
