"""`run`: several strategies on one suite, each run stored (or reused) under OUT/NAME/RUN_ID.

`plan_specs` turns what the user asked for into validated `RunSpec`s without importing torch, so bad
input is answered at once; `run_specs` trains what is not stored yet and reports progress as events
(`kind`, `info`) for the CLI to render. Nothing here prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from nlbench.errors import UserError

Events = Callable[[str, Mapping[str, Any]], None]


@dataclass(frozen=True)
class RunOutcome:
    spec: Any  # RunSpec
    result: Mapping[str, Any]
    cached: bool  # taken from the store, not trained by this command


def runnable_strategies(suite: str, scenario: Optional[str]) -> list[str]:
    """Every registered strategy that can run on `suite` in `scenario` (the default of `run`)."""
    from nlbench.core.registry import strategies
    from nlbench.data.suites import get_suite

    info = get_suite(suite)
    scenario = scenario or info.default_scenario
    return [
        name for name, s in strategies().items()
        if name not in info.unsupported and (s.scenarios is None or scenario in s.scenarios)
    ]


def plan_specs(
    suite: str,
    strategy_names: Optional[Sequence[str]],
    overrides: Mapping[str, str],
    *,
    device: str,
    name: Optional[str] = None,
    **fields: Any,
) -> list[Any]:
    """One validated RunSpec per strategy. An override applies to the strategies that declare it, so
    `--hp mem_size=500` can go with a list of strategies; a key that none declares is an error.
    `probes` applies to the strategies with clock levels (an error when none has them).
    `device` is the resolved device name (it is part of the spec)."""
    from nlbench.core.registry import overrides_by_strategy, probe_targets
    from nlbench.core.spec import resolve_spec
    from nlbench.core.store import check_run_name

    names = list(strategy_names) if strategy_names is not None else runnable_strategies(suite, fields.get("scenario"))
    if not names:
        raise UserError("--strategy is empty; give at least one strategy")
    shares = overrides_by_strategy(names, overrides)
    if name is not None:
        check_run_name(name)
    probed = set(probe_targets(names)[0]) if fields.get("probes") else set()
    return [
        resolve_spec(suite, n, device=device, name=name, **{**fields, "probes": n in probed},
                     hparams=shares[n])
        for n in names
    ]


def run_specs(specs: Sequence[Any], out: Path, *, data_root: Optional[Path], download: bool, force: bool,
              events: Events, tracking: Any = None) -> list[RunOutcome]:
    """Run (or reuse) every spec in order. Events: `loading` (suite), `cached`, `waiting` (holder),
    `started`, `experience` (index), `finished` (result); each carries `spec` and `index`/`total`.
    `tracking` (`nlbench.core.tracking.Tracking`) logs the runs trained here to experiment trackers; a run
    trained here checkpoints after each experience into its run directory and resumes from there."""
    from nlbench.data.vision import import_torchvision

    import_torchvision()  # before Avalanche imports it: a mismatched torch/torchvision pair is one line
    from nlbench.core.checkpoint import checkpoint_dir, discard
    from nlbench.core.runner import run_one
    from nlbench.core.signals import deferred
    from nlbench.core.store import (
        claim_holder, claim_run, describe_holder, finished_result, process_identity, run_dir, wait_for_claim,
        write_run,
    )
    from nlbench.data.readers import resolve_data_root
    from nlbench.data.streams import build_benchmark
    from nlbench.data.suites import configure_suite

    first = specs[0]
    suite = configure_suite(first.suite, first.suite_options)
    events("loading", {"suite": suite.name, "total": len(specs), "experiences": suite.n_experiences})
    benchmark = build_benchmark(suite, first.scenario, first.seed, resolve_data_root(data_root), download)
    events("loaded", {"suite": suite.name})

    outcomes: list[RunOutcome] = []
    for index, spec in enumerate(specs):
        where = {"spec": spec, "index": index, "total": len(specs)}
        cached = None if force else finished_result(out, spec)
        if cached is None:
            # Claim the run, so a sweep or another `nlbench run` writing here does not train it too.
            claim = claim_run(out, spec)
            if claim is None:
                events("waiting", {**where, "holder": describe_holder(claim_holder(out, spec))})
                claim = wait_for_claim(out, spec)
            with claim:
                cached = None if force else finished_result(out, spec)  # finished elsewhere meanwhile?
                if cached is None:
                    events("started", where)

                    def on_run_event(kind: str, info: dict, where: dict = where) -> None:
                        if kind == "experience":
                            events("experience", {**where, "experience": info["experience"]})

                    result = {**run_one(spec, benchmark=benchmark, progress=on_run_event, tracking=tracking,
                                        checkpoint_dir=checkpoint_dir(run_dir(out, spec))), **process_identity()}
                    with deferred():  # a Ctrl-C here still leaves the stored run without its checkpoints
                        write_run(out, spec, result)
                        discard(run_dir(out, spec))
                    outcomes.append(RunOutcome(spec, result, False))
                    events("finished", {**where, "result": result, "cached": False})
                    continue
        outcomes.append(RunOutcome(spec, cached, True))
        events("finished", {**where, "result": cached, "cached": True})
    return outcomes
