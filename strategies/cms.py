"""Multi-clock training and the Continuum Memory System (CMS), as Avalanche strategies.

Source: A. Behrouz, M. Razaviyayn, P. Zhong, V. Mirrokni, "Nested Learning: The Illusion of Deep
Learning Architectures", arXiv:2512.24695 (NeurIPS 2025), §7.1 Eq 70-71 (CMS: a chain of MLP blocks,
block l updated every C_l steps with the SUM of the errors of its chunk). The clocked Transformer wiring
and the geometric periods {1, 8, 64, 512} come from the S000 article (P. Chatterjee, "Nested Learning
in Practice"). nlbench's definition is docs nl-math.md section 4 (and 5.1 for the Transformer).

Clock (nl-math.md §0): the global step s = 1, 2, 3, ... counts optimizer calls and is never reset at
experience boundaries. A level with period C is due when s mod C == 0, i.e. at s = C, 2C, 3C, ...
Every step, for every level l (g_l = gradient of the step's mean loss w.r.t. the level's parameters):

    A_l += g_l ; n_l += 1
    if s mod C_l == 0:
        ghat = A_l              (reduction="sum", the default, = Eq 71)
             | A_l / n_l        (reduction="mean")
        Opt_l.step(theta_l, ghat) ; A_l <- 0 ; n_l <- 0

Opt_l is a separate base optimizer per level (Adam by default, or whatever factory the composition
brings, e.g. DeepL2GD in `cms+deep-l2gd`), so its internal step counter counts LEVEL updates and a
parameter that is not due gets no update of any kind (no weight decay, no state change). The
accumulators A_l live in the optimizer state, outside `.grad` (Avalanche zeroes `.grad` every
iteration); the clock, the accumulators and every Opt_l state survive experience boundaries
(`flush_on_experience_end=True` applies the partial windows at the end of each experience instead).

Public objects:
    ClockedOptimizer(levels, base_factory, model=None, reduction="sum")   a torch.optim.Optimizer
    wire_clocks(model, periods=(1, 8, 64, 512), by="auto"|"depth"|{pattern: level}|callable)
    ClockLevel, CMSBlock, CMSSequential, CMSMLP, cms_resnet, cms_variant, replace_backbone,
    ClockFlush (plugin); strategies `cms` and `clocked-adam`.
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from avalanche.core import SupervisedPlugin
from torch import Tensor, nn

from nlbench.core.registry import HParam, Parts, register_strategy

__all__ = [
    "DEFAULT_PERIODS",
    "CLOCK_HPARAMS",
    "ClockLevel",
    "ClockedOptimizer",
    "ClockFlush",
    "CMSBlock",
    "CMSSequential",
    "CMSMLP",
    "clock_wrapper",
    "cms_resnet",
    "cms_variant",
    "replace_backbone",
    "unwrap_backbone",
    "wire_clocks",
]

DEFAULT_PERIODS: tuple[int, ...] = (1, 8, 64, 512)  # geometric, S000 §6 (nl-math.md 4.2)
STRATEGY_PERIODS: tuple[int, ...] = (1, 8, 64)  # K = 3 for short runs (nl-math.md 4.2/4.4)
REDUCTIONS = ("sum", "mean")


# ==================================================================================================
# Clock levels


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


# ==================================================================================================
# The clocked optimizer


class ClockedOptimizer(torch.optim.Optimizer):
    """One base optimizer per clock level, stepped only when its level is due (nl-math.md 4.2).

    Args:
        levels: ClockLevel objects (or (period, params) pairs); one param group each, with keys
            "period" and "level". Parameters must not repeat across levels.
        base_factory: `(model, params) -> torch.optim.Optimizer` over exactly `params` (or a subset),
            called once per level, and again for groups added later (`add_param_group`, e.g. task heads
            added by the runner's PersistentOptimizer; such a group gets period 1 unless it says).
        model: passed to the factory (DeepL2GD needs it to find its layers).
        reduction: "sum" (Eq 71, default) or "mean" of the window's gradients.

    State (all in `state_dict`): `state[p]["acc"]` the accumulated gradient of a parameter whose
    window is open; `state["clock"]` = {"step": s, "count": [n_l], "updates": [k_l]}; and the base
    optimizers' own state dicts under the key "bases".

    A level that is due with nothing accumulated (every period-1 level, always) steps its base
    optimizer on `.grad` as it is: with every period at 1 this is bitwise plain training. After a due
    step `.grad` of the level's parameters holds the gradient that was applied (the window's sum or
    mean); Avalanche clears it at the next iteration.
    """

    def __init__(
        self,
        levels: Iterable[ClockLevel | tuple[int, Iterable[Tensor]]],
        base_factory: Callable[[Any, Any], torch.optim.Optimizer],
        model: nn.Module | None = None,
        reduction: str = "sum",
    ) -> None:
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        groups = []
        for i, level in enumerate(levels):
            if isinstance(level, ClockLevel):
                groups.append({"params": list(level.params), "period": level.period, "level": level.level,
                               "names": list(level.names)})
            else:
                period, params = level
                groups.append({"params": list(params), "period": period, "level": i})
        if not groups:
            raise ValueError("ClockedOptimizer needs at least one level")
        self._base_factory = base_factory
        self._model = model
        self.reduction = reduction
        self.bases: list[torch.optim.Optimizer] = []
        self._synced_lr: list[Any] = []
        super().__init__(groups, {"period": 1, "level": None})

    # ---------------------------------------------------------------- construction

    @property
    def _clock(self) -> dict[str, Any]:
        clock = self.state.get("clock")
        if clock is None:
            clock = self.state["clock"] = {"step": 0, "count": [], "updates": []}
        return clock

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        period = param_group.get("period", 1)
        if isinstance(period, bool) or not isinstance(period, int) or period < 1:
            raise ValueError(f"a clock period must be a positive int, got {period!r}")
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        if group["level"] is None:
            group["level"] = len(self.param_groups) - 1
        base = self._base_factory(self._model, group["params"])
        mine = {id(p) for p in group["params"]}
        if any(id(p) not in mine for g in base.param_groups for p in g["params"]):
            raise ValueError("the base optimizer factory must optimize only the parameters it is given (a level's)")
        self.bases.append(base)
        # Mirror the base's learning rate so LR schedulers and plugins that read or write
        # param_groups[i]["lr"] (Avalanche's LRSchedulerPlugin, MIR) act on the level's optimizer.
        group["lr"] = base.param_groups[0].get("lr") if base.param_groups else None
        self._synced_lr.append(group["lr"])
        clock = self._clock
        clock["count"].append(0)
        clock["updates"].append(0)

    # ---------------------------------------------------------------- read-outs

    @property
    def global_step(self) -> int:
        """s: optimizer calls so far (never reset)."""
        return self._clock["step"]

    @property
    def periods(self) -> list[int]:
        return [g["period"] for g in self.param_groups]

    @property
    def level_updates(self) -> list[int]:
        """k_l: how many times each level's base optimizer has stepped."""
        return list(self._clock["updates"])

    @property
    def pending(self) -> list[int]:
        """n_l: steps accumulated in each level's open window."""
        return list(self._clock["count"])

    def clock_summary(self) -> dict[str, Any]:
        return {"global_step": self.global_step, "periods": self.periods, "updates": self.level_updates,
                "pending": self.pending, "reduction": self.reduction}

    # ---------------------------------------------------------------- stepping

    def _apply(self, index: int, count: int) -> None:
        """Put the window's gradient in `.grad` and step level `index`'s base optimizer."""
        mean = self.reduction == "mean" and count > 1
        for p in self.param_groups[index]["params"]:
            acc = self.state[p].pop("acc", None) if p in self.state else None
            if acc is None:  # no gradient in the whole window: the base optimizer skips p
                p.grad = None
                continue
            if mean:
                acc.div_(count)
            p.grad = acc
        self.bases[index].step()
        clock = self._clock
        clock["count"][index] = 0
        clock["updates"][index] += 1

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        clock = self._clock
        s = clock["step"] = clock["step"] + 1
        counts = clock["count"]
        for index, group in enumerate(self.param_groups):
            if group["lr"] != self._synced_lr[index]:  # someone (a scheduler) changed the level's lr
                self._sync_lr(index)
            due = s % group["period"] == 0
            count = counts[index]
            if due and count == 0:  # nothing pending: the step's own gradient, as is (bitwise plain)
                self.bases[index].step()
                clock["updates"][index] += 1
                continue
            for p in group["params"]:
                grad = p.grad
                if grad is None:
                    continue
                state = self.state[p]
                acc = state.get("acc")
                if acc is None:
                    state["acc"] = grad.detach().clone()
                else:
                    acc.add_(grad)
            count += 1
            if due:
                self._apply(index, count)
            else:
                counts[index] = count
        return loss

    def _sync_lr(self, index: int) -> None:
        lr = self.param_groups[index]["lr"]
        for base_group in self.bases[index].param_groups:
            base_group["lr"] = lr
        self._synced_lr[index] = lr

    @torch.no_grad()
    def flush(self) -> list[int]:
        """Apply every partial window now (without advancing s); returns the indices of the levels
        that stepped. Used by `flush_on_experience_end`."""
        flushed = []
        for index in range(len(self.param_groups)):
            count = self._clock["count"][index]
            if count > 0:
                self._apply(index, count)
                flushed.append(index)
        return flushed

    # ---------------------------------------------------------------- persistence

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["state"]["clock"] = copy.deepcopy(self._clock)
        sd["bases"] = [base.state_dict() for base in self.bases]
        sd["reduction"] = self.reduction
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        bases = state_dict.pop("bases")
        reduction = state_dict.pop("reduction", self.reduction)
        if len(bases) != len(self.bases):
            raise ValueError(f"state_dict has {len(bases)} clock levels, this optimizer has {len(self.bases)}")
        super().load_state_dict(state_dict)
        self.state["clock"] = copy.deepcopy(state_dict["state"]["clock"])
        self.reduction = reduction
        for base, base_sd in zip(self.bases, bases):
            base.load_state_dict(base_sd)
        self._synced_lr = [base.param_groups[0].get("lr") if base.param_groups else None for base in self.bases]

    def __repr__(self) -> str:
        levels = ", ".join(f"C={g['period']}:{sum(p.numel() for p in g['params'])}" for g in self.param_groups)
        return f"ClockedOptimizer(s={self.global_step}, levels=[{levels}], reduction={self.reduction}, base={type(self.bases[0]).__name__})"


class ClockFlush(SupervisedPlugin):
    """`flush_on_experience_end=True`: apply the partial windows at the end of every experience."""

    def after_training_exp(self, strategy: Any, **kwargs: Any) -> None:
        if isinstance(strategy.optimizer, ClockedOptimizer):
            strategy.optimizer.flush()


# ==================================================================================================
# CMS blocks


class CMSBlock(nn.Module):
    """One CMS memory block (nl-math.md 4.2): h + W2 GELU(W1 LN(h) + b1) + b2, on clock level `level`."""

    def __init__(self, dim: int, hidden: int, level: int = 0, norm: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        self.clock_level = level
        self.norm = nn.LayerNorm(dim) if norm else nn.Identity()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, h: Tensor) -> Tensor:  # (..., dim) -> (..., dim)
        return h + self.dropout(self.fc2(torch.nn.functional.gelu(self.fc1(self.norm(h)))))


class CMSSequential(nn.Sequential):
    """Chain of K CMSBlocks, block l on clock level l (fastest at the input side, nl-math.md 11 #6).

    `hidden` is one width for every block or one per block. Used as a model body (CMSMLP), as the FFN of
    the Transformer (`ffn="cms"`) and inside every HOPE block.
    """

    def __init__(self, dim: int, hidden: int | Sequence[int], levels: int = 3, norm: bool = True,
                 dropout: float = 0.0) -> None:
        if levels < 1:
            raise ValueError(f"CMSSequential needs at least one level, got {levels}")
        widths = [hidden] * levels if isinstance(hidden, int) else list(hidden)
        if len(widths) != levels or min(widths) < 1 or dim < 1:
            raise ValueError(f"CMSSequential needs {levels} positive hidden widths, got {hidden!r}")
        super().__init__(*[CMSBlock(dim, w, level=i, norm=norm, dropout=dropout) for i, w in enumerate(widths)])
        self.dim = dim
        self.levels = levels


@dataclass(frozen=True)
class CMSMLPConfig:
    input_dim: int
    n_classes: int = 10
    width: int = 400
    levels: int = 3
    expansion: float = 1.0  # hidden width of each CMS block = round(expansion * width)
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if min(self.input_dim, self.n_classes, self.width, self.levels) < 1 or self.expansion <= 0:
            raise ValueError(f"CMSMLPConfig needs positive sizes, got {self}")


class CMSMLP(nn.Module):
    """MLP-suite CMS backbone: Flatten -> Linear(input, width) -> GELU -> CMSSequential(width, K levels)
    -> LayerNorm -> `classifier`. The stem, the final norm and the head are on the fastest level."""

    def __init__(self, config: CMSMLPConfig) -> None:
        super().__init__()
        self.config = config
        self.stem = nn.Linear(config.input_dim, config.width)
        self.cms = CMSSequential(config.width, max(1, round(config.expansion * config.width)), config.levels,
                                 dropout=config.dropout)
        self.norm = nn.LayerNorm(config.width)
        self.classifier = nn.Linear(config.width, config.n_classes)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.nn.functional.gelu(self.stem(x.flatten(1)))  # (B, width)
        h = self.cms(h)  # (B, width)
        return self.classifier(self.norm(h))  # (B, n_classes)


def cms_resnet(model: nn.Module, levels: int) -> nn.Module:
    """CMS-clocked ResNet stages: stage i of 4 on level round(i (K-1) / 3); stem and head fast. In place."""
    stages = [getattr(model, f"layer{i}") for i in range(1, 5)]
    for i, stage in enumerate(stages):
        stage.clock_level = round(i * (levels - 1) / (len(stages) - 1)) if levels > 1 else 0
    return model


# ==================================================================================================
# Backbone surgery (the runner wraps backbones for the task scenario)


def unwrap_backbone(model: nn.Module) -> nn.Module:
    from nlbench.models.heads import MultiHeadNet, TaskMaskedNet

    return model.backbone if isinstance(model, (TaskMaskedNet, MultiHeadNet)) else model


def replace_backbone(model: nn.Module, backbone: nn.Module) -> nn.Module:
    """`model` with its backbone replaced, keeping the scenario wrapper (mask / multi-head)."""
    from nlbench.models.heads import MultiHeadNet, TaskMaskedNet

    if isinstance(model, TaskMaskedNet):
        model.backbone = backbone
        return model
    if isinstance(model, MultiHeadNet):
        return MultiHeadNet(backbone)
    return backbone


def cms_variant(backbone: nn.Module, levels: int) -> nn.Module:
    """The CMS version of a suite's default backbone (nl-math.md 4.2):
    MLP -> CMSMLP of the same width; ResNet-18 -> CMS-clocked stages; tiny Transformer -> CMS FFN;
    anything else (HOPE already has CMS; the small CNN) is returned as is (its clocks then come from
    `clock_level` attributes, or from depth)."""
    from nlbench.models.mlp import MLP
    from nlbench.models.resnet import ResNet18
    from nlbench.models.transformer import TinyTransformer

    if isinstance(backbone, MLP):
        c = backbone.config
        width = c.hidden[0] if c.hidden else c.input_dim
        return CMSMLP(CMSMLPConfig(input_dim=c.input_dim, n_classes=c.n_classes, width=width, levels=levels,
                                   dropout=c.dropout))
    if isinstance(backbone, ResNet18):
        return cms_resnet(backbone, levels)
    if isinstance(backbone, TinyTransformer):
        return TinyTransformer(backbone.config.with_cms(levels))
    return backbone


# ==================================================================================================
# Strategies


CLOCK_HPARAMS: tuple[HParam, ...] = (
    HParam("periods", STRATEGY_PERIODS, "ints", "clock periods C_1 < C_2 < ..., fastest first (one level each)",
           low=1, high=1_000_000, increasing=True),
    HParam("reduction", "sum", "str", "window gradient: sum (NL Eq 71) or mean", choices=REDUCTIONS),
    HParam("by", "auto", "str", "level assignment: auto (module clock levels, else depth) or depth",
           choices=("auto", "depth")),
    HParam("flush_on_experience_end", False, "bool", "apply partial windows at the end of each experience"),
)


def clock_wrapper(hp: Mapping[str, Any]) -> Callable[[nn.Module, Callable], ClockedOptimizer]:
    """The `optimizer_wrapper` of a clocked strategy: wire_clocks, then one base optimizer per level."""
    periods, by, reduction = tuple(hp["periods"]), hp["by"], hp["reduction"]

    def wrap(model: nn.Module, base_factory: Callable) -> ClockedOptimizer:
        return ClockedOptimizer(wire_clocks(model, periods, by=by), base_factory, model=model, reduction=reduction)

    return wrap


def clock_plugins(hp: Mapping[str, Any]) -> list:
    return [ClockFlush()] if hp["flush_on_experience_end"] else []


@register_strategy(
    "cms",
    description="Continuum Memory System: the suite's backbone as a chain of clocked MLP levels (NL §7.1)",
    hparams=CLOCK_HPARAMS,
    family="nested-learning",
    wraps_optimizer=True,
)
def build_cms(ctx, hp):
    levels = len(hp["periods"])

    def transform(model: nn.Module) -> nn.Module:
        return replace_backbone(model, cms_variant(unwrap_backbone(model), levels))

    return Parts(plugins=clock_plugins(hp), optimizer_wrapper=clock_wrapper(hp), model_transform=transform)


@register_strategy(
    "clocked-adam",
    description="the suite's default backbone, unchanged, with multi-clock updates (one base optimizer per level)",
    hparams=CLOCK_HPARAMS,
    family="nested-learning",
    wraps_optimizer=True,
)
def build_clocked(ctx, hp):
    return Parts(plugins=clock_plugins(hp), optimizer_wrapper=clock_wrapper(hp))

