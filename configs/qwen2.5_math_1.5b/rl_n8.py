"""Qwen2.5-Math-1.5B, scarce data: N = 8 difficulty-filtered problems (stratified by solve
count), each batch of 64 filled by repeating them uniformly. Everything else as rl.py.

rlvr-jax rl --config=configs/qwen2.5_math_1.5b/rl_n8.py --workdir=DIR --config.init.from_hf=QWEN_DIR --config.data.files=SKYWORK
"""
import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    "_rl", os.path.join(os.path.dirname(os.path.abspath(__file__)), "rl.py"))
base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(base)


def get_config():
  c = base.get_config()
  c.data.n_train = 8                   # N (also 16, 32, 64, 128, 512, 1024, 2048 via --config.data.n_train)
  return c
