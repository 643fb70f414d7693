"""Clock wiring: which clock level each trainable parameter of a model is on (nl-math.md 4.2, 5.1, 11 #6).

Source: A. Behrouz, M. Razaviyayn, P. Zhong, V. Mirrokni, "Nested Learning: The Illusion of Deep
Learning Architectures", arXiv:2512.24695 (NeurIPS 2025), §7.1 (CMS: level l has its own update
frequency); the clocked Transformer wiring and the geometric periods {1, 8, 64, 512} come from the S000
article (P. Chatterjee, "Nested Learning in Practice").

`wire_clocks(model, periods, by)` groups the parameters into ClockLevels (a period and its parameters),
fastest first; `nlbench.strategies.cms.clocks.ClockedOptimizer` then steps level l every C_l steps.
Modules declare their level with a `clock_level` attribute (CMSBlock, the Transformer's W_o and FFN,
HOPE's CMS); undeclared models are wired by depth.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from torch import Tensor, nn

from .hparams import DEFAULT_PERIODS

__all__ = ["ClockLevel", "wire_clocks"]


@dataclass
class ClockLevel:
    """One clock level: a period and the parameters it owns (with their qualified names)."""

    period: int
    params: list[Tensor]
    names: list[str] = field(default_factory=list)
    level: int = 0  # index into the periods this level was wired from


def _check_periods(periods: Sequence[int]) -> tuple[int, ...]:
    periods = tuple(periods)
    if not periods or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in periods):
        raise ValueError(f"periods must be a non-empty sequence of positive ints, got {periods!r}")
    return periods


def _param_owners(model: nn.Module) -> list[tuple[str, nn.Module, list[tuple[str, Tensor]]]]:
    """Modules that own trainable parameters directly, in registration order, with those parameters."""
    seen: set[int] = set()
    owners = []
    for mname, module in model.named_modules():
        own = []
        for pname, p in module.named_parameters(recurse=False):
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                own.append((f"{mname}.{pname}" if mname else pname, p))
        if own:
            owners.append((mname, module, own))
    return owners


def _is_head(module_name: str) -> bool:
    return "classifier" in module_name.split(".")


def _auto_levels(model: nn.Module) -> dict[str, int] | None:
    """Per parameter name, the `clock_level` of its nearest ancestor module that declares one (None
    when no module of the model declares a clock level)."""
    declared = {name: m.clock_level for name, m in model.named_modules() if getattr(m, "clock_level", None) is not None}
    if not declared:
        return None
    levels = {}
    for mname, _, own in _param_owners(model):
        level = 0
        parts = mname.split(".") if mname else []
        for i in range(len(parts), -1, -1):
            prefix = ".".join(parts[:i])
            if prefix in declared:
                level = declared[prefix]
                break
        for pname, _ in own:
            levels[pname] = int(level)
    return levels


def _depth_levels(model: nn.Module, k: int) -> dict[str, int]:
    """Relative depth of each parameter-owning module (input side = 0, last body module = 1) mapped to
    round(depth * (k - 1)); the head (`classifier`) is fast (level 0), as in nl-math.md 5.1."""
    owners = _param_owners(model)
    body = [o for o in owners if not _is_head(o[0])]
    levels = {}
    n = len(body)
    for i, (_, _, own) in enumerate(body):
        level = 0 if n == 1 else round(i * (k - 1) / (n - 1))
        for pname, _ in own:
            levels[pname] = level
    for mname, _, own in owners:
        if _is_head(mname):
            for pname, _ in own:
                levels[pname] = 0
    return levels


def wire_clocks(
    model: nn.Module,
    periods: Sequence[int] = DEFAULT_PERIODS,
    by: str | Mapping[str, int] | Callable[[str, Tensor], int] = "auto",
) -> list[ClockLevel]:
    """Assign every trainable parameter of `model` to a clock level; returns the non-empty levels,
    fastest level index first.

    `by`:
      * "depth": relative depth of the owning module, fastest at the input side (nl-math.md 11 #6);
        the head (`classifier`) is fast. With n body modules and K periods, module i gets level
        round(i (K-1) / (n-1)).
      * "auto" (default): the `clock_level` attribute of the nearest ancestor module (CMS blocks, the
        Transformer's W_o and FFN, HOPE's CMS declare one; undeclared parameters are level 0), or
        "depth" when no module declares one.
      * a mapping {fnmatch pattern on the parameter name: level index}, first match wins, unmatched
        parameters are level 0; e.g. {"*.attn.o.*": 1, "*.ffn.*": 2}.
      * a callable (name, parameter) -> level index.
    Level indices at or beyond len(periods) are clamped to the slowest level, so a model wired for
    K = 3 still runs with periods=1,8.
    """
    periods = _check_periods(periods)
    k = len(periods)
    names = {id(p): n for n, p in model.named_parameters()}
    params = [(names[id(p)], p) for p in model.parameters() if p.requires_grad]
    if isinstance(by, str):
        if by == "auto":
            table = _auto_levels(model)
            if table is None:
                table = _depth_levels(model, k)
        elif by == "depth":
            table = _depth_levels(model, k)
        else:
            raise ValueError(f"by must be 'auto', 'depth', a mapping or a callable, got {by!r}")
        assign = lambda name, p: table.get(name, 0)  # noqa: E731
    elif isinstance(by, Mapping):
        patterns = list(by.items())

        def assign(name: str, p: Tensor) -> int:
            for pattern, level in patterns:
                if fnmatch.fnmatchcase(name, pattern):
                    return level
            return 0
    elif callable(by):
        assign = by
    else:
        raise ValueError(f"by must be 'auto', 'depth', a mapping or a callable, got {by!r}")

    buckets: dict[int, ClockLevel] = {}
    for name, p in params:
        level = int(assign(name, p))
        if level < 0:
            raise ValueError(f"clock level of {name!r} must be >= 0, got {level}")
        level = min(level, k - 1)
        bucket = buckets.setdefault(level, ClockLevel(periods[level], [], [], level))
        bucket.params.append(p)
        bucket.names.append(name)
    return [buckets[i] for i in sorted(buckets)]
