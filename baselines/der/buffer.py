"""The DER++ rehearsal buffer on the device (Buzzega et al., NeurIPS 2020, "Dark Experience for
General Continual Learning").

DER++ replays buffered samples x_m with the logits z_m the model gave them when they were stored:
alpha * ||f(x_m) - z_m||^2 + beta * CE(y_m, f(x_m)). `DeviceLogitBuffer` keeps (x, y, t, z) as device
tensors with Avalanche 0.6's class-balanced reservoir policy, so the fast data path draws its memory
minibatches without a DataLoader or a host copy.
"""

from __future__ import annotations

from typing import Callable, Iterator

import torch
from torch import Tensor

from nlbench.data.fastpath import Augment, TensorBatches, host_to_device


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

    def state_dict(self) -> dict:
        """The buffer's columns per class (logits and reservoir weights included), for checkpoints
        inside a run (nlbench.core.checkpoint)."""
        return {"max_size": self.max_size, "groups": {label: dict(group) for label, group in self.groups.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.max_size = state["max_size"]
        self.groups = {label: dict(group) for label, group in state["groups"].items()}

    def batches(self, batch_size: int, augment: Augment | None) -> Iterator[tuple[Tensor, Tensor, Tensor, Tensor]]:
        """Endless (x, y, t, logits) minibatches: Avalanche's shuffled, drop-last DataLoader, cycled.

        Buffered inputs are augmented like current ones: Avalanche's buffer holds the train-mode dataset.
        """
        columns = tuple(torch.cat([g[name] for g in self.groups.values()]) for name in self.COLUMNS[:4])
        passes = TensorBatches(columns, batch_size, shuffle=True, augment=augment, drop_last=True)
        while True:  # each pass draws a fresh permutation
            yield from passes
