"""Toy SFT: loss on the assistant's reasoning trace and answer only, synthetic domains (CPU).

rlvr-jax sft --config=configs/toy/sft.py --workdir=/tmp/toy_sft [--config.init.from_checkpoint=/tmp/toy_cpt]
"""
from ml_collections import ConfigDict

from rlvr_jax.config_utils import load_config_file


def get_config() -> ConfigDict:
  c = load_config_file(__file__, "cpt.py")
  c.stage = "sft"                      # cpt | sft (recorded in config.json; the loss is the same)
  c.optim.lr = 5e-3                    # peak learning rate (2e-3: answer-token accuracy 0.35 vs 0.53 at 150 steps)
  c.optim.warmup = 0.1                 # warmup: fraction of steps if < 1, else steps
  c.steps = 200                        # optimizer updates
  c.batch_size = 16                    # global batch (examples); divides over data×fsdp
  c.seq_len = 176                      # padded example length (longer examples are dropped; 128 dropped ~70% of levels 2-3)
  c.eval_every = 50                    # steps between held-out evaluations (0 = never)
  c.data.n_train = 4000                # training problems with reasoning traces
  c.data.n_eval = 128                  # held-out problems
  c.data.difficulty = 0                # synthetic level 1-5 of train and held-out problems (0 = 1-3)
  c.data.thinking = True               # train on the trace + answer (False: answer only)
  c.data.trace = "faithful"            # faithful | unfaithful_corrupted_step | unfaithful_unsupported_answer | unfaithful_foreign_steps | none
  c.data.template = "toy"              # chat template: toy | plain | llama3 | chatml
  c.data.system_prompt = "default"     # system prompt ('default' = the paper's, '' = none); RL/eval use the same
  c.data.truncation = "drop"           # examples longer than seq_len: drop | truncate (counted)
  c.data.pack = False                  # first-fit pack several examples per row
  return c
