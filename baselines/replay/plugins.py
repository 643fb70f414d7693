"""The two Experience Replay plugins (Chaudhry et al., 2019 "On Tiny Episodic Memories"): each training
minibatch is joined by a minibatch of the same size drawn from a buffer of `mem_size` past samples.

`BufferedReplay` is Avalanche's ReplayPlugin for the stock data path; `DeviceReplay` keeps the buffer
as device tensors for the fast data path.
"""

from __future__ import annotations

import torch
from avalanche.core import SupervisedPlugin
from avalanche.training.plugins import ReplayPlugin

from nlbench.data.fastpath import ReplayBatches, TensorBatches, random_rows


class BufferedReplay(ReplayPlugin):
    """Avalanche's ReplayPlugin, updating its buffer through `post_adapt`, which is exactly what the
    deprecated `storage_policy.update` does in 0.6; that wrapper re-arms a DeprecationWarning filter
    on every call and prints the warning once per experience."""

    def after_training_exp(self, strategy, **kwargs):
        self.storage_policy.post_adapt(strategy, strategy.experience)


class DeviceReplay(SupervisedPlugin):
    """Replay for the fast data path: the buffer is device tensors, batches are concatenated on the device.

    Same policy as Avalanche's default for ReplayPlugin (an experience-balanced buffer): after each
    experience, every past experience keeps mem_size // (experiences seen) of its samples, the newest
    a random subset of that size; each training minibatch is joined by a memory minibatch of the
    same size.
    """

    def __init__(self, mem_size: int):
        super().__init__()
        self.mem_size = mem_size
        self.groups: list[tuple[torch.Tensor, ...]] = []  # one (x, y, t) per past experience

    def before_training_exp(self, strategy, **kwargs):
        if self.groups and isinstance(strategy.dataloader, TensorBatches):
            memory = tuple(torch.cat(column) for column in zip(*self.groups))
            strategy.dataloader = ReplayBatches(strategy.dataloader, memory)

    def after_training_exp(self, strategy, **kwargs):
        current = strategy._device_tensors()
        keep = self.mem_size // (len(self.groups) + 1)
        self.groups = [tuple(t[:keep] for t in group) for group in self.groups]  # groups are stored shuffled
        self.groups.append(random_rows(current, keep))

    def state_dict(self) -> dict:
        """The buffer, for checkpoints inside a run (nlbench.core.checkpoint)."""
        return {"groups": [list(group) for group in self.groups]}

    def load_state_dict(self, state: dict) -> None:
        self.groups = [tuple(group) for group in state["groups"]]
