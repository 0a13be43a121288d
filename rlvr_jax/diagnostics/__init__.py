"""The paper's diagnostics of *why* a run generalizes (docs/PROTOCOL.md):

  saturation     reward-saturation dynamics of a run: t_sat, Δ_sat, Δ_post, the large-small gap G
  faithfulness   whether the reasoning supports the answer: programmatic labels on the synthetic
                 domains and their summary (aligned share among correct answers, with CIs)
  judges         LLM judges: rubric prompts, verdict parsers, an OpenAI-compatible HTTP judge
                 and a local-model judge
  interventions  judge-free probes: early answering and mistake injection
  diversity      N_eff cluster diversity, faithful diversity, distinct-n, unique answers, pass@k
  stats          bootstrap confidence intervals, Cohen's kappa, rank correlation
  plots          reward / eval curves with t_sat marked, seeds shaded
  diagnose       the `rlvr-jax diagnose` command
"""
