"""`rlvr-jax study`: the paper's grid of pre-RL conditions x RL settings x seeds, run as stages,
and its report (report.py) with the verdicts on the paper's three findings (verdicts.py)."""
