"""The merged fast path of the ClockedOptimizer (clocks.py): one base-optimizer step over every clock
level's parameters when every level is due with an empty window (nl-math.md section 4.2 with all
windows empty: each level's Opt_l.step on its own gradient), bitwise the result of stepping the
levels' base optimizers one by one, without one optimizer call per level.

What it derives from the bases (their groups, the parameters sorted into the model's order, the map from
a parameter to its level's state) is cached and re-validated every step by identity checks only, so a
step costs a few microseconds on top of the base optimizer's own loop.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from operator import is_, itemgetter
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["MergedStep"]


class _LevelStates(dict):
    """`state` of a merged step: maps each parameter to the very state dict its own level optimizer
    holds (filled on first use, so a hit costs a plain dict lookup); a parameter seen for the first
    time gets its state created in its level's optimizer, as torch's defaultdict would."""

    def __init__(self, bases: list[torch.optim.Optimizer]) -> None:
        super().__init__()
        self.bases = bases
        self.sources = [b.state for b in bases]  # a base whose state was replaced invalidates this map

    def current(self) -> bool:
        if len(self.bases) != len(self.sources):
            return False
        for b, src in zip(self.bases, self.sources):
            if b.state is not src:
                return False
        return True

    def __missing__(self, p: Tensor) -> dict:
        for base in self.bases:
            if any(p is q for g in base.param_groups for q in g["params"]):
                state = self[p] = base.state[p]
                return state
        raise KeyError("parameter of no clock level")


class MergedStep:
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
        self._layout: list[dict] | None = None  # the bases' groups the fields below were computed from
        self._group_params: list[tuple[Tensor, ...]] = []
        self._params: list[Tensor] = []
        self._n_keys = 0
        self._settings: Callable[[dict], Any] | None = None

    @classmethod
    def build(cls, bases: list[torch.optim.Optimizer], model: nn.Module | None) -> MergedStep | bool:
        kind = type(bases[0])
        if kind not in cls.MERGEABLE or any(type(b) is not kind for b in bases):
            return False
        order = {} if model is None else {p: i for i, p in enumerate(model.parameters())}
        return cls(bases, order)

    def ready(self) -> bool:
        # Step hooks would run once instead of once per level: then step the bases one by one.
        for b in self.bases:
            if b._optimizer_step_pre_hooks or b._optimizer_step_post_hooks:
                return False
        return True

    def _layout_unchanged(self) -> bool:
        """Are the bases' groups, and the parameters in them, the very objects `_lay_out` saw? Identity
        checks only (C-level `map(is_, ...)`), no dict or id-tuple rebuilt."""
        groups = self._layout
        if groups is None:
            return False
        current = [g for b in self.bases for g in b.param_groups]
        if len(current) != len(groups) or not all(map(is_, current, groups)):
            return False
        for g, params in zip(groups, self._group_params):
            now = g["params"]
            if len(now) != len(params) or not all(map(is_, now, params)):
                return False
        return True

    def _lay_out(self) -> None:
        """Record the bases' groups and parameters, sorted once into the model's order for the
        one-group form, and which keys make up a group's settings."""
        groups = self._layout = [g for b in self.bases for g in b.param_groups]
        self._group_params = [tuple(g["params"]) for g in groups]
        last = len(self.order)
        self._params = sorted((p for g in groups for p in g["params"]), key=lambda p: self.order.get(p, last))
        keys = [k for k in groups[0] if k != "params"]
        self._n_keys = len(keys) + 1
        self._settings = itemgetter(*keys) if keys else (lambda g: ())

    def _groups(self) -> list[dict]:
        if not self._layout_unchanged():
            self._lay_out()
        groups, settings, n_keys = self._layout, self._settings, self._n_keys
        first = groups[0]
        try:  # the settings are read every step: a scheduler or a sync may have changed one level's
            values = settings(first)
            for g in groups:
                if len(g) != n_keys or settings(g) != values:
                    return groups
        except KeyError:  # a group lost a key another has: the levels' own groups, as they are
            return groups
        return [{**first, "params": self._params}]

    def step(self) -> bool:
        """One merged step; False (nothing done) when a base has step hooks."""
        if not self.ready():
            return False
        opt = self.optimizer
        if not opt.state.current():  # a base loaded a state_dict (new state dicts): map them again
            opt.state = _LevelStates(self.bases)
        opt.param_groups = self._groups()
        # Past torch's profiling wrapper (its hooks are checked in ready(); the clocked step's own
        # wrapper has run the global ones once for this step): straight to the optimizer's loop.
        self._step(opt)
        return True
