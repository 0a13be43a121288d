"""Test-wide JAX set-up: 8 simulated CPU devices, f32, a persistent compilation cache."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tests are compile-bound on tiny shapes: the lowest XLA backend optimisation level compiles 2-3x
# faster (numerics stay f32; speed is measured by the benchmarks, never by tests).
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_compilation_cache_dir",
                  os.environ.get("RLVR_JAX_TEST_CACHE", os.path.expanduser("~/.cache/rlvr_jax/jit")))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
