"""Published protocol presets: what `--protocol NAME` pins for each method.

A *protocol preset* pins what a paper fixed: suite, scenario, backbone, epochs, batch size and, per
method, the optimizer, learning rate, buffer size and method hyperparameters. `nlbench run --protocol
NAME` applies `protocol_overrides(...)` and stores NAME in the run's spec; `nlbench report` then puts
the run beside the paper's number and says, with `protocol_matches(...)`, whether the two are
comparable. A run is only called comparable when it was made under the preset that reproduces the
published row's source, and its backbone, epochs, batch size, buffer size, number of experiences and
hyperparameters are the preset's.

The published numbers themselves, and the verdict `protocol_matches`, live in
`nlbench.commands.report.published`.

Importing this module is cheap (stdlib only); pandas and the model configs are imported inside the
functions that need them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from nlbench.errors import UserError

__all__ = [
    "MethodSettings",
    "Protocol",
    "PROTOCOLS",
    "get_protocol",
    "protocol_overrides",
    "backbone_descriptor",
    "run_buffer_size",
]



# --------------------------------------------------------------------------------------------------
# Protocol presets


@dataclass(frozen=True)
class MethodSettings:
    """How one published method is run under a protocol: an nlbench strategy plus pinned hparams.

    `verified` is True when every value was found in the authors' own code (and not contradicted by
    another of their sources); otherwise `note` says what is uncertain, and the report prints it.
    """

    strategy: str  # nlbench registry name
    method: str  # the method's name in published.csv
    buffer_size: int  # total buffer in samples; 0 = no buffer
    hparams: Mapping[str, Any]
    verified: bool
    source: str
    note: str = ""


@dataclass(frozen=True)
class Protocol:
    name: str
    title: str
    citation: str
    suite: str
    scenarios: tuple[str, ...]
    backbone: str  # nlbench backbone name
    epochs: int
    batch_size: int
    buffer_sizes: tuple[int, ...]
    methods: tuple[MethodSettings, ...]
    notes: tuple[str, ...] = field(default=())

    @property
    def strategies(self) -> list[str]:
        return sorted({m.strategy for m in self.methods})


_BEST_ARGS = "aimagelab/mammoth utils/best_args.py, 'seq-cifar10' (commit 0d727a7)"
_SGD = {"optimizer": "sgd", "momentum": 0.0, "weight_decay": 0.0}  # Mammoth: optim_mom=0, optim_wd=0


def _per_buffer(strategy: str, method: str, make: Any, **kw: Any) -> tuple[MethodSettings, ...]:
    return tuple(MethodSettings(strategy, method, b, make(b), **kw) for b in (200, 500, 5120))


_DERPP_WEIGHTS = {200: (0.1, 0.5), 500: (0.2, 0.5), 5120: (0.1, 1.0)}  # (alpha, beta) per buffer size

DER2020 = Protocol(
    name="der2020",
    title="DER/DER++ protocol on Seq-CIFAR-10 (Class-IL)",
    citation="Buzzega et al., 'Dark Experience for General Continual Learning: a Strong, Simple Baseline', "
    "NeurIPS 2020 (arXiv 2004.07211), Table 2; code and best hyperparameters: aimagelab/mammoth",
    suite="split-cifar10",
    scenarios=("class",),
    # Mammoth's seq-cifar10 backbone is `resnet18(nclasses)` = ResNet(BasicBlock, [2, 2, 2, 2], nf=64):
    # the full-width ResNet-18 with a CIFAR stem (~11M parameters), which is nlbench's `resnet18`.
    # It is NOT GEM's reduced ResNet-18 (nf=20, nlbench's `reduced-resnet18`, the split-cifar10 suite
    # default); published.csv says "ResNet-18 (from scratch)" for every Table 2 row.
    backbone="resnet18",
    epochs=50,
    batch_size=32,
    buffer_sizes=(200, 500, 5120),
    methods=(
        MethodSettings("sgd", "SGD (fine-tune)", 0, {"lr": 0.1, "momentum": 0.0, "weight_decay": 0.0}, True, _BEST_ARGS),
        MethodSettings(
            "ewc", "oEWC", 0,
            {**_SGD, "lr": 0.03, "ewc_mode": "online", "ewc_lambda": 10.0, "decay_factor": 1.0},
            False, _BEST_ARGS,
            "best_args.py gives lr 0.03, e_lambda 10, gamma 1, but Mammoth's scripts/reproduce.json target "
            "runs ewc_on with lr 0.1; and Mammoth's Fisher is a per-sample, p(y|x)-weighted estimate while "
            "Avalanche's online EWC squares minibatch gradients, so lambda=10 is not on the same scale",
        ),
        MethodSettings(
            "si", "SI", 0, {**_SGD, "lr": 0.03, "si_lambda": 0.5, "xi": 1.0}, True, _BEST_ARGS,
            "c -> si_lambda, xi -> xi; nlbench's SI clips negative importances to 0 (Mammoth does not)",
        ),
        MethodSettings(
            "lwf", "LwF", 0,
            {**_SGD, "lr": 0.01, "weight_decay": 0.0005, "lwf_alpha": 3.0, "temperature": 2.0},
            False, _BEST_ARGS,
            "best_args.py gives lr 0.01, alpha 3, T 2, wd 5e-4, but Mammoth's reproduce.json target (19.61, "
            "the Table 2 value) runs lr 0.03; Mammoth's LwF and Avalanche's LwFPlugin also differ in how "
            "they distill",
        ),
        *_per_buffer(
            "replay", "ER", lambda b: {**_SGD, "lr": 0.1, "mem_size": b}, verified=True, source=_BEST_ARGS,
            note="Mammoth's ER fills its buffer by reservoir sampling, Avalanche's ReplayPlugin keeps an "
            "experience-balanced buffer; memory batch = current batch (32) in both",
        ),
        *_per_buffer(
            "agem", "A-GEM", lambda b: {**_SGD, "lr": 0.03, "patterns_per_exp": b // 5, "sample_size": 32},
            verified=True, source=_BEST_ARGS,
            note="Mammoth stores buffer_size // n_tasks samples per task: patterns_per_exp = buffer / 5",
        ),
        *_per_buffer(
            "der", "DER++",
            lambda b: {**_SGD, "lr": 0.03, "mem_size": b, "der_alpha": _DERPP_WEIGHTS[b][0], "der_beta": _DERPP_WEIGHTS[b][1]},
            verified=True, source=_BEST_ARGS,
        ),
        *_per_buffer(
            "der", "DER", lambda b: {**_SGD, "lr": 0.03, "mem_size": b, "der_alpha": 0.3, "der_beta": 0.0},
            verified=True, source=_BEST_ARGS, note="DER is DER++ with der_beta = 0",
        ),
    ),
    notes=(
        "Backbone: the full-width ResNet-18 (nf=64) of Mammoth, nlbench's `resnet18`; the split-cifar10 "
        "suite's default `reduced-resnet18` (nf=20, GEM's) would not reproduce Table 2.",
        "Only Class-IL is reproduced: Mammoth reports Task-IL by masking the logits of the class-IL-trained "
        "model at test time, whereas nlbench's task scenario trains with the task mask (head=mask).",
        "Learning rates and method weights are the seq-cifar10 entries of Mammoth's utils/best_args.py "
        "(the authors' grid search); the paper's PDF was not opened to cross-check them.",
        "Table 2 reports mean and standard deviation over 10 runs.",
    ),
)

PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (DER2020,)}


def get_protocol(name: str) -> Protocol:
    """The preset called `name`; UserError listing the valid names otherwise."""
    if name not in PROTOCOLS:
        raise UserError(f"unknown protocol {name!r}; valid: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def _n_experiences(suite: str) -> int:
    from nlbench.data.suites import get_suite

    return get_suite(suite).n_experiences


def _settings(protocol: Protocol, strategy: str, buffer_size: int | None, hparams: Mapping[str, Any]) -> MethodSettings:
    candidates = [m for m in protocol.methods if m.strategy == strategy]
    if not candidates:
        raise UserError(
            f"protocol {protocol.name!r} has no settings for strategy {strategy!r}; "
            f"it covers: {', '.join(protocol.strategies)}"
        )
    if candidates[0].buffer_size:
        buffer = protocol.buffer_sizes[0] if buffer_size is None else int(buffer_size)
        if buffer not in protocol.buffer_sizes:
            raise UserError(
                f"protocol {protocol.name!r} was published with buffer sizes "
                f"{', '.join(map(str, protocol.buffer_sizes))}, not {buffer}"
            )
        candidates = [m for m in candidates if m.buffer_size == buffer]
    # Several published methods can share one strategy (DER and DER++ are both `der`): the user's own
    # hyperparameters pick the variant; by default the first one listed.
    for method in candidates:
        if all(_satisfies(hparams, constraint) for constraint in _parse_constraints(METHOD_IDENTITY.get(method.method, ""))
               if constraint[0] in hparams):
            return method
    return candidates[0]


def protocol_overrides(
    name: str,
    suite: str,
    strategy: str,
    *,
    buffer_size: int | None = None,
    hparams: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Spec fields and hyperparameters that protocol `name` pins for `strategy` on `suite`.

    Returns `{"scenario", "backbone", "epochs", "batch_size", "protocol", "hparams": {...}}`.
    `buffer_size` is the total buffer in samples for methods with a buffer (default: the smallest
    published size); for agem it becomes `patterns_per_exp = buffer_size / n_experiences`.
    `hparams` (the user's own `--hp` values) only selects between published variants that share one
    strategy, e.g. `der_beta=0` selects DER rather than DER++. Raises UserError for an unknown
    protocol, another suite, a composite strategy or one the protocol does not cover.
    """
    from nlbench.data.suites import get_suite

    protocol = get_protocol(name)
    canonical = get_suite(suite).name
    if canonical != protocol.suite:
        raise UserError(f"protocol {name!r} is defined for suite {protocol.suite}, not {canonical}")
    if "+" in strategy:
        raise UserError(f"protocol {name!r} pins single published methods; {strategy!r} is a composition")
    settings = _settings(protocol, strategy, buffer_size, dict(hparams or {}))
    return {
        "scenario": protocol.scenarios[0],
        "backbone": protocol.backbone,
        "epochs": protocol.epochs,
        "batch_size": protocol.batch_size,
        "protocol": protocol.name,
        "hparams": dict(settings.hparams),
    }


# --------------------------------------------------------------------------------------------------
# What a run is, in the terms a published row uses


def backbone_descriptor(suite: str, backbone: str) -> str:
    """The backbone a run actually used, e.g. `mlp-2x100` (split-digits' MLP), `resnet18`."""
    from nlbench.data.suites import get_suite

    info = get_suite(suite)
    if backbone != "mlp":
        return backbone
    kwargs = info.backbone_kwargs if backbone == info.backbone else {}
    hidden = kwargs.get("hidden")
    if hidden is None:
        from nlbench.models.mlp import MLPConfig

        hidden = MLPConfig(input_dim=1).hidden
    hidden = tuple(hidden)
    if len(set(hidden)) == 1:
        return f"mlp-{len(hidden)}x{hidden[0]}"
    return "mlp-" + "-".join(map(str, hidden))


def run_buffer_size(strategy: str, hp: Mapping[str, Any], n_experiences: int) -> int | None:
    """Samples a run keeps from past experiences at the end of the stream; None = all of them.

    `mem_size` when the strategy declares one, `patterns_per_exp * n_experiences` for A-GEM-style
    memories, 0 for methods without a buffer; `cumulative` keeps everything (None).
    """
    parts = strategy.split("+")
    if "cumulative" in parts:
        return None
    total = 0
    if _present(hp.get("mem_size")):
        total += int(hp["mem_size"])
    if _present(hp.get("patterns_per_exp")):
        total += int(hp["patterns_per_exp"]) * n_experiences
    return total


def _present(value: Any) -> bool:
    if value is None or (isinstance(value, str) and value in ("", "-")):
        return False
    try:
        return not math.isnan(value)
    except TypeError:
        return True


# Hyperparameters that identify a published method among runs of one strategy ("k=v" or "k!=v", ";"-joined).
METHOD_IDENTITY: dict[str, str] = {
    "oEWC": "ewc_mode=online",
    "Online EWC": "ewc_mode=online",
    "EWC": "ewc_mode=separate",
    "DER": "der_beta=0",
    "DER++": "der_beta!=0",
}


def _parse_constraints(text: str) -> list[tuple[str, str, str]]:
    out = []
    for part in filter(None, (p.strip() for p in str(text).split(";"))):
        match = re.fullmatch(r"([A-Za-z_][\w]*)\s*(!=|=)\s*(.+)", part)
        if not match:
            raise ValueError(f"bad method constraint {part!r}")
        out.append((match.group(1), match.group(2), match.group(3).strip()))
    return out


def _satisfies(hp: Mapping[str, Any], constraint: tuple[str, str, str]) -> bool:
    key, op, text = constraint
    if key not in hp or not _present(hp[key]):
        return False
    value = hp[key]
    try:
        equal = math.isclose(float(value), float(text), abs_tol=1e-12)
    except (TypeError, ValueError):
        equal = str(value) == text
    return equal if op == "=" else not equal


def method_matches(method_hparams: Any, hp: Mapping[str, Any]) -> bool:
    """Do a run's hyperparameters identify it as the published method (see METHOD_IDENTITY)?"""
    if not _present(method_hparams):
        return True
    return all(_satisfies(hp, c) for c in _parse_constraints(str(method_hparams)))


