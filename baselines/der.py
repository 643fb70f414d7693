"""Dark Experience Replay++ (Buzzega et al., NeurIPS 2020), Avalanche's DER strategy.

Class- and domain-incremental only: Avalanche 0.6 computes the buffer's logits with `model(x)`, without
task labels, so a task-masked or multi-head model cannot be replayed faithfully.

Loss: CE(current) + alpha * ||f(x_m) - z_m||^2 on buffered samples with their stored logits z_m
+ beta * CE(y_m, f(x_m)) on the same buffer minibatch (beta = 0 gives plain DER). Class-balanced
reservoir buffer; logits are stored after training on the experience, from unaugmented inputs.

On the fast data path the buffer is `DeviceLogitBuffer` (device tensors, logits computed only for the
samples kept) and `DeviceDER` draws memory minibatches from it without a DataLoader; on the stock path
Avalanche's DER runs unchanged.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import torch
from avalanche.training import DER
from torch import Tensor

from nlbench.data.fastpath import Augment, TensorBatches, autocast_like, host_to_device
from nlbench.core.registry import HParam, Parts, register_strategy


def group_lengths(max_size: int, n_groups: int) -> list[int]:
    """Avalanche's adaptive split of a buffer over groups: equal shares, the remainder to the first."""
    lengths = [max_size // n_groups] * n_groups
    for i in range(max_size - sum(lengths)):
        lengths[i] += 1
    return lengths


class DeviceLogitBuffer:
    """Avalanche's `ClassBalancedBufferWithLogits` as device tensors.

    Same policy: every class seen so far gets an equal share of `max_size` (the remainder goes to the
    lowest class ids); within a class, a reservoir keeps the samples with the largest uniform random
    weights over everything of that class ever offered, so a class met in several experiences (domain
    scenario) keeps a uniform sample of all of them. The logits of a sample are those of the model at
    the end of the experience that offered it (eval mode, unaugmented input), as in Avalanche; they are
    computed only for the samples that enter the buffer, not for the whole experience.
    """

    COLUMNS = ("x", "y", "t", "logits", "weight")

    def __init__(self, max_size: int):
        self.max_size = max_size
        self.groups: dict[int, dict[str, Tensor]] = {}  # class id -> columns

    def __len__(self) -> int:
        return sum(len(group["y"]) for group in self.groups.values())

    def update(self, x: Tensor, y: Tensor, t: Tensor, logits_of: Callable[[Tensor], Tensor]) -> None:
        """Offer one experience's samples (device tensors); `logits_of` maps inputs to stored logits."""
        weight = host_to_device(torch.rand(len(y)), y.device)  # global CPU generator: seeded runs draw alike on any device
        present = torch.unique(y).tolist()  # one host sync per experience
        classes = sorted(set(self.groups) | set(present))
        plans: dict[int, tuple[Tensor, Tensor]] = {}  # class -> (indices of new samples kept, old rows kept)
        for label, size in zip(classes, group_lengths(self.max_size, len(classes))):
            new = (y == label).nonzero().squeeze(1) if label in present else y.new_zeros(0)
            old_weight = self.groups[label]["weight"] if label in self.groups else weight.new_zeros(0)
            keep = torch.cat([weight[new], old_weight]).argsort(descending=True, stable=True)[:size]
            plans[label] = (new[keep[keep < len(new)]], keep[keep >= len(new)] - len(new))
        kept_new = torch.cat([new_rows for new_rows, _ in plans.values()])
        new_logits = logits_of(x[kept_new]) if len(kept_new) else x.new_zeros(0)
        start = 0
        for label, (new_rows, old_rows) in plans.items():
            fresh = {"x": x[new_rows], "y": y[new_rows], "t": t[new_rows],
                     "logits": new_logits[start : start + len(new_rows)], "weight": weight[new_rows]}
            start += len(new_rows)
            old = self.groups.get(label)
            self.groups[label] = fresh if old is None else {
                name: torch.cat([fresh[name], old[name].index_select(0, old_rows)]) for name in self.COLUMNS
            }

    def batches(self, batch_size: int, augment: Augment | None) -> Iterator[tuple[Tensor, Tensor, Tensor, Tensor]]:
        """Endless (x, y, t, logits) minibatches: Avalanche's shuffled, drop-last DataLoader, cycled.

        Buffered inputs are augmented like current ones: Avalanche's buffer holds the train-mode dataset.
        """
        columns = tuple(torch.cat([g[name] for g in self.groups.values()]) for name in self.COLUMNS[:4])
        passes = TensorBatches(columns, batch_size, shuffle=True, augment=augment, drop_last=True)
        while True:  # each pass draws a fresh permutation
            yield from passes


class DeviceDER(DER):
    """Avalanche's DER/DER++ with the buffer and its logits on the device (fast data path only).

    The loss, the joint forward pass and the hooks are Avalanche's; only where the memory lives and
    how its minibatches are drawn change.
    """

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.device_buffer = DeviceLogitBuffer(self.mem_size)

    def _before_training_exp(self, **kwargs: Any) -> None:
        if len(self.device_buffer) >= self.batch_size_mem:
            self.replay_loader = self.device_buffer.batches(self.batch_size_mem, self.fast_augment)
        else:
            self.replay_loader = None
        super(DER, self)._before_training_exp(**kwargs)  # DER's own would build a DataLoader

    def _after_training_exp(self, **kwargs: Any) -> None:
        self.replay_loader = None
        self.device_buffer.update(*self._device_tensors()[:3], self._stored_logits)
        super(DER, self)._after_training_exp(**kwargs)

    @torch.no_grad()
    def _stored_logits(self, x: Tensor) -> Tensor:
        was_training = self.model.training
        self.model.eval()
        chunks = []
        for start in range(0, len(x), self.eval_mb_size):
            with autocast_like(self):
                chunks.append(self.model(x[start : start + self.eval_mb_size]).float())
        self.model.train(was_training)
        return torch.cat(chunks)


@register_strategy(
    "der",
    description="DER++: replay of logits and labels (Avalanche DER)",
    hparams=(
        HParam("mem_size", 200, "int", "buffer size in samples", low=1, high=10_000_000),
        HParam("der_alpha", 0.1, "float", "weight of the logit-matching term", low=0.0, high=1e6),
        HParam("der_beta", 0.5, "float", "weight of the buffered-label CE term (0 = DER)", low=0.0, high=1e6),
    ),
    scenarios=("class", "domain"),
)
def build(ctx, hp):
    return Parts(template=DeviceDER if ctx.fast_path else DER,
                 template_kwargs={"mem_size": hp["mem_size"], "alpha": hp["der_alpha"], "beta": hp["der_beta"]})
