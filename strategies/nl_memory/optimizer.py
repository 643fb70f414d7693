"""MultiTimescaleMemoryOpt: three-timescale gradient memory with depth-clocked, accumulated,
RMS-normalised updates (port of seed S001, Kareem Farid's Keras ``NestedLearningOptimizer``,
github.com/Kareemfarid/nested-learning-optimizer; nlbench math spec ``/work/shared/design/nl-math.md``
Section 6).

The update rule is in ``memory`` (``multi_timescale_update_``); when a parameter updates in
``schedule``. This module holds the optimizer: which interval each parameter gets (depth from the model,
from parameter names, or the seed's per-variable fallback), its state, and the global step.
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping, Optional

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from .checks import check_group, is_int
from .memory import multi_timescale_update_
from .schedule import interval_from_depth, owning_modules, per_variable_relative_depths, sawtooth_lr

__all__ = ["MultiTimescaleMemoryOpt"]

GLOBAL_STEP_KEY = "global_step"


class MultiTimescaleMemoryOpt(Optimizer):
    """Three-timescale gradient memory + depth-clocked, accumulated, RMS-normalised updates.

    Port of S001 (Kareem Farid's Keras ``NestedLearningOptimizer``; spec Section 6). See
    ``memory.multi_timescale_update_`` for the update rule. ``kf_compat=True`` (default) reproduces
    the seed's quirks: bias correction 1 - beta2^(s+1) with the global step, intervals up to M+1,
    mix fixed at 0.5, no first moment (beta1 unused), per-variable depth fallback when no model is
    given. ``kf_compat=False`` fixes them: bias correction with the parameter's own update count,
    intervals up to M (round half up), free ``mix``, optional first-moment EMA ``beta1`` on h, depth
    only from modules.

    Depth (``auto_schedule=True``): from ``model`` (see ``schedule.compute_depths``). Without a
    model: under kf_compat the seed's per-variable fallback (every tensor its own "layer");
    otherwise from the parameter names when ``params`` are named (``model.named_parameters()``),
    grouping by owning module prefix (same order as named_modules()), else ValueError. Parameters
    not found get the deepest depth (the seed does the same); a parameter that Avalanche swaps in at
    the same (group, index) position, e.g. a grown IncrementalClassifier head, keeps that position's
    depth. ``auto_schedule=False``: ``layer_update_intervals`` maps name substrings to intervals
    (first match in mapping order), else ``default_interval``.

    All state (memories, second moment, accumulators, counts, adaptive logits, interval) is in
    ``self.state[p]``; the global step in ``self.state['global_step']`` (never reset), so
    state_dict()/load_state_dict() resume bitwise. Avalanche zeroes .grad every iteration; the
    accumulator A is optimizer state, never .grad.

    Per-group hyperparameters: lr, decays, blend_mode, fixed_weights, adaptive_lr, max_interval,
    schedule_curve, reverse_depth_order, default_interval, warmup_steps, accumulate, beta1, beta2, eps,
    amsgrad, mix, compression_rank, steps_per_epoch and the lr_* schedule fractions.
    Interval settings are read when a parameter's state is first created (its first step).
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, *, model: Optional[nn.Module] = None,
                 kf_compat: bool = True,
                 decays: tuple[float, float, float] = (0.94, 0.994, 0.9999),
                 blend_mode: str = "attention",
                 fixed_weights: tuple[float, float, float] = (0.1, 0.3, 0.6),
                 adaptive_lr: float = 0.01,
                 auto_schedule: bool = True, max_interval: int = 6, schedule_curve: str = "cosine",
                 reverse_depth_order: bool = True, warmup_steps: int = 0, accumulate: bool = True,
                 layer_update_intervals: Optional[Mapping[str, int]] = None, default_interval: int = 1,
                 beta1: Optional[float] = None, beta2: float = 0.999, eps: float = 1e-7,
                 amsgrad: bool = False, mix: float = 0.5, compression_rank: Optional[int] = None,
                 steps_per_epoch: Optional[int] = None, lr_warmup_fraction: float = 0.25,
                 lr_hold_fraction: float = 0.25, lr_decay_fraction: float = 0.5,
                 lr_min_fraction: float = 0.01, lr_warmup_start_fraction: float = 0.01):
        if not isinstance(kf_compat, bool):
            raise ValueError(f"Invalid kf_compat: {kf_compat!r}")
        if not isinstance(auto_schedule, bool):
            raise ValueError(f"Invalid auto_schedule: {auto_schedule!r}")
        if model is not None and not isinstance(model, nn.Module):
            raise ValueError("model must be a torch.nn.Module")
        if layer_update_intervals is not None:
            if auto_schedule:
                # The seed silently ignores the mapping when auto_schedule is on; refuse instead.
                raise ValueError("layer_update_intervals needs auto_schedule=False")
            if not isinstance(layer_update_intervals, Mapping) or not all(
                    isinstance(k, str) and is_int(v, 1) for k, v in layer_update_intervals.items()):
                raise ValueError("layer_update_intervals must map name substrings to ints >= 1")
        self.kf_compat = kf_compat
        self.auto_schedule = auto_schedule
        self.layer_update_intervals = dict(layer_update_intervals or {})
        defaults = dict(lr=lr, decays=tuple(decays) if isinstance(decays, (list, tuple)) else decays,
                        blend_mode=blend_mode,
                        fixed_weights=tuple(fixed_weights) if isinstance(fixed_weights, (list, tuple))
                        else fixed_weights,
                        adaptive_lr=adaptive_lr, max_interval=max_interval,
                        schedule_curve=schedule_curve, reverse_depth_order=reverse_depth_order,
                        default_interval=default_interval, warmup_steps=warmup_steps,
                        accumulate=accumulate, beta1=beta1, beta2=beta2, eps=eps, amsgrad=amsgrad,
                        mix=mix, compression_rank=compression_rank, steps_per_epoch=steps_per_epoch,
                        lr_warmup_fraction=lr_warmup_fraction, lr_hold_fraction=lr_hold_fraction,
                        lr_decay_fraction=lr_decay_fraction, lr_min_fraction=lr_min_fraction,
                        lr_warmup_start_fraction=lr_warmup_start_fraction)
        super().__init__(params, defaults)
        self._names: dict[Tensor, str] = {}
        if model is not None:
            self._names.update({p: n for n, p in model.named_parameters()})
        for group in self.param_groups:
            for n, p in zip(group.get("param_names", []), group["params"]):
                self._names.setdefault(p, n)
        if self.layer_update_intervals and not self._names:
            raise ValueError("layer_update_intervals needs parameter names: pass model= or "
                             "model.named_parameters()")
        self._rel_depth: dict[Tensor, float] = self._relative_depths(model) if auto_schedule else {}
        # Avalanche's update_optimizer swaps a grown parameter (e.g. IncrementalClassifier) in at the
        # same (group, index) and empties its state; the position keeps its depth and name.
        self._pos: dict[tuple[int, int], Tensor] = {
            (gi, pi): p for gi, g in enumerate(self.param_groups) for pi, p in enumerate(g["params"])}

    # ---------------------------------------------------------------- configuration

    def _relative_depths(self, model: Optional[nn.Module]) -> dict[Tensor, float]:
        all_params = [p for g in self.param_groups for p in g["params"]]
        if model is not None:
            owners = owning_modules(model)
            depth = {p: d for d, (_, own) in enumerate(owners) for _, p in own}
            max_depth = max(len(owners) - 1, 0)
        elif self.kf_compat:
            # The seed's behaviour when compute_depths_from_model was not called, even if names exist.
            return dict(zip(all_params, per_variable_relative_depths(len(all_params))))
        elif self._names and all(p in self._names for p in all_params):
            # named_parameters() lists parameters module by module in named_modules() order, so the
            # order of first appearance of the owning prefix is the module position.
            prefixes: dict[str, int] = {}
            depth = {}
            for p in all_params:
                prefix = self._names[p].rpartition(".")[0]
                depth[p] = prefixes.setdefault(prefix, len(prefixes))
            max_depth = max(len(prefixes) - 1, 0)
        else:
            raise ValueError("kf_compat=False needs the depth from modules: pass model= or "
                             "model.named_parameters() (or auto_schedule=False)")
        return {p: (d / max_depth if max_depth > 0 else 0.0) for p, d in depth.items()}

    def _known_as(self, p: Tensor, pos: Optional[tuple[int, int]]) -> Tensor:
        if p in self._names or p in self._rel_depth or pos is None:
            return p
        return self._pos.get(pos, p)

    def _interval_for(self, p: Tensor, group: dict, pos: Optional[tuple[int, int]] = None) -> int:
        p = self._known_as(p, pos)
        if self.auto_schedule:
            rd = self._rel_depth.get(p, 1.0)  # unknown parameter: deepest, as the seed does
            return interval_from_depth(rd, group["max_interval"], group["schedule_curve"],
                                       group["reverse_depth_order"], self.kf_compat)
        name = self._names.get(p)
        if name is not None:
            for pattern, c in self.layer_update_intervals.items():
                if pattern in name:
                    return c
        return group["default_interval"]

    def update_intervals(self) -> dict[str, int]:
        """Interval of every parameter (by name, else 'group{i}.{j}'), for logging."""
        out = {}
        for i, group in enumerate(self.param_groups):
            for j, p in enumerate(group["params"]):
                st = self.state.get(p, {})
                c = st["interval"] if "interval" in st else self._interval_for(p, group, (i, j))
                out[self._names.get(self._known_as(p, (i, j)), f"group{i}.{j}")] = c
        return out

    def update_counts(self) -> dict[str, int]:
        """Number of applied (due) updates per parameter, for logging (spec Section 10)."""
        out = {}
        for i, group in enumerate(self.param_groups):
            for j, p in enumerate(group["params"]):
                name = self._names.get(self._known_as(p, (i, j)), f"group{i}.{j}")
                out[name] = self.state.get(p, {}).get("updates", 0)
        return out

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        g = self.param_groups[-1]
        check_group(g, self.kf_compat)

    # ---------------------------------------------------------------- step

    @property
    def global_step(self) -> int:
        return int(self.state.get(GLOBAL_STEP_KEY, 0))

    def _init_state(self, p: Tensor, state: dict, group: dict, pos: tuple[int, int]) -> None:
        state["interval"] = self._interval_for(p, group, pos)
        state["updates"] = 0  # k: applied (due) updates
        state["memory"] = torch.zeros((3, *p.shape), dtype=p.dtype, device=p.device)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if group["accumulate"]:
            state["acc"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["acc_count"] = 0
        if group["blend_mode"] == "adaptive":
            state["blend_logits"] = torch.tensor(group["fixed_weights"], dtype=p.dtype, device=p.device)
        if group["beta1"] is not None:
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        s = self.global_step + 1
        self.state[GLOBAL_STEP_KEY] = s
        for gi, group in enumerate(self.param_groups):
            spe = group["steps_per_epoch"]
            lr = group["lr"] if spe is None else sawtooth_lr(
                s, group["lr"], spe, group["lr_warmup_fraction"], group["lr_hold_fraction"],
                group["lr_decay_fraction"], group["lr_min_fraction"], group["lr_warmup_start_fraction"])
            for pi, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                g = p.grad
                if g.is_sparse:
                    raise RuntimeError("MultiTimescaleMemoryOpt does not support sparse gradients")
                state = self.state[p]
                if "memory" not in state:
                    self._init_state(p, state, group, (gi, pi))
                multi_timescale_update_(p, g, state, group, s, lr, self.kf_compat)
        return loss
