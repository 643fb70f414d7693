"""The multi-clock optimizer of the Continuum Memory System (CMS): one base optimizer per clock level.

Source: A. Behrouz, M. Razaviyayn, P. Zhong, V. Mirrokni, "Nested Learning: The Illusion of Deep
Learning Architectures", arXiv:2512.24695 (NeurIPS 2025), §7.1 Eq 70-71 (CMS: a chain of MLP blocks,
block l updated every C_l steps with the SUM of the errors of its chunk). The clocked Transformer wiring
and the geometric periods {1, 8, 64, 512} come from the S000 article (P. Chatterjee, "Nested Learning
in Practice"). nlbench's definition is docs nl-math.md section 4 (and 5.1 for the Transformer).

Clock (nl-math.md §0): the global step s = 1, 2, 3, ... counts optimizer calls and is never reset at
experience boundaries. A level with period C is due when s mod C == 0, i.e. at s = C, 2C, 3C, ...
Every step, for every level l (g_l = gradient of the step's mean loss w.r.t. the level's parameters):

    A_l += g_l ; n_l += 1
    if s mod C_l == 0:
        ghat = A_l              (reduction="sum", the default, = Eq 71)
             | A_l / n_l        (reduction="mean")
        Opt_l.step(theta_l, ghat) ; A_l <- 0 ; n_l <- 0

Opt_l is a separate base optimizer per level (Adam by default, or whatever factory the composition
brings, e.g. DeepL2GD in `cms+deep-l2gd`), so its internal step counter counts LEVEL updates and a
parameter that is not due gets no update of any kind (no weight decay, no state change). The
accumulators A_l live in the optimizer state, outside `.grad` (Avalanche zeroes `.grad` every
iteration); the clock, the accumulators and every Opt_l state survive experience boundaries
(`flush_on_experience_end=True` applies the partial windows at the end of each experience instead).

Public objects:
    ClockedOptimizer(levels, base_factory, model=None, reduction="sum")   a torch.optim.Optimizer
    ClockFlush (plugin), and the strategy glue clock_wrapper(hp) / clock_plugins(hp) that `cms`,
    `clocked-adam` and `hope` return in their Parts. The levels come from
    `nlbench.strategies.cms.wiring.wire_clocks`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Mapping
from operator import itemgetter
from typing import Any

import torch
from avalanche.core import SupervisedPlugin
from torch import Tensor, nn

from .hparams import REDUCTIONS
from .merged_step import MergedStep
from .wiring import ClockLevel, wire_clocks

__all__ = ["ClockedOptimizer", "ClockFlush", "clock_plugins", "clock_wrapper"]

_PERIOD_LR = itemgetter("period", "lr")


class ClockedOptimizer(torch.optim.Optimizer):
    """One base optimizer per clock level, stepped only when its level is due (nl-math.md 4.2).

    Args:
        levels: ClockLevel objects (or (period, params) pairs); one param group each, with keys
            "period" and "level". Parameters must not repeat across levels.
        base_factory: `(model, params) -> torch.optim.Optimizer` over exactly `params` (or a subset),
            called once per level, and again for groups added later (`add_param_group`, e.g. task heads
            added by the runner's PersistentOptimizer; such a group gets period 1 unless it says).
        model: passed to the factory (DeepL2GD needs it to find its layers).
        reduction: "sum" (Eq 71, default) or "mean" of the window's gradients.

    State (all in `state_dict`): `state[p]["acc"]` the accumulated gradient of a parameter whose
    window is open; `state["clock"]` = {"step": s, "count": [n_l], "updates": [k_l]}; and the base
    optimizers' own state dicts under the key "bases".

    A level that is due with nothing accumulated (every period-1 level, always) steps its base
    optimizer on `.grad` as it is: with every period at 1 this is bitwise plain training. After a due
    step `.grad` of the level's parameters holds the gradient that was applied (the window's sum or
    mean); Avalanche clears it at the next iteration.

    Fast path: when every level is due with nothing accumulated and the bases are all torch.optim SGD,
    Adam or AdamW (same class, no step hooks), one merged step runs over all the levels' param groups
    (see `merged_step.MergedStep`): the same per-group update on the same state tensors, so bitwise the
    result of stepping the bases one by one, without one optimizer call per level. Everything that path
    derives from the levels is cached and re-validated each step by cheap comparisons.
    """

    def __init__(
        self,
        levels: Iterable[ClockLevel | tuple[int, Iterable[Tensor]]],
        base_factory: Callable[[Any, Any], torch.optim.Optimizer],
        model: nn.Module | None = None,
        reduction: str = "sum",
    ) -> None:
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        groups = []
        for i, level in enumerate(levels):
            if isinstance(level, ClockLevel):
                groups.append({"params": list(level.params), "period": level.period, "level": level.level,
                               "names": list(level.names)})
            else:
                period, params = level
                groups.append({"params": list(params), "period": period, "level": i})
        if not groups:
            raise ValueError("ClockedOptimizer needs at least one level")
        self._base_factory = base_factory
        self._model = model
        self.reduction = reduction
        self.bases: list[torch.optim.Optimizer] = []
        self._synced_lr: list[Any] = []
        self._merged: MergedStep | bool | None = None
        self._level_key: tuple | None = None  # the (period, lr) pairs _every was computed for
        self._every: int | None = None  # lcm of the periods: every level is due at its multiples
        super().__init__(groups, {"period": 1, "level": None})

    # ---------------------------------------------------------------- construction

    @property
    def _clock(self) -> dict[str, Any]:
        clock = self.state.get("clock")
        if clock is None:
            clock = self.state["clock"] = {"step": 0, "count": [], "updates": []}
        return clock

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        period = param_group.get("period", 1)
        if isinstance(period, bool) or not isinstance(period, int) or period < 1:
            raise ValueError(f"a clock period must be a positive int, got {period!r}")
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        if group["level"] is None:
            group["level"] = len(self.param_groups) - 1
        base = self._base_factory(self._model, group["params"])
        mine = {id(p) for p in group["params"]}
        if any(id(p) not in mine for g in base.param_groups for p in g["params"]):
            raise ValueError("the base optimizer factory must optimize only the parameters it is given (a level's)")
        self.bases.append(base)
        self._merged = self._level_key = None
        # Mirror the base's learning rate so LR schedulers and plugins that read or write
        # param_groups[i]["lr"] (Avalanche's LRSchedulerPlugin, MIR) act on the level's optimizer.
        group["lr"] = base.param_groups[0].get("lr") if base.param_groups else None
        self._synced_lr.append(group["lr"])
        clock = self._clock
        clock["count"].append(0)
        clock["updates"].append(0)

    # ---------------------------------------------------------------- read-outs

    @property
    def global_step(self) -> int:
        """s: optimizer calls so far (never reset)."""
        return self._clock["step"]

    @property
    def periods(self) -> list[int]:
        return [g["period"] for g in self.param_groups]

    @property
    def level_updates(self) -> list[int]:
        """k_l: how many times each level's base optimizer has stepped."""
        return list(self._clock["updates"])

    @property
    def pending(self) -> list[int]:
        """n_l: steps accumulated in each level's open window."""
        return list(self._clock["count"])

    def diagnostics(self) -> dict[str, Any]:
        """The levels' base optimizers' own measurements (`diagnostics()`, e.g. DeepL2GD's guard), by
        level; {} when no base has any."""
        out = {}
        for i, base in enumerate(self.bases):
            function = getattr(base, "diagnostics", None)
            found = function() if callable(function) else {}
            if found:
                out[f"level_{self.param_groups[i]['level']}"] = found
        return out

    def clock_summary(self) -> dict[str, Any]:
        return {"global_step": self.global_step, "periods": self.periods, "updates": self.level_updates,
                "pending": self.pending, "reduction": self.reduction}

    # ---------------------------------------------------------------- stepping

    def _apply(self, index: int, count: int) -> None:
        """Put the window's gradient in `.grad` and step level `index`'s base optimizer."""
        mean = self.reduction == "mean" and count > 1
        for p in self.param_groups[index]["params"]:
            acc = self.state[p].pop("acc", None) if p in self.state else None
            if acc is None:  # no gradient in the whole window: the base optimizer skips p
                p.grad = None
                continue
            if mean:
                acc.div_(count)
            p.grad = acc
        self.bases[index].step()
        clock = self._clock
        clock["count"][index] = 0
        clock["updates"][index] += 1

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        clock = self._clock
        s = clock["step"] = clock["step"] + 1
        # What @torch.no_grad() does, without the two objects it builds per call (~3 us of a ~1 ms step).
        prev = torch.is_grad_enabled()
        torch._C._set_grad_enabled(False)
        try:
            if not self._step_all_merged(s, clock):
                self._step_levels(s, clock)
        finally:
            torch._C._set_grad_enabled(prev)
        return loss

    def _step_levels(self, s: int, clock: dict[str, Any]) -> None:
        """The general step: accumulate every level's gradient, step the levels that are due."""
        counts = clock["count"]
        for index, group in enumerate(self.param_groups):
            if group["lr"] != self._synced_lr[index]:  # someone (a scheduler) changed the level's lr
                self._sync_lr(index)
            due = s % group["period"] == 0
            count = counts[index]
            if due and count == 0:  # nothing pending: the step's own gradient, as is (bitwise plain)
                self.bases[index].step()
                clock["updates"][index] += 1
                continue
            for p in group["params"]:
                grad = p.grad
                if grad is None:
                    continue
                state = self.state[p]
                acc = state.get("acc")
                if acc is None:
                    state["acc"] = grad.detach().clone()
                else:
                    acc.add_(grad)
            count += 1
            if due:
                self._apply(index, count)
            else:
                counts[index] = count

    def _step_all_merged(self, s: int, clock: dict[str, Any]) -> bool:
        """The fast path: every level due with an empty window, one merged base step. False (nothing
        done) when it does not apply.

        Every level is due at s iff s is a multiple of the lcm of the periods. The periods and lrs it
        was computed for are kept as one tuple of (period, lr) pairs, rebuilt in C and compared each
        step; a difference (a scheduler, a changed period) re-syncs the lrs and recomputes the lcm."""
        if any(clock["count"]):
            return False
        key = tuple(map(_PERIOD_LR, self.param_groups))
        if key != self._level_key:
            self._refresh_levels(key)
        if self._every is None or s % self._every:
            return False
        merged = self._merged
        if merged is None:
            merged = self._merged = MergedStep.build(self.bases, self._model)
        if not merged or not merged.step():
            return False
        updates = clock["updates"]
        for index in range(len(updates)):
            updates[index] += 1
        return True

    def _refresh_levels(self, key: tuple) -> None:
        for index, group in enumerate(self.param_groups):
            if group["lr"] != self._synced_lr[index]:
                self._sync_lr(index)
        # The merged path needs two levels or more (one level: its base's own step is the same call).
        self._every = math.lcm(*(period for period, _ in key)) if len(self.bases) > 1 else None
        self._level_key = key

    def _sync_lr(self, index: int) -> None:
        lr = self.param_groups[index]["lr"]
        for base_group in self.bases[index].param_groups:
            base_group["lr"] = lr
        self._synced_lr[index] = lr
        self._level_key = None  # the cached key may hold an lr this sync has just made stale

    @torch.no_grad()
    def flush(self) -> list[int]:
        """Apply every partial window now (without advancing s); returns the indices of the levels
        that stepped. Used by `flush_on_experience_end`."""
        flushed = []
        for index in range(len(self.param_groups)):
            count = self._clock["count"][index]
            if count > 0:
                self._apply(index, count)
                flushed.append(index)
        return flushed

    # ---------------------------------------------------------------- persistence

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["state"]["clock"] = copy.deepcopy(self._clock)
        sd["bases"] = [base.state_dict() for base in self.bases]
        sd["reduction"] = self.reduction
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        bases = state_dict.pop("bases")
        reduction = state_dict.pop("reduction", self.reduction)
        if len(bases) != len(self.bases):
            raise ValueError(f"state_dict has {len(bases)} clock levels, this optimizer has {len(self.bases)}")
        super().load_state_dict(state_dict)
        self._merged = self._level_key = None
        self.state["clock"] = copy.deepcopy(state_dict["state"]["clock"])
        self.reduction = reduction
        for base, base_sd in zip(self.bases, bases):
            base.load_state_dict(base_sd)
        self._synced_lr = [base.param_groups[0].get("lr") if base.param_groups else None for base in self.bases]

    def __repr__(self) -> str:
        levels = ", ".join(f"C={g['period']}:{sum(p.numel() for p in g['params'])}" for g in self.param_groups)
        return f"ClockedOptimizer(s={self.global_step}, levels=[{levels}], reduction={self.reduction}, base={type(self.bases[0]).__name__})"


class ClockFlush(SupervisedPlugin):
    """`flush_on_experience_end=True`: apply the partial windows at the end of every experience."""

    def after_training_exp(self, strategy: Any, **kwargs: Any) -> None:
        if isinstance(strategy.optimizer, ClockedOptimizer):
            strategy.optimizer.flush()


def clock_wrapper(hp: Mapping[str, Any]) -> Callable[[nn.Module, Callable], ClockedOptimizer]:
    """The `optimizer_wrapper` of a clocked strategy: wire_clocks, then one base optimizer per level."""
    periods, by, reduction = tuple(hp["periods"]), hp["by"], hp["reduction"]

    def wrap(model: nn.Module, base_factory: Callable) -> ClockedOptimizer:
        return ClockedOptimizer(wire_clocks(model, periods, by=by), base_factory, model=model, reduction=reduction)

    return wrap


def clock_plugins(hp: Mapping[str, Any]) -> list:
    return [ClockFlush()] if hp["flush_on_experience_end"] else []
