"""Clock-level probes (`--probes`): which clock level of a clocked model holds old knowledge.

Nested Learning's claim (Behrouz et al., "Nested Learning", NeurIPS 2025, §7.1 CMS; nl-math.md section 4)
is that knowledge the fast levels overwrite survives in the slow ones, which are updated every C_l steps
with the sum of their window's gradients. `ClockProbes` makes that measurable, for every model trained
by a multi-clock optimizer (cms, clocked-adam, hope and their compositions: any optimizer with
`level_updates` and a `period` per parameter group, i.e. `ClockedOptimizer`).

Per level l and training experience k (theta_l^start: the level's parameters when k starts):
- `updates`: level updates applied during k (k_l after k minus k_l before);
- `change_norm`: ||theta_l^end - theta_l^start||_2 over all the level's parameters;
- `accuracy`: accuracy on test experiences 0..k with every parameter as trained;
- `reverted_accuracy[l]`: the same with level l's parameters set back to theta_l^start and every other
  level kept (then restored). If reverting level l recovers accuracy on an earlier experience j < k,
  level l is where the forgetting of j happened; if it costs accuracy on k, level l learned k.

Accuracies use the fixed subsamples of `nlbench.core.subsample.ProbeSet`. The probe runs after
every other end-of-experience hook (after `flush_on_experience_end`), and leaves the parameters
bit-for-bit as they were. On an optimizer without clock levels it records nothing (and a run asks for
probes only on strategies that have clock levels: `nlbench.core.registry.probe_targets`). Its records
are saved in the run's checkpoints, so `--probes` costs no resumability.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from avalanche.core import SupervisedPlugin

from nlbench.core.subsample import EVAL_SUBSAMPLE, ProbeSet


def clock_levels(optimizer: Any) -> list[dict[str, Any]] | None:
    """The parameter groups of a multi-clock optimizer (one per level), or None for any other optimizer."""
    if optimizer is None or not hasattr(optimizer, "level_updates"):
        return None
    groups = optimizer.param_groups
    return groups if groups and all("period" in g for g in groups) else None


class ClockProbes(SupervisedPlugin):
    """Per level and experience: update count, weight change norm, accuracy with the level reverted."""

    def __init__(self, test_stream: Any, size: int = EVAL_SUBSAMPLE):
        super().__init__()
        self.probe = ProbeSet(test_stream, size)
        self.records: list[dict[str, Any]] = []
        self.levels: list[dict[str, Any]] = []
        self._start: list[list[torch.Tensor]] = []
        self._updates: list[int] = []

    def before_training_exp(self, strategy: Any, **kwargs: Any) -> None:
        groups = clock_levels(strategy.optimizer)
        if groups is None:
            return
        self._start = [[p.detach().clone() for p in g["params"]] for g in groups]
        self._updates = list(strategy.optimizer.level_updates)

    @torch.no_grad()
    def after_training_exp(self, strategy: Any, **kwargs: Any) -> None:
        groups = clock_levels(strategy.optimizer)
        if groups is None or not self._start:
            return
        k = strategy.experience.current_experience
        seen = range(min(k + 1, len(self.probe.test_stream)))
        updates_now = strategy.optimizer.level_updates
        self.levels = [{"level": i, "period": g["period"], "n_params": sum(p.numel() for p in g["params"])}
                       for i, g in enumerate(groups)]
        record: dict[str, Any] = {"experience": k, "updates": [], "change_norm": [], "reverted_accuracy": [],
                                  "accuracy": [self.probe.accuracy(strategy, j) for j in seen]}
        for i, group in enumerate(groups):
            before = self._updates[i] if i < len(self._updates) else 0
            record["updates"].append(updates_now[i] - before)
            start = self._start[i] if i < len(self._start) else None
            if start is None:  # a level added during this experience (a new task head): nothing to revert to
                record["change_norm"].append(None)
                record["reverted_accuracy"].append(None)
                continue
            params = group["params"]
            record["change_norm"].append(math.sqrt(sum(float(((p - s).float() ** 2).sum()) for p, s in zip(params, start))))
            trained = [p.detach().clone() for p in params]
            for p, s in zip(params, start):
                p.copy_(s)
            try:
                record["reverted_accuracy"].append([self.probe.accuracy(strategy, j) for j in seen])
            finally:
                for p, t in zip(params, trained):
                    p.copy_(t)
        self.records.append(record)

    # Checkpoints (nlbench.core.checkpoint): the records so far. The start-of-experience copies are
    # not kept: a run resumes at an experience's start, where `before_training_exp` takes them anew.
    def state_dict(self) -> dict[str, Any]:
        return {"records": self.records, "levels": self.levels}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.records, self.levels = list(state["records"]), list(state["levels"])

    def result_fields(self) -> dict[str, Any]:
        if not self.records:
            return {}
        return {"probes": {"subsample": self.probe.size, "levels": self.levels, "experiences": self.records}}
