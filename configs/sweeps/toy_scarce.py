"""A tiny toy sweep on CPU (about a minute): RL on N ∈ {8, 32} training problems × seeds {0, 1}.

rlvr-jax sweep --config=configs/sweeps/toy_scarce.py --workdir=runs/sweep_toy
rlvr-jax sweep --config=configs/sweeps/toy_scarce.py --workdir=runs/sweep_toy --config.collect=True
rlvr-jax sweep --config=configs/sweeps/toy_scarce.py --workdir=runs/sweep_toy --config.emit=local

The points start from a random toy-1m model, so their reward stays near 0: it exercises the
machinery. For curves that mean something, start them from a toy SFT run
(`rlvr-jax pipeline --config=configs/toy/pipeline.py --workdir=runs/toy --config.stages=cpt,sft`
then --config.overrides.init.from_checkpoint=runs/toy/sft) and raise overrides.steps.

Format: `overrides` and `grid` mirror the base config's sections (c.grid.data.n_train sweeps
the base field data.n_train); a grid leaf is a tuple of values. Points are the product of the
grid fields (alphabetical, the seed axis last), except `zip` groups, which vary together.
"""
import os

from ml_collections import ConfigDict
from ml_collections.config_dict import placeholder

HERE = os.path.dirname(os.path.abspath(__file__))


def get_config() -> ConfigDict:
  c = ConfigDict()
  c.command = "rl"                     # base command of every point: rl | sft | cpt | pipeline
  c.base_config = "../toy/rl.py"       # base config file, relative to config_dir
  c.config_dir = HERE                  # directory base_config is relative to ('' = the current one)

  c.overrides = ConfigDict()           # fixed overrides of every point, nested like the base config
  c.overrides.steps = 4                # RL steps per point
  c.overrides.eval_every = 2           # steps between held-out evaluations
  c.overrides.checkpoint_every = 0     # checkpoints only at the end (and on preemption)
  c.overrides.batch_size = 8           # prompts per step
  c.overrides.progress_bar = False     # no tqdm bar in the sweep's log
  c.overrides.rl = ConfigDict()
  c.overrides.rl.group_size = 2        # samples per prompt
  c.overrides.rl.max_new_tokens = 12   # response budget
  c.overrides.rl.dynamic_sampling = "none"  # a random model's groups all have zero reward variance
  c.overrides.data = ConfigDict()
  c.overrides.data.n_pool = 64         # synthetic problems in the pool the N-subsets are drawn from
  c.overrides.eval = ConfigDict()
  c.overrides.eval.n = 8               # held-out problems
  c.overrides.eval.k = 2               # samples per held-out problem (avg@2)
  c.overrides.eval.ks = (1, 2)         # pass@k values
  c.overrides.eval.max_new_tokens = 12  # eval response budget
  c.overrides.eval.greedy = False      # no extra greedy pass
  c.overrides.eval.write_samples = False  # no per-sample eval rows

  c.grid = ConfigDict()                # swept fields: base-config field -> tuple of values
  c.grid.data = ConfigDict()
  c.grid.data.n_train = (8, 32)        # N: training-set size (random subset of the pool)
  c.grid.seed = (0, 1)                 # init / data-order / sampling seed
  c.zip = ()                           # grid fields that vary together: ((F1, F2), ...)
  c.labels = ("data.n_train=n",)       # FIELD=LABEL names in point names (else the last name)

  c.emit = ""                          # '' = run; tpu_vm|xpk|gpu|local = print launch commands
  c.collect = False                    # True: only gather sweep.csv, sweep.md, plots/
  c.metric = ""                        # plotted held-out metric ('' = the first eval/*/avg@k)

  c.launch = ConfigDict()
  c.launch.workdir_root = ""           # points go to ROOT/points/NAME ('' = --workdir; gs:// ok)
  c.launch.name_prefix = "sweep"       # tpu_vm: VM names are PREFIX-<point>
  c.launch.zone = ""                   # tpu_vm / xpk: --zone
  c.launch.accelerator = ""            # tpu_vm: --accelerator; xpk: --tpu-type (e.g. v5p-8)
  c.launch.cluster = ""                # xpk: --cluster
  c.launch.extra_args = ""             # more launcher arguments, put before `--`

  c.saturation = ConfigDict()
  c.saturation.epsilon = 0.99          # t_sat: first t <= T - margin with r_t >= epsilon * r_max
  c.saturation.margin = 1              # steps at the end that cannot be t_sat (the paper: 50)
  c.saturation.window = placeholder(int)  # moving-average window of the reward (None = raw)
  c.saturation.r_max_over = "all"      # r_max over "all" steps (the paper) or "pre_margin"
  c.saturation.reward_key = "reward/mean"  # the training reward's metrics.jsonl key

  c.axes = ConfigDict()
  c.axes.n = "data.n_train"            # grid field plotted as N (plots/delta_sat_vs_n.png)
  c.axes.gamma = "data.label_noise"    # grid field plotted as γ (plots/gamma_tolerance.png)
  c.axes.model_size = "model.size"     # grid field plotted as model size (t_sat_vs_model_size.png)
  c.axes.seed = "seed"                 # grid field averaged over (mean, min-max bars)
  return c
