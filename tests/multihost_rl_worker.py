"""One process of the multi-host loop tests (driven by test_multihost_rl.py): the full
`rlvr-jax rl` loop (sample, reward, update, checkpoint every step, resume) of a tiny model, or
a tiny `rlvr-jax sft` run (`init_dir` = "sft"), on 4 CPU devices in all, split over `nproc`
processes through jax.distributed."""
import sys


def main(process_id: int, nproc: int, port: int, init_dir: str, workdir: str, steps: int,
         pack: bool = False):
  import jax
  jax.config.update("jax_num_cpu_devices", 4 // nproc)
  from rlvr_jax import sharding
  if nproc > 1:
    sharding.maybe_initialize_distributed(f"127.0.0.1:{port}", nproc, process_id)
  assert jax.process_count() == nproc and jax.device_count() == 4
  if init_dir == "sft":
    from rlvr_jax import cli
    rc = cli.main(["rlvr-jax", "sft", "--config=configs/toy/sft.py", f"--workdir={workdir}",
                   f"--config.steps={steps}", "--config.batch_size=8", "--config.seq_len=176",
                   "--config.eval_every=0", "--config.checkpoint_every=0",
                   "--config.log_every=1", "--config.progress_bar=False",
                   "--config.data.n_train=64", "--config.data.n_eval=8"])
    if nproc > 1:
      jax.distributed.shutdown()
    return rc
  from test_rl_loop import tiny_config
  from rlvr_jax.rl import loop
  c = tiny_config(init_dir)
  c.steps, c.checkpoint_every, c.eval_every, c.eval_at_end = steps, 1, 0, False
  c.log_every, c.resume_overrides, c.rl.minibatches = 1, True, 1
  # A random model never answers right: Bernoulli(0.5) rewards give every group reward
  # variance, so the update has real policy gradients to compare.
  c.reward.noise, c.reward.noise_q = "bernoulli", 0.5
  c.rl.pack_update = pack
  rc = loop.run(c, workdir)
  if nproc > 1:
    jax.distributed.shutdown()
  return rc


if __name__ == "__main__":
  sys.exit(main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5],
                int(sys.argv[6]), len(sys.argv) > 7 and sys.argv[7] == "pack"))
