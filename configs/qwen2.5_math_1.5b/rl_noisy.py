"""Qwen2.5-Math-1.5B, noisy labels: for a γ fraction of the prompts the label is replaced by the
model's most frequent wrong answer among 96 samples at T = 1 (computed once, saved as
WORKDIR/data/train.jsonl). γ = 0.5 here; the paper's grid: --config.data.label_noise in
{0.1, 0.3, 0.5, 0.7, 0.9, 1.0}. Validation uses the true labels.

rlvr-jax rl --config=configs/qwen2.5_math_1.5b/rl_noisy.py --workdir=DIR --config.init.from_hf=QWEN_DIR --config.data.files=SKYWORK
"""
from rlvr_jax.config_utils import load_config_file



def get_config():
  c = load_config_file(__file__, "rl.py")
  c.data.label_noise = 0.5             # γ
  c.data.label_noise_samples = 96      # samples per prompt for the most frequent wrong answer
  return c
