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
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from avalanche.core import SupervisedPlugin
from torch import Tensor, nn

from .hparams import REDUCTIONS
from .wiring import ClockLevel, wire_clocks

__all__ = ["ClockedOptimizer", "ClockFlush", "clock_plugins", "clock_wrapper"]


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
    (see `_MergedStep`): the same per-group update on the same state tensors, so bitwise the result of
    stepping the bases one by one, without one optimizer call per level.
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
        self._merged: _MergedStep | None = None
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
        self._merged = None
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

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        clock = self._clock
        s = clock["step"] = clock["step"] + 1
        counts = clock["count"]
        if self._step_all_merged(s, clock):
            return loss
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
        return loss

    def _step_all_merged(self, s: int, clock: dict[str, Any]) -> bool:
        """The fast path: every level due with an empty window, one merged base step. False (nothing
        done) when it does not apply."""
        if len(self.bases) < 2 or any(clock["count"]) or any(s % g["period"] for g in self.param_groups):
            return False
        merged = self._merged
        if merged is None:
            merged = self._merged = _MergedStep.build(self.bases, self._model)
        if not merged or not merged.ready():
            return False
        for index, group in enumerate(self.param_groups):
            if group["lr"] != self._synced_lr[index]:
                self._sync_lr(index)
        merged.step()
        updates = clock["updates"]
        for index in range(len(updates)):
            updates[index] += 1
        return True

    def _sync_lr(self, index: int) -> None:
        lr = self.param_groups[index]["lr"]
        for base_group in self.bases[index].param_groups:
            base_group["lr"] = lr
        self._synced_lr[index] = lr

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
        self._merged = None
        self.state["clock"] = copy.deepcopy(state_dict["state"]["clock"])
        self.reduction = reduction
        for base, base_sd in zip(self.bases, bases):
            base.load_state_dict(base_sd)
        self._synced_lr = [base.param_groups[0].get("lr") if base.param_groups else None for base in self.bases]

    def __repr__(self) -> str:
        levels = ", ".join(f"C={g['period']}:{sum(p.numel() for p in g['params'])}" for g in self.param_groups)
        return f"ClockedOptimizer(s={self.global_step}, levels=[{levels}], reduction={self.reduction}, base={type(self.bases[0]).__name__})"


class _LevelStates(dict):
    """`state` of a merged step: maps each parameter to the very state dict its own level optimizer
    holds (filled on first use, so a hit costs a plain dict lookup); a parameter seen for the first
    time gets its state created in its level's optimizer, as torch's defaultdict would."""

    def __init__(self, bases: list[torch.optim.Optimizer]) -> None:
        super().__init__()
        self.bases = bases
        self.sources = [b.state for b in bases]  # a base whose state was replaced invalidates this map

    def current(self) -> bool:
        return all(b.state is src for b, src in zip(self.bases, self.sources))

    def __missing__(self, p: Tensor) -> dict:
        for base in self.bases:
            if any(p is q for g in base.param_groups for q in g["params"]):
                state = self[p] = base.state[p]
                return state
        raise KeyError("parameter of no clock level")


class _MergedStep:
    """One optimizer step over every level's parameters at once, for bases of one torch.optim class
    whose `step` is a loop over `self.param_groups` that reads and writes only `self.state[p]`
    (SGD, Adam, AdamW), whose update of a parameter depends only on its own group's settings.

    A shallow copy of the first base runs that loop with `_LevelStates` as its state. When every
    level's groups hold the same settings (the usual case: one factory) it gets ONE group with all the
    parameters in the model's order, i.e. exactly the call a plain optimizer on the model makes;
    otherwise it gets the levels' own group dicts. Either way each parameter gets the update its own
    base would give it, on the same state tensors: bitwise the result of stepping the bases one by one."""

    MERGEABLE = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW)

    def __init__(self, bases: list[torch.optim.Optimizer], order: dict[Tensor, int]) -> None:
        self.bases = bases
        self.order = order  # position of each parameter in the model (unknown ones go last, in level order)
        self.optimizer = copy.copy(bases[0])
        self.optimizer.state = _LevelStates(bases)
        step = type(self.optimizer).step
        self._step = getattr(step, "__wrapped__", step)
        self._key: tuple[int, ...] | None = None
        self._params: list[Tensor] = []

    @classmethod
    def build(cls, bases: list[torch.optim.Optimizer], model: nn.Module | None) -> _MergedStep | bool:
        kind = type(bases[0])
        if kind not in cls.MERGEABLE or any(type(b) is not kind for b in bases):
            return False
        order = {} if model is None else {p: i for i, p in enumerate(model.parameters())}
        return cls(bases, order)

    def ready(self) -> bool:
        # Step hooks would run once instead of once per level: then step the bases one by one.
        return not any(b._optimizer_step_pre_hooks or b._optimizer_step_post_hooks for b in self.bases)

    def _groups(self) -> list[dict]:
        groups = [g for b in self.bases for g in b.param_groups]
        first = groups[0]
        if any(len(g) != len(first) or any(g[k] != v for k, v in first.items() if k != "params") for g in groups[1:]):
            return groups
        params = [p for g in groups for p in g["params"]]
        key = tuple(map(id, params))
        if key != self._key:  # the levels' parameters changed: sort them into the model's order again
            self._key = key
            last = len(self.order)
            self._params = sorted(params, key=lambda p: self.order.get(p, last))
        return [{**first, "params": self._params}]

    def step(self) -> None:
        opt = self.optimizer
        if not opt.state.current():  # a base loaded a state_dict (new state dicts): map them again
            opt.state = _LevelStates(self.bases)
        opt.param_groups = self._groups()
        # Past torch's profiling wrapper (its hooks are checked in ready(); the clocked step's own
        # wrapper has run the global ones once for this step): straight to the optimizer's loop.
        self._step(opt)


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
