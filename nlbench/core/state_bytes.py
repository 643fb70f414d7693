"""The bytes of a learner's own state, counted exactly: every tensor it holds, once, by storage.

The state of a method is what a checkpoint must hold to resume it (`nlbench.core.checkpoint`): the
model, the optimizer's `state_dict()`, the template's state (DER++'s buffer) and each plugin's state.
`state_bytes(strategy)` walks exactly that and sums the bytes of the tensors' storages, each storage
once (a view, a tied weight or a tensor reached twice counts once), into these categories, first come
first counted in this order:

- `parameters`: the model's parameters and registered buffers;
- `gradients`: the parameters' `.grad`;
- `clock`: the own state of a multi-clock optimizer (one with `clock_summary()`, the protocol the
  runner already reads): its gradient accumulators A_l (nl-math.md section 4.2); counted here, never
  again under `optimizer`;
- `optimizer`: every other tensor of the optimizer's `state_dict()` (Adam's moments and step counters,
  a clocked optimizer's base optimizers, Lookahead's slow weights, ...);
- `buffer`, `logits`, `other`: the template's and the plugins' state. Within it, a tensor under a key
  that names logits (`logits`, ...) counts as `logits` (DER++'s stored z_m); one under a key that names
  a rehearsal store (`groups`, `buffer`, `memory`, `storage_policy`, ...) counts as `buffer` (stored
  inputs, targets and task labels); anything else (EWC's Fishers and anchors, SI's importances, LwF's
  previous model, A-GEM's reference gradient) counts as `other`.

A plugin or template may classify itself instead with `state_bytes() -> dict[str, int]` (keys from
`CATEGORIES`); its numbers are then added as given. A plugin without a checkpoint state (`state_dict`
or an adapter) is walked attribute by attribute, under the same key rules; an Avalanche dataset met
there (the stock data path's rehearsal buffers) counts as its length times the bytes of one sample.

What is not counted: activations and the working copies a data loader joins for its minibatches
(replay's concatenated memory, DER++'s): they live for one experience and are not state. On a GPU
they are in the allocator's peak (`nlbench.core.cost_timing`). Python numbers (the clock's counters) are not
tensors and count nothing. The process's resident memory (RSS) is never used: it holds the
interpreter, the libraries and the data, and grows with a process's age.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch

CATEGORIES = ("parameters", "gradients", "optimizer", "clock", "buffer", "logits", "other")
_LOGIT_KEYS = ("logit",)
_BUFFER_KEYS = ("groups", "buffer", "memory", "storage_policy", "exemplar", "rehearsal", "replay")
_MAX_DEPTH = 12  # the fallback walk stops here (real plugin state is a few levels deep)


class _Ledger:
    """Bytes per category, each storage counted once (the first category that reaches it keeps it)."""

    def __init__(self) -> None:
        self.bytes = dict.fromkeys(CATEGORIES, 0)
        self._seen: set[tuple] = set()

    def add(self, tensor: torch.Tensor, category: str) -> None:
        key, size = _storage(tensor)
        if key not in self._seen:
            self._seen.add(key)
            self.bytes[category] += size

    def add_all(self, tensors: Iterator[tuple[tuple[str, ...], torch.Tensor]], category: str | None) -> None:
        """Add every tensor to `category`, or (None) to the category its keys name (`category_of`)."""
        for path, tensor in tensors:
            self.add(tensor, category or category_of(path))


def _storage(tensor: torch.Tensor) -> tuple[tuple, int]:
    """(identity, bytes) of the memory holding `tensor`: its whole storage, shared by its views."""
    try:
        storage = tensor.untyped_storage()
    except (RuntimeError, NotImplementedError):  # sparse and other storage-less layouts
        return ("tensor", id(tensor)), tensor.numel() * tensor.element_size()
    pointer = storage.data_ptr()
    if pointer == 0:  # empty (or meta) storage: nothing allocated
        return ("empty", id(storage)), 0
    return (tensor.device.type, tensor.device.index, pointer), storage.nbytes()


def category_of(path: tuple[str, ...]) -> str:
    """The category of a template or plugin state tensor found under the keys `path`."""
    names = [str(part).lower() for part in path]
    if any(key in name for name in names for key in _LOGIT_KEYS):
        return "logits"
    if any(key in name for name in names for key in _BUFFER_KEYS):
        return "buffer"
    return "other"


def _key(key: Any) -> str:
    """A dict key as a path element; an optimizer's state is keyed by the parameters themselves."""
    return str(key) if isinstance(key, (str, int)) else type(key).__name__


def tensors_in(value: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], torch.Tensor]]:
    """Every tensor in nested dicts, lists and tuples (a state dict), with the keys leading to it."""
    if isinstance(value, torch.Tensor):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from tensors_in(item, (*path, _key(key)))
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from tensors_in(item, path)


def _walk_object(value: Any, path: tuple[str, ...], seen: set[int],
                 depth: int = 0) -> Iterator[tuple[tuple[str, ...], Any]]:
    """The fallback for state without a checkpoint form: tensors (and datasets) reachable through
    attributes, containers and modules, each object visited once. Functions, classes, generators
    and data loaders are not state and are not entered."""
    import types

    if depth > _MAX_DEPTH or id(value) in seen:
        return
    seen.add(id(value))
    if isinstance(value, torch.Tensor):
        yield path, value
        return
    if isinstance(value, torch.nn.Module):
        for name, tensor in (*value.named_parameters(), *value.named_buffers()):
            yield (*path, name), tensor
        return
    kind = type(value)
    if isinstance(value, (torch.utils.data.DataLoader, type, types.ModuleType, types.FunctionType, types.MethodType,
                          str, bytes, int, float, bool, type(None))) or hasattr(kind, "__next__"):
        return  # loaders and iterators (generators included) are working state, not the method's
    if isinstance(value, torch.utils.data.Dataset) or (
            hasattr(kind, "__getitem__") and hasattr(kind, "__len__")
            and not isinstance(value, (dict, list, tuple, set, frozenset))):
        yield path, value  # a dataset (Avalanche's are not torch Datasets): counted by its samples
        return
    if isinstance(value, dict):
        items = [(_key(k), v) for k, v in value.items()]
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = [("", v) for v in value]
    else:
        attributes = getattr(value, "__dict__", None)
        items = list(attributes.items()) if isinstance(attributes, dict) else []
        for slot in getattr(type(value), "__slots__", ()):
            if hasattr(value, slot):
                items.append((slot, getattr(value, slot)))
    for key, item in items:
        yield from _walk_object(item, (*path, key) if key else path, seen, depth + 1)


def _dataset_bytes(dataset: Any) -> int:
    """A dataset's size as the tensors of one sample times its length (stock-path rehearsal buffers)."""
    try:
        n = len(dataset)
        sample = dataset[0] if n else ()
    except Exception:  # a dataset that cannot be indexed holds nothing this count can see
        return 0
    per_sample = sum(torch.as_tensor(part).numel() * torch.as_tensor(part).element_size()
                     for part in (sample if isinstance(sample, (list, tuple)) else (sample,))
                     if isinstance(part, (torch.Tensor, int, float)))
    return n * per_sample


def _add_declared(ledger: _Ledger, counts: dict[str, int], owner: Any) -> None:
    unknown = set(counts) - set(CATEGORIES)
    if unknown:
        raise ValueError(f"{type(owner).__name__}.state_bytes() returned unknown categories {sorted(unknown)}")
    for category, size in counts.items():
        ledger.bytes[category] += int(size)


def _add_fallback(ledger: _Ledger, owner: Any) -> None:
    for path, found in _walk_object(owner, (), set()):
        if isinstance(found, torch.Tensor):
            ledger.add(found, category_of(path))
        else:  # a dataset: its samples, not its storage (they may be views of the whole stream's data)
            ledger.bytes["logits" if category_of(path) == "logits" else "buffer"] += _dataset_bytes(found)


def state_bytes(strategy: Any, exclude: tuple = ()) -> dict[str, int]:
    """The learner's state in bytes per category of `CATEGORIES`, plus `total` (see the module
    docstring). `exclude`: plugins that are not the method's (the cost command's own timer)."""
    from nlbench.core.checkpoint import state_sources

    ledger = _Ledger()
    model, optimizer = strategy.model, strategy.optimizer
    for tensor in (*model.parameters(), *model.buffers()):
        ledger.add(tensor, "parameters")
    for p in model.parameters():
        if p.grad is not None:
            ledger.add(p.grad, "gradients")
    if callable(getattr(optimizer, "clock_summary", None)):
        ledger.add_all(tensors_in(list(optimizer.state.values())), "clock")
    ledger.add_all(tensors_in(optimizer.state_dict()), "optimizer")
    for owner, state in state_sources(strategy, exclude):
        declared = getattr(owner, "state_bytes", None)
        if callable(declared):
            _add_declared(ledger, declared(), owner)
        elif state is not None:
            ledger.add_all(tensors_in(state), None)
        else:
            _add_fallback(ledger, owner)
    counts = dict(ledger.bytes)
    counts["total"] = sum(counts.values())
    return counts
