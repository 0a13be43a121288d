"""`rlvr-jax convert` both ways, driven through the CLI entry point."""
import os

import jax
import numpy as np
import pytest
import torch
import transformers

import rlvr_jax as rj
from rlvr_jax import cli


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  torch.manual_seed(0)
  config = transformers.LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64,
                                    num_hidden_layers=2, num_attention_heads=4,
                                    num_key_value_heads=2, tie_word_embeddings=False)
  model = transformers.LlamaForCausalLM(config).eval()
  path = tmp_path_factory.mktemp("hf")
  model.save_pretrained(path)
  return path, model


def test_convert_hf_to_orbax_and_back(hf_dir, tmp_path):
  src, torch_model = hf_dir
  orbax_dir, hf_out = tmp_path / "orbax", tmp_path / "hf_out"
  assert cli.main(["rlvr-jax", "convert", "--config=configs/convert.py", f"--workdir={orbax_dir}",
                   f"--config.src={src}", "--config.to=orbax"]) == 0
  params = rj.load_params(str(orbax_dir))
  cfg_hf, params_hf = rj.load_hf(str(src))
  jax.tree_util.tree_map(np.testing.assert_array_equal, params, params_hf)

  assert cli.main(["rlvr-jax", "convert", "--config=configs/convert.py", f"--workdir={hf_out}",
                   f"--config.src={orbax_dir}", "--config.to=hf"]) == 0
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(hf_out).eval()
  tokens = torch.randint(0, 128, (2, 9))
  with torch.no_grad():
    np.testing.assert_allclose(reloaded(tokens).logits.numpy(), torch_model(tokens).logits.numpy(),
                               atol=1e-5)


def test_convert_refuses_to_overwrite(hf_dir, tmp_path, capsys, monkeypatch):
  src, _ = hf_dir
  out = tmp_path / "orbax"
  args = ["rlvr-jax", "convert", "--config=configs/convert.py", f"--workdir={out}",
          f"--config.src={src}"]
  assert cli.main(args) == 0
  before = sorted(os.listdir(out))
  assert cli.main(args) == 2
  err = capsys.readouterr().err
  assert "rlvr-jax convert: error:" in err and "never overwritten" in err
  assert "Traceback" not in err
  assert sorted(os.listdir(out)) == before
  monkeypatch.setenv("RLVR_JAX_TRACEBACK", "1")
  with pytest.raises(FileExistsError, match="never overwritten"):
    cli.main(args)
