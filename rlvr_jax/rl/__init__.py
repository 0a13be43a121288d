"""RL algorithms: rewards, advantage estimators and policy losses (all pure and jittable)."""
