"""Toy SFT: loss on the assistant's reasoning trace and answer only, synthetic domains (CPU).

rlvr-jax sft --config=configs/toy/sft.py --workdir=/tmp/toy_sft [--config.init.from_checkpoint=/tmp/toy_cpt]
"""
import importlib.util
import os

from ml_collections import ConfigDict

_spec = importlib.util.spec_from_file_location(
    "_toy_cpt_config", os.path.join(os.path.dirname(os.path.abspath(__file__)), "cpt.py"))
cpt = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cpt)


def get_config() -> ConfigDict:
  c = cpt.get_config()
  c.stage = "sft"                      # cpt | sft (recorded in config.json; the loss is the same)
  c.optim.lr = 2e-3                    # peak learning rate
  c.optim.warmup = 0.1                 # warmup: fraction of steps if < 1, else steps
  c.steps = 200                        # optimizer updates
  c.batch_size = 16                    # global batch (examples); divides over data×fsdp
  c.seq_len = 128                      # padded example length (longer examples are dropped)
  c.eval_every = 50                    # steps between held-out evaluations (0 = never)
  c.data.n_train = 4000                # training problems with reasoning traces
  c.data.n_eval = 128                  # held-out problems
  c.data.thinking = True               # train on the trace + answer (False: answer only)
  return c
