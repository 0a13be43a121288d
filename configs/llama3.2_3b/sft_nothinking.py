"""Llama-3.2-3B non-thinking SFT: the same recipe as sft_thinking.py, trained on the final
solution only (no `<think>` trace) (PROTOCOL.md §Interventions)."""
import importlib.util
import os

from ml_collections import ConfigDict

_spec = importlib.util.spec_from_file_location(
    "_llama3b_sft_thinking",
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "sft_thinking.py"))
_thinking = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_thinking)


def get_config() -> ConfigDict:
  c = _thinking.get_config()
  c.data.thinking = False              # train on the final solution only
  return c
