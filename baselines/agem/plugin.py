"""A-GEM's projection and `DeviceAGEM`, its plugin for the fast data path (Chaudhry, Ranzato, Rohrbach,
Elhoseiny, ICLR 2019, "Efficient Lifelong Learning with A-GEM").

After the backward pass, a gradient g that conflicts with the memory's reference gradient g_ref
(g . g_ref < 0) is projected: g <- g - (g . g_ref / g_ref . g_ref) g_ref. Here the step size is
computed branch-free (`_agem_alpha`), so the projection never reads a GPU value on the host, and the
episodic memory is device tensors.
"""

from __future__ import annotations

from typing import Any

import torch
from avalanche.core import SupervisedPlugin
from avalanche.models import avalanche_forward
from torch import Tensor

from nlbench.data.fastpath import autocast_like, random_rows


def _agem_alpha(g: Tensor, g_ref: Tensor) -> Tensor:
    """The A-GEM step size on g_ref as a 0-d tensor: g . g_ref / g_ref . g_ref when that dot is
    negative, else 0 (also when g_ref = 0, where the plain ratio would be 0/0)."""
    squared = torch.dot(g_ref, g_ref)
    # clamp instead of `if dot < 0`: reading the sign on the host would sync with a GPU every step.
    return torch.dot(g, g_ref).clamp(max=0) / torch.where(squared > 0, squared, torch.ones_like(squared))


def agem_project(g: Tensor, g_ref: Tensor) -> Tensor:
    """A-GEM's projection of the flat gradient g against the flat reference gradient g_ref.

    Equals Avalanche's `g - (g . g_ref / g_ref . g_ref) g_ref` when g . g_ref < 0 and returns g
    unchanged otherwise; the result never has a negative dot product with g_ref.
    """
    return g - _agem_alpha(g, g_ref) * g_ref


def _flat_grads(model: torch.nn.Module) -> Tensor:
    # A parameter that took no part in the loss (another task's head) counts as a zero gradient.
    return torch.cat([p.grad.reshape(-1) if p.grad is not None else p.new_zeros(p.numel()) for p in model.parameters()])


class DeviceAGEM(SupervisedPlugin):
    """A-GEM for the fast data path: the episodic memory is device tensors, the projection is
    branch-free (see the module docstring for the paper and the update rule).

    Matches Avalanche 0.6's AGEMPlugin:
    - after each experience, a random subset of `patterns_per_exp` of its samples becomes one memory
      group (an experience no larger than that is kept whole, in its own order); the subset is
      drawn with torch's global CPU generator (Avalanche uses Python's `random`), so a seeded run is
      reproducible;
    - the reference minibatch takes sample_size // (groups) samples from each group, as Avalanche's
      GroupBalancedInfiniteDataLoader does. That loader builds one plain DataLoader per group with
      no shuffle and no drop_last, so each group is walked sequentially in its stored (randomly
      drawn) order, without replacement, the last batch of a pass being short, then cycles from its
      start again; every memory update restarts all groups at their start. No sampling randomness
      is drawn per step;
    - the memory batch gets `strategy.fast_augment` when set (Avalanche stores the experience's
      train-mode dataset, so its memory is augmented too);
    - the reference gradient is taken in train mode through `avalanche_forward` (task labels) with
      `strategy._criterion`, gradients zeroed before and after.

    Differences: under `Autocast` the reference forward runs under bf16 autocast too, like the
    strategy's own forward; when sample_size < groups, each group gives one sample where
    Avalanche's DataLoader fails on a batch size of 0.

    `projections` counts (on the device) the training steps whose gradient was projected.
    """

    def __init__(self, patterns_per_exp: int, sample_size: int):
        super().__init__()
        self.patterns_per_exp = int(patterns_per_exp)
        self.sample_size = int(sample_size)
        self.groups: list[tuple[Tensor, ...]] = []  # one (x, y, t) per past experience, on the device
        self.cursors: list[int] = []
        self.reference_gradients: Tensor | None = None
        self.projections: Tensor | None = None

    def sample_from_memory(self) -> list[Tensor]:
        take = max(1, self.sample_size // len(self.groups))
        parts = []
        for k, group in enumerate(self.groups):
            start = self.cursors[k]
            parts.append([t[start : start + take] for t in group])
            self.cursors[k] = 0 if start + take >= len(group[0]) else start + take
        return [torch.cat(column) for column in zip(*parts)]

    def before_training_iteration(self, strategy: Any, **kwargs: Any) -> None:
        if not self.groups:
            return
        strategy.model.train()
        strategy.optimizer.zero_grad()  # the last step's gradients are still there: the template zeroes after this hook
        x, y, t = self.sample_from_memory()
        augment = getattr(strategy, "fast_augment", None)
        if augment is not None:
            x = augment(x)
        with autocast_like(strategy):  # the reference must see the same numerics as the training forward
            out = avalanche_forward(strategy.model, x, t).float()
        strategy._criterion(out, y).backward()
        self.reference_gradients = _flat_grads(strategy.model)
        strategy.optimizer.zero_grad()

    @torch.no_grad()
    def after_backward(self, strategy: Any, **kwargs: Any) -> None:
        if not self.groups:
            return
        g, g_ref = _flat_grads(strategy.model), self.reference_gradients
        assert g.shape == g_ref.shape, "different model parameters in the A-GEM projection"
        alpha = _agem_alpha(g, g_ref)
        projected = g - alpha * g_ref  # agem_project, with alpha kept to count projections on the device
        if self.projections is None:
            self.projections = torch.zeros((), dtype=torch.long, device=g.device)
        self.projections += alpha < 0
        offset = 0
        for p in strategy.model.parameters():
            n = p.numel()
            if p.grad is not None:
                p.grad.copy_(projected[offset : offset + n].view_as(p.grad))
            offset += n

    @torch.no_grad()
    def after_training_exp(self, strategy: Any, **kwargs: Any) -> None:
        current = strategy._device_tensors()
        n = len(current[0])
        if n > self.patterns_per_exp:  # otherwise Avalanche keeps the experience whole, in order
            current = random_rows(current, self.patterns_per_exp)
        self.groups.append(current)
        self.cursors = [0] * len(self.groups)

    def state_dict(self) -> dict:
        """The episodic memory, its cursors and the projection count, for checkpoints inside a run
        (nlbench.core.checkpoint). `reference_gradients` is left out: it is recomputed before every use."""
        return {"groups": [list(group) for group in self.groups], "cursors": list(self.cursors),
                "projections": self.projections}

    def load_state_dict(self, state: dict) -> None:
        self.groups = [tuple(group) for group in state["groups"]]
        self.cursors = list(state["cursors"])
        self.projections = state["projections"]
