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

The presets are data (`presets/protocols.toml`), read at import. Importing this module is cheap (stdlib only); pandas and the model configs are imported inside the
functions that need them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from nlbench.errors import UserError

PRESETS = Path(__file__).with_name("presets")  # protocols.toml, published_methods.toml

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
    epochs: int | None = None  # the method's own epochs when the paper ran methods for different lengths


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
    # Set when no published number of this protocol could be read: why. The report then says so
    # beside the published comparison instead of leaving the runs unexplained.
    no_published_number: str = ""
    # Which published rows this preset reproduces: column -> value of baselines/published.csv's source
    # columns (`source` matches as a prefix). The report's mapping files those rows under this preset.
    published_rows: Mapping[str, str] = field(default_factory=dict)

    @property
    def strategies(self) -> list[str]:
        return sorted({m.strategy for m in self.methods})


def read_preset(name: str) -> dict[str, Any]:
    """A data file of `presets/` (TOML) as a dict."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    return tomllib.loads((PRESETS / name).read_text(encoding="utf-8"))


def _methods(name: str, entries: list[dict[str, Any]]) -> tuple[MethodSettings, ...]:
    """[[NAME.methods]] entries -> MethodSettings, one per buffer size for methods with `per_buffer`."""
    settings = []
    for entry in entries:
        common = {k: entry[k] for k in ("strategy", "method", "verified", "source")}
        common["epochs"] = int(entry["epochs"]) if "epochs" in entry else None
        note = entry.get("note", "")
        per_buffer = entry.get("per_buffer")
        if per_buffer is None:
            settings.append(MethodSettings(buffer_size=0, hparams=dict(entry["hparams"]), note=note, **common))
            continue
        for buffer, extra in per_buffer.items():
            settings.append(MethodSettings(buffer_size=int(buffer), hparams={**entry["hparams"], **extra}, note=note, **common))
    return tuple(settings)


def _load_protocols() -> dict[str, Protocol]:
    protocols = {}
    for name, data in read_preset("protocols.toml").items():
        protocols[name] = Protocol(
            name=name, title=data["title"], citation=data["citation"], suite=data["suite"],
            scenarios=tuple(data["scenarios"]), backbone=data["backbone"], epochs=int(data["epochs"]),
            batch_size=int(data["batch_size"]), buffer_sizes=tuple(data["buffer_sizes"]),
            methods=_methods(name, data["methods"]), notes=tuple(data.get("notes", ())),
            no_published_number=data.get("no_published_number", ""),
            published_rows={k: str(v) for k, v in data.get("published_rows", {}).items()},
        )
    return protocols


PROTOCOLS: dict[str, Protocol] = _load_protocols()
DER2020 = PROTOCOLS["der2020"]
# The published-method table (`published_methods.toml`): the report maps rows with it; here, the
# hyperparameters that identify a published method among runs of one strategy ("k=v" or "k!=v", ";"-joined).
PUBLISHED_METHODS: dict[str, dict[str, str]] = read_preset("published_methods.toml")["methods"]
METHOD_IDENTITY: dict[str, str] = {name: m["identity"] for name, m in PUBLISHED_METHODS.items() if "identity" in m}


def get_protocol(name: str) -> Protocol:
    """The preset called `name`; UserError listing the valid names otherwise."""
    if name not in PROTOCOLS:
        raise UserError(f"unknown protocol {name!r}; valid: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def preset_of_published(row: Mapping[str, Any]) -> str:
    """The preset whose `published_rows` select this row of the published source ('' when none does)."""
    for protocol in PROTOCOLS.values():
        wanted = protocol.published_rows
        if wanted and all(
            str(row.get(key, "")).strip().startswith(value) if key == "source" else str(row.get(key, "")).strip() == value
            for key, value in wanted.items()
        ):
            return protocol.name
    return ""


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

    Returns `{"scenario", "backbone", "epochs", "batch_size", "protocol", "hparams": {...}}`; the epochs
    are the method's own where the paper ran methods for different numbers of epochs.
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
        "epochs": settings.epochs or protocol.epochs,
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


