"""Qwen2.5-Math-1.5B, scarce data: N = 8 difficulty-filtered problems (stratified by solve
count), each batch of 64 filled by repeating them uniformly. Everything else as rl.py.

rlvr-jax rl --config=configs/qwen2.5_math_1.5b/rl_n8.py --workdir=DIR --config.init.from_hf=QWEN_DIR --config.data.files=SKYWORK
"""
from rlvr_jax.config_utils import load_config_file



def get_config():
  c = load_config_file(__file__, "rl.py")
  c.data.n_train = 8                   # N (also 16, 32, 64, 128, 512, 1024, 2048 via --config.data.n_train)
  return c
