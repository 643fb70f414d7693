"""The two Experience Replay plugins (Chaudhry et al., 2019 "On Tiny Episodic Memories"): each training
minibatch is joined by a minibatch drawn from a buffer of `mem_size` past samples, of the same size or
of `mem_batch` samples when that is set.

`BufferedReplay` is Avalanche's ReplayPlugin for the stock data path; `DeviceReplay` keeps the buffer
as device tensors for the fast data path.
"""

from __future__ import annotations

import torch
from avalanche.core import SupervisedPlugin
from avalanche.training.plugins import ReplayPlugin

from nlbench.data.fastpath import ReplayBatches, TensorBatches, host_to_device, random_rows


class BufferedReplay(ReplayPlugin):
    """Avalanche's ReplayPlugin, updating its buffer through `post_adapt`, which is exactly what the
    deprecated `storage_policy.update` does in 0.6; that wrapper re-arms a DeprecationWarning filter
    on every call and prints the warning once per experience."""

    def after_training_exp(self, strategy, **kwargs):
        self.storage_policy.post_adapt(strategy, strategy.experience)


class SizedReplayBatches(ReplayBatches):
    """`ReplayBatches` with a memory minibatch of `mem_batch` samples whatever the current batch's size.

    Each training step draws a fresh random subset of min(mem_batch, memory size) memory samples,
    without replacement, as Mammoth's `Buffer.get_data` does (Buzzega et al. 2020): no sample twice
    in one minibatch, and a memory smaller than `mem_batch` is replayed whole at every step.
    """

    def __init__(self, current: TensorBatches, memory: tuple[torch.Tensor, ...], mem_batch: int):
        super().__init__(current, memory)
        self.mem_batch = int(mem_batch)

    def __iter__(self):
        size, device = len(self.memory[0]), self.memory[0].device
        take = min(self.mem_batch, size)
        for batch in self.current:
            index = host_to_device(torch.randperm(size)[:take], device)
            replayed = [t.index_select(0, index) for t in self.memory]
            if self.current.augment is not None:
                replayed[0] = self.current.augment(replayed[0])
            yield [torch.cat(pair) for pair in zip(batch, replayed)]


class DeviceReplay(SupervisedPlugin):
    """Replay for the fast data path: the buffer is device tensors, batches are concatenated on the device.

    Same policy as Avalanche's default for ReplayPlugin (an experience-balanced buffer): after each
    experience, every past experience keeps mem_size // (experiences seen) of its samples, the newest
    a random subset of that size; each training minibatch is joined by a memory minibatch of the
    same size, or of `mem_batch` samples when that is positive (at most the whole memory).
    """

    def __init__(self, mem_size: int, mem_batch: int = 0):
        super().__init__()
        self.mem_size = mem_size
        self.mem_batch = int(mem_batch)
        self.groups: list[tuple[torch.Tensor, ...]] = []  # one (x, y, t) per past experience

    def before_training_exp(self, strategy, **kwargs):
        if self.groups and isinstance(strategy.dataloader, TensorBatches):
            memory = tuple(torch.cat(column) for column in zip(*self.groups))
            strategy.dataloader = (SizedReplayBatches(strategy.dataloader, memory, self.mem_batch) if self.mem_batch
                                   else ReplayBatches(strategy.dataloader, memory))

    def after_training_exp(self, strategy, **kwargs):
        current = strategy._device_tensors()
        keep = self.mem_size // (len(self.groups) + 1)
        # Groups are stored shuffled, so the first rows are a random subset; cloned, because a slice would keep
        # the group's whole old storage alive (mem_size x (1 + 1/2 + ... + 1/n) rows after n experiences).
        self.groups = [tuple(t[:keep].clone() for t in group) for group in self.groups]
        self.groups.append(random_rows(current, keep))

    def state_dict(self) -> dict:
        """The buffer, for checkpoints inside a run (nlbench.core.checkpoint)."""
        return {"groups": [list(group) for group in self.groups]}

    def load_state_dict(self, state: dict) -> None:
        self.groups = [tuple(group) for group in state["groups"]]
