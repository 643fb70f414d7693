"""`DeviceDER`: Avalanche's DER++ template (Buzzega et al., NeurIPS 2020) on the fast data path.

Loss: CE(current) + alpha * ||f(x_m) - z_m||^2 + beta * CE(y_m, f(x_m)) on a buffer minibatch
(x_m, y_m, z_m), z_m the logits stored with x_m. Avalanche computes all of it; this subclass only
moves the buffer onto the device (`DeviceLogitBuffer`) and draws its minibatches from there.
"""

from __future__ import annotations

from typing import Any

import torch
from avalanche.training import DER
from torch import Tensor

from .buffer import DeviceLogitBuffer
from nlbench.data.fastpath import autocast_like


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
