"""What the data pipeline dropped or cut, told once per run and logged with the metrics.

The grain pipelines count every example they drop or truncate (`accounting()` of their
iterators: dropped_too_long, dropped_prompt_too_long, dropped_no_trace, truncated, ...). A run
that silently trains on a fraction of its data is a wrong result, so the loops add these counts
to every metrics record (`data/<count>`) and warn once, naming the count and the fix.
"""
from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("rlvr_jax.data")

COUNTED = ("dropped_", "truncated", "docs_empty")


class DropMonitor:
  """Reads an iterator's drop counts; `metrics()` -> {"data/<count>": n} (empty when the
  iterator keeps no accounting)."""

  def __init__(self, data_iter: Any, what: str):
    self._accounting = getattr(data_iter, "accounting", None)
    self._what = what
    self._warned = False

  def metrics(self) -> dict[str, float]:
    if not callable(self._accounting):
      return {}
    counts = self._accounting()
    drops = {k: int(v) for k, v in counts.items() if k.startswith(COUNTED)}
    if not self._warned and any(drops.values()):
      from rlvr_jax.data.pipelines import DROP_HINTS
      seen = {k: v for k, v in drops.items() if v}
      total = counts.get("examples_in", counts.get("prompts_in", counts.get("docs_in")))
      hints = "; ".join(f"{k}: {DROP_HINTS[k]}" for k in seen if k in DROP_HINTS)
      log.warning("%s data: %s so far%s (logged as data/* in metrics.jsonl)%s", self._what,
                  ", ".join(f"{k}={v}" for k, v in seen.items()),
                  f" of {total} read" if total else "", f"; {hints}" if hints else "")
      self._warned = True
    return {f"data/{k}": float(v) for k, v in drops.items()}
