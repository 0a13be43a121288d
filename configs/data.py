"""`rlvr-jax data --config=configs/data.py --workdir=DIR`: generate, materialise and inspect datasets.
Fields and their one-line comments: rlvr_jax/data/materialize.py `get_config()`."""
from rlvr_jax.data.materialize import get_config  # noqa: F401
