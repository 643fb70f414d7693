"""`CLSER`, the Avalanche plugin of CLS-ER (Arani, Sarfraz & Zonooz, ICLR 2022); the update rule is in
the package docstring.

How it sits in Avalanche's training iteration (any data path, any template):
- `before_training_iteration`: a memory minibatch from the reservoir is appended to the end of
  `strategy.mbatch`, and the consistency targets z_m are computed from the plastic and stable weights
  (`torch.func.functional_call` on the working model, so no copy of the network is kept: the EMA models
  are their parameters; buffers such as batch-norm statistics are the working model's);
- `before_backward`: reg_weight * MSE between the working model's outputs on those last rows and z_m
  is added to the loss (the template's criterion already gives CE over the joint batch);
- `after_update`: each EMA takes its stochastic step;
- `after_training_iteration`: the current minibatch is offered to the reservoir;
- `before_eval` / `after_eval`: the evaluated weights (stable by default) are swapped in and back.
The memory rows are appended last, so a template that puts its own memory first (DER) or a replay
data loader that appends before the iteration keeps its rows where it expects them.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from avalanche.core import SupervisedPlugin
from avalanche.models import MultiTaskModule

from nlbench.data.fastpath import host_to_device


class EMA:
    """An exponential moving average of named weights, stepped with probability `freq` per call.

    Step k (k = 1, 2, ...): w <- a w + (1 - a) theta with a = min(1 - 1/(k + 1), alpha), the warm-up
    of CLS-ER (and of mean-teacher EMAs), so early averages are not dominated by the initialisation.
    """

    def __init__(self, alpha: float, freq: float):
        self.alpha = float(alpha)
        self.freq = float(freq)
        self.weights: dict[str, torch.Tensor] = {}
        self.updates = 0

    def track(self, named: list[tuple[str, torch.Tensor]]) -> None:
        """Start averaging parameters not seen before (a new head) at their current value."""
        for name, p in named:
            if name not in self.weights:
                self.weights[name] = p.detach().clone()

    @torch.no_grad()
    def step(self, named: list[tuple[str, torch.Tensor]], k: int) -> None:
        decay = min(1.0 - 1.0 / (k + 1), self.alpha)
        names = [name for name, _ in named]
        ema = [self.weights[name] for name in names]
        torch._foreach_mul_(ema, decay)
        torch._foreach_add_(ema, [p.detach() for _, p in named], alpha=1.0 - decay)
        self.updates += 1


class Reservoir:
    """Reservoir sampling (Vitter's algorithm R) over every sample offered, as device tensors.

    Sample number n (0-based) of the stream takes slot n while the buffer fills, then slot j for j
    drawn uniformly in [0, n], kept only when j < size; so the buffer is at every moment a uniform
    sample of the stream so far. Draws come from torch's CPU generator, like the rest of a seeded run.
    """

    def __init__(self, size: int):
        self.size = int(size)
        self.seen = 0
        self.columns: list[torch.Tensor] = []

    def __len__(self) -> int:
        return min(self.seen, self.size)

    def add(self, columns: list[torch.Tensor]) -> None:
        n_new = len(columns[0])
        if not self.columns:
            self.columns = [torch.zeros((self.size, *c.shape[1:]), dtype=c.dtype, device=c.device) for c in columns]
        draws = torch.rand(n_new, dtype=torch.float64).tolist()
        target: dict[int, int] = {}  # slot -> row of this minibatch; a later row overwrites an earlier one
        for row, u in enumerate(draws):
            n = self.seen + row
            slot = n if n < self.size else int(u * (n + 1))
            if slot < self.size:
                target[slot] = row
        self.seen += n_new
        if not target:
            return
        device = self.columns[0].device
        slots = host_to_device(torch.tensor(list(target.keys())), device)
        rows = host_to_device(torch.tensor(list(target.values())), device)
        for column, new in zip(self.columns, columns):
            column.index_copy_(0, slots, new.detach().index_select(0, rows).to(column.dtype))

    def sample(self, k: int) -> list[torch.Tensor]:
        """min(k, len) distinct stored samples, uniformly at random."""
        filled = len(self)
        index = host_to_device(torch.randperm(filled)[: min(k, filled)], self.columns[0].device)
        return [column.index_select(0, index) for column in self.columns]


class CLSER(SupervisedPlugin):
    """CLS-ER's replay, consistency loss and plastic/stable EMA models (module and package docstrings)."""

    def __init__(self, mem_size: int, mem_batch: int, reg_weight: float, plastic: EMA, stable: EMA,
                 eval_model: str = "stable"):
        super().__init__()
        self.buffer = Reservoir(mem_size)
        self.mem_batch = int(mem_batch)
        self.reg_weight = float(reg_weight)
        self.plastic = plastic
        self.stable = stable
        self.eval_model = eval_model
        self.steps = 0
        self._current: list[torch.Tensor] | None = None
        self._targets: torch.Tensor | None = None
        self._saved: dict[str, torch.Tensor] | None = None

    @staticmethod
    def _named(strategy: Any) -> list[tuple[str, torch.Tensor]]:
        return [(n, p) for n, p in strategy.model.named_parameters() if p.requires_grad]

    def _track(self, strategy: Any) -> None:
        named = self._named(strategy)
        self.plastic.track(named)
        self.stable.track(named)

    @torch.no_grad()
    def _ema_logits(self, strategy: Any, ema: EMA, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        from torch.func import functional_call

        args = (x, t) if isinstance(strategy.model, MultiTaskModule) else (x,)
        return functional_call(strategy.model, ema.weights, args, strict=False).float()

    def before_training_exp(self, strategy: Any, **kwargs: Any) -> None:
        self._track(strategy)

    def before_training_iteration(self, strategy: Any, **kwargs: Any) -> None:
        batch = strategy.mbatch
        if len(batch) != 3:
            raise RuntimeError(f"cls-er expects (x, y, task) minibatches, got {len(batch)} fields")
        self._current = [batch[0], batch[1], batch[2]]
        self._targets = None
        if not len(self.buffer):
            return
        x_m, y_m, t_m = self.buffer.sample(self.mem_batch or len(batch[1]))
        stable = self._ema_logits(strategy, self.stable, x_m, t_m)
        plastic = self._ema_logits(strategy, self.plastic, x_m, t_m)
        # Per sample (per token for sequences), the EMA model that is more confident in the true label.
        p_stable = stable.softmax(-1).gather(-1, y_m.unsqueeze(-1))
        p_plastic = plastic.softmax(-1).gather(-1, y_m.unsqueeze(-1))
        self._targets = torch.where(p_stable > p_plastic, stable, plastic)
        strategy.mbatch = [torch.cat([current, memory]) for current, memory in zip(self._current, (x_m, y_m, t_m))]

    def before_backward(self, strategy: Any, **kwargs: Any) -> None:
        if self._targets is not None:
            replayed = strategy.mb_output[-len(self._targets):]
            strategy.loss = strategy.loss + self.reg_weight * F.mse_loss(replayed.float(), self._targets)

    def after_update(self, strategy: Any, **kwargs: Any) -> None:
        self.steps += 1
        draws = torch.rand(2).tolist()
        named = self._named(strategy)
        if draws[0] < self.plastic.freq:
            self.plastic.step(named, self.steps)
        if draws[1] < self.stable.freq:
            self.stable.step(named, self.steps)

    def after_training_iteration(self, strategy: Any, **kwargs: Any) -> None:
        if self._current is not None:
            self.buffer.add(self._current)
        self._current = self._targets = None

    @torch.no_grad()
    def before_eval(self, strategy: Any, **kwargs: Any) -> None:
        if self.eval_model == "working":
            return
        self._track(strategy)
        ema = self.stable if self.eval_model == "stable" else self.plastic
        named = self._named(strategy)
        self._saved = {name: p.detach().clone() for name, p in named}
        for name, p in named:
            p.copy_(ema.weights[name])

    @torch.no_grad()
    def after_eval(self, strategy: Any, **kwargs: Any) -> None:
        if self._saved is None:
            return
        # Restore exactly what was swapped: a multi-head model adds heads during eval (Avalanche's
        # MultiHeadClassifier adapts on every experience it sees), and those were never swapped.
        params = dict(self._named(strategy))
        for name, saved in self._saved.items():
            params[name].copy_(saved)
        self._saved = None

    def result_fields(self) -> dict:
        """How often each EMA stepped (result.json `cls_er`): the realised update frequencies."""
        return {"cls_er": {"steps": self.steps, "plastic_updates": self.plastic.updates,
                           "stable_updates": self.stable.updates, "buffer_seen": self.buffer.seen}}

    def state_dict(self) -> dict:
        """Reservoir, EMA weights and counters, for checkpoints inside a run (nlbench.core.checkpoint)."""
        return {"columns": list(self.buffer.columns), "seen": self.buffer.seen, "steps": self.steps,
                "plastic": dict(self.plastic.weights), "stable": dict(self.stable.weights),
                "updates": (self.plastic.updates, self.stable.updates)}

    def load_state_dict(self, state: dict) -> None:
        self.buffer.columns, self.buffer.seen = list(state["columns"]), int(state["seen"])
        self.steps = int(state["steps"])
        self.plastic.weights, self.stable.weights = dict(state["plastic"]), dict(state["stable"])
        self.plastic.updates, self.stable.updates = state["updates"]
