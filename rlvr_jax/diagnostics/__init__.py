"""The paper's diagnostics of *why* a run generalizes (docs/PROTOCOL.md):

  saturation     reward-saturation dynamics of a run: t_sat, Δ_sat, Δ_post, the large-small gap G
  faithfulness   whether the reasoning supports the answer: programmatic labels on the synthetic
                 domains, LLM judges, and judge-free interventions
  diversity      N_eff cluster diversity, faithful diversity, distinct-n, unique answers, pass@k
  stats          bootstrap confidence intervals, Cohen's kappa, rank correlation
"""
