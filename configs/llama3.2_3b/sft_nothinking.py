"""Llama-3.2-3B non-thinking SFT: the same recipe as sft_thinking.py, trained on the final
solution only (no `<think>` trace) (docs/PROTOCOL.md §Interventions)."""
from ml_collections import ConfigDict

from rlvr_jax.config_utils import load_config_file


def get_config() -> ConfigDict:
  c = load_config_file(__file__, "sft_thinking.py")
  c.data.thinking = False              # train on the final solution only
  return c
