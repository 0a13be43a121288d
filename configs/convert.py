"""`rlvr-jax convert --config=configs/convert.py --workdir=OUT --config.src=IN --config.to=orbax|hf`."""
import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.src = ""              # directory to convert from: an HF dir (to=orbax) or a run/params dir[:STEP] (to=hf)
  c.to = "orbax"          # target format: 'orbax' (HF -> params-only orbax) or 'hf' (orbax -> HF)
  c.dtype = ""            # storage dtype of the written weights ('' keeps the source dtype)
  c.max_shard_gb = 5.0    # HF export: largest safetensors shard, in GB
  c.overwrite = False     # HF export: replace an existing non-empty output directory
  c.mesh = (-1, 1, 1)     # (data, fsdp, tensor) mesh the weights stream onto while converting
  return c
