"""The fast data path: device-resident tensors, minibatches by index permutation, GPU augmentation.

Avalanche's stock path builds every minibatch sample by sample through its dataset layers and a
DataLoader; on small models that costs more than the training step itself (avalanche#1074, #1280,
#1086). Here each experience's tensors are materialised once, moved to the device once, and every
epoch draws one permutation and slices it: no per-sample Python in the hot loop. Augmentation
(random crop with padding, horizontal flip) runs batched on the device.

`FastDataPath` is a template mixin: it overrides `make_train_dataloader` / `make_eval_dataloader`,
so every Avalanche hook and plugin still runs. Plugins that install their own dataloader (Avalanche's
ReplayPlugin) keep working on the stock path.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable, Iterator

import torch
from torch import Tensor

Augment = Callable[[Tensor], Tensor]

_MATERIALISED: "weakref.WeakKeyDictionary[Any, tuple[Tensor, ...]]" = weakref.WeakKeyDictionary()


def materialise(dataset: Any, batch_size: int = 2048) -> tuple[Tensor, ...]:
    """(x, y, t) of an Avalanche dataset as CPU tensors, read once through its eval transforms.

    Train-time augmentation is left out on purpose: it is applied per batch on the device. This is
    the general route (e.g. Cumulative's concatenated datasets); suites' own experiences carry their
    source tensors and skip it.
    """
    if dataset in _MATERIALISED:
        return _MATERIALISED[dataset]
    from torch.utils.data import DataLoader

    plain = dataset.eval() if hasattr(dataset, "eval") else dataset
    columns: list[list[Tensor]] = []
    for batch in DataLoader(plain, batch_size=batch_size, shuffle=False, collate_fn=getattr(plain, "collate_fn", None)):
        if not columns:
            columns = [[] for _ in batch]
        for column, value in zip(columns, batch):
            column.append(torch.as_tensor(value))
    tensors = tuple(torch.cat(column) for column in columns)
    _MATERIALISED[dataset] = tensors
    return tensors


def host_to_device(t: Tensor, device: torch.device) -> Tensor:
    """A small CPU tensor (indices, random draws) on `device`, without making the host wait.

    A blocking host-to-device copy synchronises the CUDA stream: done once per minibatch it would
    drain the GPU's queue of kernels every step and leave the GPU idle while Python launches the next
    step. Through pinned memory the copy is queued like a kernel (the caching host allocator keeps the
    pinned block until the copy has run). Draws stay on torch's CPU generator, so a seeded run draws
    the same numbers on every device.
    """
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


class TensorBatches:
    """Minibatches of device tensors, drawn by one index permutation per pass.

    The permutation comes from torch's global CPU generator, so a seeded run is reproducible and
    draws the same order on every device.
    """

    def __init__(self, tensors: tuple[Tensor, ...], batch_size: int, shuffle: bool, augment: Augment | None = None,
                 drop_last: bool = False):
        self.tensors = tensors
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment
        self.drop_last = drop_last

    def __len__(self) -> int:
        n = len(self.tensors[0])
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[list[Tensor]]:
        n = len(self.tensors[0])
        device = self.tensors[0].device
        order = host_to_device(torch.randperm(n) if self.shuffle else torch.arange(n), device)
        stop = n - self.batch_size + 1 if self.drop_last else n
        for start in range(0, stop, self.batch_size):
            index = order[start : start + self.batch_size]
            batch = [t.index_select(0, index) for t in self.tensors]
            if self.augment is not None:
                batch[0] = self.augment(batch[0])
            yield batch


def random_rows(tensors: tuple[Tensor, ...], k: int) -> tuple[Tensor, ...]:
    """The same k random rows of every tensor, drawn without replacement (all rows, shuffled, when
    k >= their number), on the tensors' device."""
    pick = host_to_device(torch.randperm(len(tensors[0]))[:k], tensors[0].device)
    return tuple(t.index_select(0, pick) for t in tensors)


class ReplayBatches:
    """Each minibatch of `current` concatenated with a minibatch of the same size from `memory`.

    The device-tensor form of Avalanche's ReplayDataLoader: memory minibatches walk a fresh
    permutation of the memory and start a new one when it runs out; both halves get the same
    augmentation.
    """

    def __init__(self, current: TensorBatches, memory: tuple[Tensor, ...]):
        self.current = current
        self.memory = memory

    def __len__(self) -> int:
        return len(self.current)

    def __iter__(self) -> Iterator[list[Tensor]]:
        size, device = len(self.memory[0]), self.memory[0].device
        order, cursor = host_to_device(torch.randperm(size), device), 0
        for batch in self.current:
            want = len(batch[0])
            take = []
            while want > 0:
                if cursor == size:
                    order, cursor = host_to_device(torch.randperm(size), device), 0
                step = min(want, size - cursor)
                take.append(order[cursor : cursor + step])
                cursor, want = cursor + step, want - step
            index = torch.cat(take)
            replayed = [t.index_select(0, index) for t in self.memory]
            if self.current.augment is not None:
                replayed[0] = self.current.augment(replayed[0])
            yield [torch.cat(pair) for pair in zip(batch, replayed)]


def random_crop_flip(x: Tensor, padding: int = 4) -> Tensor:
    """Batched random crop (zero padding `padding`) and horizontal flip of (B, C, H, W) images.

    Each image gets its own offsets and flip, drawn with torch's global generator on the CPU and
    applied by one gather on the device.
    """
    b, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (b,))
    dx = torch.randint(0, 2 * padding + 1, (b,))
    flip = torch.rand(b) < 0.5
    dy, dx, flip = host_to_device(torch.stack([dy, dx, flip.long()]), x.device)  # one queued copy per batch
    flip = flip.bool()
    rows = dy[:, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = dx[:, None] + torch.arange(w, device=x.device)  # (B, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    batch_index = torch.arange(b, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch_index, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous(memory_format=torch.contiguous_format)


class FastDataPath:
    """Template mixin: dataloaders over device-resident tensors (see the module docstring).

    `fast_augment` (set by the runner for suites that augment) is applied to training batches only;
    `channels_last` stores image tensors in the channels-last memory format once, on the device.
    """

    fast_augment: Augment | None = None
    channels_last: bool = False

    def _to_device(self, tensors: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        moved = [t.to(self.device, non_blocking=True) for t in tensors]
        if self.channels_last and moved[0].dim() == 4:
            moved[0] = moved[0].contiguous(memory_format=torch.channels_last)
        return tuple(moved)

    def _device_tensors(self) -> tuple[Tensor, ...]:
        """The current dataset's tensors on the device, moved there once per experience and device.

        nlbench's suites attach each experience's source tensors as `nlbench_tensors`; when the
        dataset being trained or evaluated is exactly that experience's data, those are used. Anything
        else (a cumulative concatenation) is materialised once.
        """
        experience = self.experience
        source = getattr(experience, "nlbench_tensors", None)
        if source is None or len(self.adapted_dataset) != len(source[0]):
            return self._to_device(materialise(self.adapted_dataset))
        cache = experience.__dict__.setdefault("_nlbench_device_tensors", {})
        key = (str(self.device), self.channels_last)
        if key not in cache:
            cache[key] = self._to_device(source)
        return cache[key]

    def make_train_dataloader(self, shuffle: bool = True, **kwargs: Any) -> None:
        self.dataloader = TensorBatches(self._device_tensors(), self.train_mb_size, shuffle, self.fast_augment)

    def make_eval_dataloader(self, **kwargs: Any) -> None:
        self.dataloader = TensorBatches(self._device_tensors(), self.eval_mb_size, shuffle=False)


class Autocast:
    """Template mixin: forward passes under bf16 autocast; logits come back in float32, so the loss,
    the CL plugins' penalties and the metrics are computed in full precision."""

    def forward(self) -> Tensor:
        with autocast_like(self):
            output = super().forward()
        return output.float()


def autocast_like(strategy: Any) -> torch.autocast:
    """The autocast context of `strategy`'s own forward (bf16 with the Autocast mixin, else off), for
    plugins that run the model themselves (A-GEM's reference gradient, DER's stored logits)."""
    return torch.autocast(device_type=strategy.device.type, dtype=torch.bfloat16, enabled=isinstance(strategy, Autocast))
