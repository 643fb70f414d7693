"""The run spec: everything that determines one run's result, frozen, hashable, single-sourced.

CLI flags are resolved once into a `RunSpec` (suite defaults and strategy hyperparameter defaults filled
in, every value validated); the runner, the results store and the report only ever read the spec.
`spec.json` in every result directory is `RunSpec.to_json()`, and `run_id` is a hash of exactly the
fields that can change a result, so re-running the same spec finds the same directory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

SPEC_SCHEMA = 1
MAX_SEED = 2**32 - 1  # numpy seeds are 32-bit: the largest seed a run can take

# Fields that say where or under which name a run is filed, but cannot change its numbers.
_NOT_HASHED = frozenset({"name"})
# Execution options added after the first results were stored: hashed only when set, so every run id
# stored before they existed still names the same run.
_HASHED_IF_SET = {"data_path": "fast", "amp": "none", "compile": False, "channels_last": False, "holdout": 0.0,
                  "suite_options": {}, "eval_every": 0, "probes": False, "resolved_hparams": {}}
# Hyperparameters declared by an existing strategy after its first results were stored (replay's
# mem_batch, ewc's ewc_fisher): kept out of the spec at their default, so stored run ids and the report's groups stay
# as they were; a strategy reads them with hp.get(key, default).
_HPARAMS_STORED_IF_SET = {"mem_batch": 0, "ewc_fisher": "minibatch"}


def _freeze(value: Any) -> Any:
    """Lists (as JSON gives them back) become tuples so specs stay hashable and compare equal."""
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


@dataclass(frozen=True)
class RunSpec:
    """One run: a strategy trained over one suite's stream with one seed."""

    suite: str
    strategy: str
    scenario: str
    backbone: str
    seed: int
    epochs: int
    batch_size: int
    eval_batch_size: int
    device: str
    hparams: tuple[tuple[str, Any], ...] = ()
    head: str = "single"
    protocol: str | None = None
    data_path: str = "fast"  # "fast" (device tensors, nlbench.data.fastpath) or "avalanche" (stock DataLoader)
    amp: str = "none"  # "none" or "bf16" autocast
    compile: bool = False  # torch.compile the backbone
    channels_last: bool = False  # channels-last memory format for image models
    holdout: float = 0.0  # > 0: evaluate on this fraction held out of each training experience (tuning), not the test set
    suite_options: tuple[tuple[str, Any], ...] = ()  # options that change the stream (n_tasks, regime), set ones only
    eval_every: int = 0  # continual evaluation every N training iterations (0: off; nlbench.core.continual_eval)
    probes: bool = False  # per clock level probes of clocked models (nlbench.core.probes)
    # integer values of hyperparameters written relative to the experience length (`periods=1,e/8,e`:
    # nlbench.core.periods); `hparams` keeps what was written, both are hashed
    resolved_hparams: tuple[tuple[str, Any], ...] = ()
    name: str = field(default="default", compare=False)
    schema: int = SPEC_SCHEMA

    def __post_init__(self) -> None:
        hparams = {k: v for k, v in dict(self.hparams).items() if k not in _HPARAMS_STORED_IF_SET or v != _HPARAMS_STORED_IF_SET[k]}
        object.__setattr__(self, "hparams", tuple(sorted((k, _freeze(v)) for k, v in hparams.items())))
        object.__setattr__(self, "suite_options", tuple(sorted((k, _freeze(v)) for k, v in dict(self.suite_options).items())))
        object.__setattr__(self, "resolved_hparams", tuple(sorted((k, _freeze(v)) for k, v in dict(self.resolved_hparams).items())))

    @property
    def hp(self) -> dict[str, Any]:
        """Hyperparameters as a plain dict (resolved: every declared key present, relative periods as the
        integers they resolved to on this stream)."""
        return {**dict(self.hparams), **dict(self.resolved_hparams)}

    def identity(self) -> dict[str, Any]:
        """The fields that determine the result, as JSON-ready data."""
        data = self.to_dict()
        for key in _NOT_HASHED:
            data.pop(key, None)
        for key, default in _HASHED_IF_SET.items():
            if data.get(key) == default:
                data.pop(key)
        return data

    @property
    def run_id(self) -> str:
        """A stable content hash of the resolved spec (same spec -> same id, on any machine)."""
        canonical = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["hparams"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.hparams}
        data["suite_options"] = dict(self.suite_options)
        data["resolved_hparams"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.resolved_hparams}
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RunSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["hparams"] = tuple(dict(data.get("hparams", {})).items())
        kwargs["suite_options"] = tuple(dict(data.get("suite_options", {})).items())
        kwargs["resolved_hparams"] = tuple(dict(data.get("resolved_hparams", {})).items())
        return cls(**kwargs)


def resolve_spec(
    suite: str,
    strategy: str,
    *,
    device: str,
    seed: int = 0,
    scenario: str | None = None,
    backbone: str | None = None,
    head: str | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    eval_batch_size: int | None = None,
    hparams: Mapping[str, Any] | None = None,
    name: str | None = None,
    protocol: str | None = None,
    data_path: str = "fast",
    amp: str = "none",
    compile: bool = False,
    channels_last: bool = False,
    holdout: float = 0.0,
    suite_options: Mapping[str, Any] | None = None,
    eval_every: int = 0,
    probes: bool = False,
) -> RunSpec:
    """Fill in suite and strategy defaults and validate everything; bad input raises UserError.

    A `protocol` (see nlbench.core.protocols) pins the published setting: scenario, backbone, epochs,
    batch size and the method's published hyperparameters. A flag that contradicts it is an error,
    because the run would then be filed as comparable when it is not.
    """
    from nlbench.errors import UserError
    from nlbench.core.backbones import BACKBONES
    from nlbench.core.periods import is_relative, resolve_relative
    from nlbench.core.registry import check_backbone, check_scenario, resolve_hparams
    from nlbench.data.suites import check_compatible, get_suite, parse_suite_options

    info = get_suite(suite)
    options = parse_suite_options(info, suite_options)
    if eval_every < 0:
        raise UserError(f"--eval-every must be >= 0 (0: off), got {eval_every}")
    hparams = dict(hparams or {})
    if protocol is not None:
        from nlbench.core.protocols import protocol_overrides

        pinned = protocol_overrides(protocol, info.name, strategy, buffer_size=_as_int(hparams.get("mem_size")), hparams=hparams)
        for flag, given in (("scenario", scenario), ("backbone", backbone), ("epochs", epochs), ("batch_size", batch_size)):
            if given is not None and given != pinned[flag]:
                raise UserError(f"--{flag.replace('_', '-')} {given} contradicts protocol {protocol!r}, which pins {pinned[flag]}")
        scenario, backbone, epochs, batch_size = (pinned[k] for k in ("scenario", "backbone", "epochs", "batch_size"))
        hparams = {**pinned["hparams"], **hparams}
        protocol = pinned["protocol"]
    scenario = scenario or info.default_scenario
    if scenario not in info.scenarios:
        raise UserError(f"scenario {scenario!r} is not available for {info.name}; valid: {', '.join(info.scenarios)}")
    check_scenario(strategy, scenario)
    backbone = backbone or info.backbone
    if backbone not in BACKBONES:
        raise UserError(f"unknown backbone {backbone!r}; valid: {', '.join(BACKBONES)}")
    check_compatible(info, strategy, backbone)
    check_backbone(strategy, backbone)
    valid_heads = ("mask", "multi") if scenario == "task" else ("single",)
    head = head or info.default_head(scenario)
    if head not in valid_heads:
        raise UserError(f"head {head!r} does not fit scenario {scenario!r}; valid: {', '.join(valid_heads)}")
    for flag, value in (("epochs", epochs), ("batch-size", batch_size), ("eval-batch-size", eval_batch_size)):
        if value is not None and value < 1:
            raise UserError(f"--{flag} must be a positive integer, got {value}")
    if seed < 0:
        raise UserError(f"--seed must be >= 0, got {seed}")
    if seed > MAX_SEED:
        raise UserError(f"--seed must be at most {MAX_SEED} (2^32 - 1, numpy's seed range), got {seed}")
    for flag, value, valid in (("data-path", data_path, ("fast", "avalanche")), ("amp", amp, ("none", "bf16"))):
        if value not in valid:
            raise UserError(f"--{flag} {value!r} is not valid; valid: {', '.join(valid)}")
    if isinstance(holdout, bool) or not isinstance(holdout, (int, float)) or not 0.0 <= holdout < 1.0:
        raise UserError(f"--val-fraction must be a number in (0, 1), got {holdout!r}")
    batch_size = batch_size or info.batch_size
    resolved_hp = resolve_hparams(strategy, hparams)
    relative = {}
    if any(is_relative(v) for v in resolved_hp.values()):
        from nlbench.data.plan import stream_plan
        from nlbench.data.suites import configure_suite

        plan = stream_plan(configure_suite(info, dict(options)), batch_size, epochs or info.epochs)
        relative = resolve_relative(resolved_hp, plan.experience_length)
    return RunSpec(
        suite=info.name,
        strategy=strategy,
        scenario=scenario,
        backbone=backbone,
        head=head,
        seed=seed,
        epochs=epochs or info.epochs,
        batch_size=batch_size,
        eval_batch_size=eval_batch_size or max(256, batch_size),
        device=device,
        hparams=tuple(resolved_hp.items()),
        resolved_hparams=tuple(relative.items()),
        name=name or info.name,
        protocol=protocol,
        data_path=data_path,
        amp=amp,
        compile=compile,
        channels_last=channels_last,
        holdout=float(holdout),
        suite_options=options,
        eval_every=eval_every,
        probes=probes,
    )


def _as_int(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None  # left for resolve_hparams to reject with its own message
