"""Fixed evaluation subsamples of a test stream and accuracy on them, for measurements taken during training
(continual evaluation, `nlbench.core.continual_eval`; clock probes, `nlbench.core.probes`).

The subsample of test experience j is the first `EVAL_SUBSAMPLE` samples of a permutation drawn from its
own generator (seed 0): the same samples for every run and every evaluation, and no draw from the global
RNG, so measuring never changes what a run trains on.
"""

from __future__ import annotations

from typing import Any

import torch

EVAL_SUBSAMPLE = 1000  # samples per test experience (sequences for sequence suites)
_SUBSAMPLE_SEED = 0


class ProbeSet:
    """A fixed subsample of every test experience, as device tensors, and accuracy on it."""

    def __init__(self, test_stream: Any, size: int = EVAL_SUBSAMPLE):
        self.test_stream = test_stream
        self.size = size
        self._cache: dict[tuple[int, str], tuple[torch.Tensor, ...]] = {}

    def tensors(self, j: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        key = (j, str(device))
        if key not in self._cache:
            from nlbench.data.fastpath import materialise

            experience = self.test_stream[j]
            x, y, t = getattr(experience, "nlbench_tensors", None) or materialise(experience.dataset)[:3]
            if len(y) > self.size:
                keep = torch.randperm(len(y), generator=torch.Generator().manual_seed(_SUBSAMPLE_SEED))[:self.size]
                x, y, t = x[keep], y[keep], t[keep]
            self._cache[key] = tuple(v.to(device) for v in (x, y, t))
        return self._cache[key]

    @torch.no_grad()
    def accuracy(self, strategy: Any, j: int, batch_size: int = 1000) -> float:
        """Accuracy of `strategy.model` on the subsample of test experience j (next-token accuracy on
        sequences). The model's train/eval mode is restored afterwards."""
        from avalanche.models.utils import avalanche_forward

        model = strategy.model
        was_training = model.training
        model.eval()
        x, y, t = self.tensors(j, strategy.device)
        correct, total = 0, 0
        try:
            for start in range(0, len(y), batch_size):
                xb = x[start:start + batch_size]
                if getattr(strategy, "channels_last", False) and xb.dim() == 4:
                    xb = xb.contiguous(memory_format=torch.channels_last)
                out = avalanche_forward(model, xb, t[start:start + batch_size])
                target = y[start:start + batch_size]
                correct += int((out.argmax(-1) == target).sum())
                total += target.numel()
        finally:
            model.train(was_training)
        return correct / max(total, 1)
