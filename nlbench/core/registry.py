"""One registry for every strategy: baselines and Nested Learning methods alike.

A strategy file registers a builder with `@register_strategy(name, hparams=...)`. The builder receives a
`BuildContext` (spec, suite metadata, backbone) and its resolved hyperparameters and returns `Parts`:
the pieces of an Avalanche strategy (plugins, an optimizer factory, optionally a template class and a
model transform). Strategies compose with `+`: `deep-l2gd+replay` merges the parts of both, so a
method never has to know which CL plugin it is combined with. Adding a method touches one file.

Discovery imports every top-level module or package of `baselines/` and `strategies/` (names starting
with `_` are skipped; a package's sub-modules are not imported). Those registration modules import no
torch, numpy or Avalanche at import time: the builders import the method's heavy modules in their bodies.
So listing strategies and validating a spec (names, hyperparameters, composition) need no torch, and bad
input is answered at once; `tests/test_layers.py` checks it.
"""

from __future__ import annotations

import importlib
import math
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from nlbench.errors import UserError, exact_float

# --------------------------------------------------------------------------------------------------
# Hyperparameters


@dataclass(frozen=True)
class HParam:
    """A declared hyperparameter: sweeps and the CLI validate values against it.

    `kind` is one of "float", "int", "bool", "str", "ints" (a tuple of positive ints such as clock
    periods, written `1,8,64`). With `relative`, an "ints" value may also hold tokens relative to the
    experience length (`1,e/8,e`: `nlbench.core.periods`), resolved to integers with the spec.
    """

    name: str
    default: Any
    kind: str
    help: str = ""
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] | None = None
    increasing: bool = False  # for "ints": values must be strictly increasing (e.g. clock periods)
    relative: bool = False  # for "ints": tokens like e/8, e, 2e (experience lengths) are allowed

    def describe(self) -> str:
        if self.choices:
            return f"one of {', '.join(self.choices)}"
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        what = {"float": "a number", "int": "an integer", "bool": "true/false", "str": "text",
                "ints": "comma-separated integers" + (" or experience lengths (e/8, e, 2e)" if self.relative else "")}[self.kind]
        return what if self.kind in ("bool", "str") else f"{what} in [{lo}, {hi}]"

    def parse(self, text: str) -> Any:
        """Parse a value written on the command line or in a sweep file; raise UserError if invalid."""
        text = str(text).strip()
        try:
            if self.kind == "float":
                value: Any = exact_float(text, f"{self.name}=")
            elif self.kind == "int":
                value = int(text)
            elif self.kind == "bool":
                lowered = text.lower()
                if lowered not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(text)
                value = lowered in ("true", "1", "yes")
            elif self.kind == "ints":
                value = tuple(self._int_token(part) for part in text.split(","))
            else:
                value = text
        except ValueError:
            raise UserError(f"{self.name}={text!r} is not valid: expected {self.describe()}") from None
        return self.validate(value)

    def _int_token(self, part: str) -> Any:
        """An int, or (with `relative`) the canonical relative token; ValueError otherwise."""
        if self.relative:
            from nlbench.core.periods import canonical_token

            token = canonical_token(part)
            if token is not None:
                return token
        return int(part)

    def validate(self, value: Any) -> Any:
        """Check a typed value against kind, range and choices; return it normalised."""
        bad = UserError(f"{self.name}={value!r} is not valid: expected {self.describe()}")
        if self.kind == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise bad
            value = float(value)
        elif self.kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise bad
        elif self.kind == "bool":
            if not isinstance(value, bool):
                raise bad
        elif self.kind == "ints":
            if isinstance(value, int) and not isinstance(value, bool):
                value = (value,)
            if self.relative and isinstance(value, (tuple, list)):
                from nlbench.core.periods import canonical_token

                value = tuple(canonical_token(v) or v if isinstance(v, str) else v for v in value)
            if not isinstance(value, (tuple, list)) or not value or not all(
                (isinstance(v, int) and not isinstance(v, bool)) or (self.relative and isinstance(v, str) and canonical_token(v))
                for v in value
            ):
                raise bad
            value = tuple(value)
            absolute = [v for v in value if isinstance(v, int)]
            if self.increasing and any(b <= a for a, b in zip(absolute, absolute[1:])):
                raise UserError(f"{self.name}={','.join(map(str, value))} is not valid: values must be strictly increasing")
        elif self.kind == "str":
            if not isinstance(value, str):
                raise bad
        if self.choices is not None and value not in self.choices:
            raise bad
        numbers = tuple(v for v in value if not isinstance(v, str)) if isinstance(value, tuple) else (value,)
        if self.kind in ("float", "int", "ints"):
            for number in numbers:
                if (self.low is not None and number < self.low) or (self.high is not None and number > self.high):
                    raise bad
        return value


# --------------------------------------------------------------------------------------------------
# What a builder gets and returns


@dataclass
class BuildContext:
    """What a strategy builder may look at: the run spec, the suite's metadata and the backbone."""

    spec: Any  # nlbench.core.spec.RunSpec
    suite: Any  # nlbench.data.suites.SuiteInfo
    model: Any  # torch.nn.Module, already on the device
    device: Any  # torch.device

    @property
    def fast_path(self) -> bool:
        """Whether the run takes the fast data path (device-resident tensors, nlbench.data.fastpath): image
        suites unless `--data-path avalanche`. Rehearsal memories then live on the device too."""
        return self.spec.data_path == "fast" and self.suite.kind == "image"


@dataclass
class Parts:
    """Pieces of an Avalanche strategy contributed by one registered strategy.

    - `plugins`: Avalanche plugins (CL behaviour lives here).
    - `optimizer`: a factory `(model, params) -> torch.optim.Optimizer` over `params` (None: every
      trainable parameter of `model`); at most one part of a composition sets it.
    - `optimizer_wrapper`: `(model, factory) -> Optimizer` that builds the final optimizer from the
      base factory, e.g. one base optimizer per clock level (CMS); at most one part sets it.
    - `template`: an Avalanche template class (e.g. DER, Cumulative); at most one part sets it.
    - `template_kwargs`: extra constructor arguments for that template.
    - `model_transform`: `model -> model` applied before the optimizer is built (e.g. wiring clocks).
    """

    plugins: list = field(default_factory=list)
    optimizer: Callable[[Any, Any], Any] | None = None
    optimizer_wrapper: Callable[[Any, Callable[[Any, Any], Any]], Any] | None = None
    template: type | None = None
    template_kwargs: dict = field(default_factory=dict)
    model_transform: Callable[[Any], Any] | None = None


Builder = Callable[[BuildContext, Mapping[str, Any]], Parts]


@dataclass(frozen=True)
class StrategyInfo:
    name: str
    build: Builder
    description: str
    hparams: tuple[HParam, ...]
    family: str  # "baseline" or "nested-learning"
    provides_optimizer: bool
    wraps_optimizer: bool
    scenarios: tuple[str, ...] | None  # None: every scenario
    backbones: tuple[str, ...] | None = None  # None: every backbone

    @property
    def defaults(self) -> dict[str, Any]:
        return {h.name: h.default for h in self.hparams}


_REGISTRY: dict[str, StrategyInfo] = {}

# Used when no part of a composition brings its own optimizer (e.g. `replay` alone): plain
# fine-tuning with Adam, the same optimizer the `adam` baseline uses, so plugin-only methods are
# compared on equal footing.
OPTIMIZER_HPARAMS: tuple[HParam, ...] = (
    HParam("optimizer", "adam", "str", "base optimizer", choices=("adam", "sgd")),
    HParam("lr", 1e-3, "float", "learning rate", low=0.0, high=10.0),
    HParam("momentum", 0.0, "float", "SGD momentum", low=0.0, high=0.999),
    HParam("weight_decay", 0.0, "float", "L2 weight decay", low=0.0, high=1.0),
)


def trainable(model: Any, params: Any = None) -> list:
    """`params` as a list, or every trainable parameter of `model` when it is None."""
    return [p for p in model.parameters() if p.requires_grad] if params is None else list(params)


def make_default_optimizer(model: Any, params: Any, hp: Mapping[str, Any]) -> Any:
    import torch

    params = trainable(model, params)
    if hp["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=hp["lr"], momentum=hp["momentum"], weight_decay=hp["weight_decay"])
    return torch.optim.Adam(params, lr=hp["lr"], weight_decay=hp["weight_decay"])


def register_strategy(
    name: str,
    *,
    description: str,
    hparams: Sequence[HParam] = (),
    family: str = "baseline",
    provides_optimizer: bool = False,
    wraps_optimizer: bool = False,
    scenarios: Sequence[str] | None = None,
    backbones: Sequence[str] | None = None,
) -> Callable[[Builder], Builder]:
    """Register a strategy builder under `name` (lower-case, no `+`)."""
    if "+" in name or name != name.lower():
        raise ValueError(f"invalid strategy name {name!r}")

    def decorator(build: Builder) -> Builder:
        if name in _REGISTRY and _REGISTRY[name].build is not build:
            raise ValueError(f"strategy {name!r} registered twice")
        _REGISTRY[name] = StrategyInfo(
            name, build, description, tuple(hparams), family, provides_optimizer, wraps_optimizer,
            tuple(scenarios) if scenarios else None, tuple(backbones) if backbones else None,
        )
        return build

    return decorator


def _load_all() -> None:
    """Import every module of nlbench.baselines and nlbench.strategies (they register on import)."""
    for package_name in ("nlbench.baselines", "nlbench.strategies"):
        package = importlib.import_module(package_name)
        for module in pkgutil.iter_modules(package.__path__):
            if not module.name.startswith("_"):
                importlib.import_module(f"{package_name}.{module.name}")


def strategies() -> dict[str, StrategyInfo]:
    """Every registered strategy by name (imports the strategy packages on first call)."""
    _load_all()
    return dict(sorted(_REGISTRY.items()))


def components(name: str) -> list[StrategyInfo]:
    """The registered strategies that make up a (possibly composite) name like `cms+replay`."""
    known = strategies()
    parts = [p.strip() for p in name.split("+")]
    for part in parts:
        if part not in known:
            raise UserError(f"unknown strategy {part!r}; valid: {', '.join(known)} (combine with '+')")
    if len(set(parts)) != len(parts):
        raise UserError(f"strategy {name!r} repeats a component")
    if sum(info.provides_optimizer for info in (known[p] for p in parts)) > 1:
        raise UserError(f"strategy {name!r} combines two optimizers; combine at most one optimizer with plugins")
    if sum(info.wraps_optimizer for info in (known[p] for p in parts)) > 1:
        raise UserError(f"strategy {name!r} combines two clock wrappers; use at most one")
    return [known[p] for p in parts]


def check_scenario(name: str, scenario: str) -> None:
    """Raise UserError when a component of `name` cannot run in `scenario`."""
    for info in components(name):
        if info.scenarios is not None and scenario not in info.scenarios:
            raise UserError(f"strategy {info.name!r} does not support the {scenario!r} scenario; it supports: {', '.join(info.scenarios)}")


def check_backbone(name: str, backbone: str) -> None:
    """Raise UserError when a component of `name` cannot build on `backbone`."""
    for info in components(name):
        if info.backbones is not None and backbone not in info.backbones:
            raise UserError(f"strategy {info.name!r} does not support the {backbone!r} backbone; it supports: {', '.join(info.backbones)}")


def declared_hparams(name: str) -> dict[str, HParam]:
    """Every hyperparameter a (composite) strategy accepts; the first component wins on shared keys."""
    infos = components(name)
    declared: dict[str, HParam] = {}
    for info in infos:
        for hparam in info.hparams:
            declared.setdefault(hparam.name, hparam)
    if not any(info.provides_optimizer for info in infos):
        for hparam in OPTIMIZER_HPARAMS:
            declared.setdefault(hparam.name, hparam)
    return declared


def overrides_by_strategy(names: Sequence[str], overrides: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each strategy's share of `overrides`: a key applies to the strategies that declare it, so
    `--hp mem_size=500` can go with a list of strategies; a key that none declares is a UserError."""
    declared = {n: declared_hparams(n) for n in names}
    valid = sorted({k for keys in declared.values() for k in keys})
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise UserError(f"unknown hyperparameter {unknown[0]!r} for {', '.join(names)}; valid: {', '.join(valid)}")
    return {n: {k: v for k, v in overrides.items() if k in declared[n]} for n in names}


def has_clock_levels(name: str) -> bool:
    """Whether a (composite) strategy trains with clock levels (`--probes` measures them): one of its
    components declares clock `periods` (cms, clocked-adam, hope and their controls)."""
    return "periods" in declared_hparams(name)


def probe_targets(names: Sequence[str]) -> tuple[list[str], list[str]]:
    """`--probes` over `names`: (the strategies with clock levels, those without). Raises UserError when
    none has clock levels: the probes would measure nothing."""
    clocked = [name for name in names if has_clock_levels(name)]
    unclocked = [name for name in names if name not in clocked]
    if not clocked:
        which = "has" if len(unclocked) == 1 else "have"
        known = ", ".join(n for n in strategies() if has_clock_levels(n))
        raise UserError(f"--probes: {', '.join(unclocked)} {which} no clock levels to probe; strategies with clock "
                        f"levels: {known} (and their compositions, e.g. cms+replay)")
    return clocked, unclocked


def probes_note(unclocked: Sequence[str]) -> str:
    """The line that says which strategies run without `--probes`."""
    return f"--probes: {', '.join(unclocked)} {'has' if len(unclocked) == 1 else 'have'} no clock levels to probe; " \
           "run without probes"


def resolve_hparams(name: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults filled in and overrides validated; unknown keys raise UserError naming the valid ones."""
    declared = declared_hparams(name)
    unknown = sorted(set(overrides) - set(declared))
    if unknown:
        raise UserError(
            f"unknown hyperparameter {unknown[0]!r} for strategy {name!r}; valid: {', '.join(sorted(declared))}"
        )
    resolved = {key: hparam.default for key, hparam in declared.items()}
    for key, value in overrides.items():
        hparam = declared[key]
        resolved[key] = hparam.parse(value) if isinstance(value, str) and hparam.kind != "str" else hparam.validate(value)
    return resolved


def build_parts(name: str, ctx: BuildContext, hp: Mapping[str, Any]) -> Parts:
    """Merge the parts of every component of `name` into one."""
    merged = Parts()
    for info in components(name):
        part = info.build(ctx, hp)
        merged.plugins.extend(part.plugins)
        if part.optimizer is not None:
            merged.optimizer = part.optimizer
        if part.optimizer_wrapper is not None:
            merged.optimizer_wrapper = part.optimizer_wrapper
        if part.template is not None:
            if merged.template is not None:
                raise UserError(f"strategy {name!r} combines two training loops ({merged.template.__name__}, {part.template.__name__})")
            merged.template = part.template
            merged.template_kwargs.update(part.template_kwargs)
        if part.model_transform is not None:
            previous = merged.model_transform
            merged.model_transform = part.model_transform if previous is None else (
                lambda model, first=previous, second=part.model_transform: second(first(model))
            )
    if merged.optimizer is None:
        merged.optimizer = lambda model, params=None: make_default_optimizer(model, params, hp)
    return merged


def assemble_optimizer(parts: Parts, model: Any) -> Any:
    """The strategy's optimizer: the base factory over every parameter, or the wrapper around it."""
    if parts.optimizer_wrapper is not None:
        return parts.optimizer_wrapper(model, parts.optimizer)
    return parts.optimizer(model, None)
