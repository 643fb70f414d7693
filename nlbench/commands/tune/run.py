"""`run_tune`: validate, select on validation data with an equal budget, then test the chosen configurations.

1. Plan: every strategy's search space (`space`) and a validation spec and test specs are resolved, so
   bad input is one line before any run or cluster starts.
2. Select: `budget` rounds; each asks every strategy's study for one trial, whose spec is the strategy
   with the trial's values on the tuning seed with `holdout=val_fraction` (each experience's training
   data split by a seeded permutation; the held-out part is the evaluation stream, the test set is never
   read). Trials are stored under OUT/NAME-trials and reused when the command runs again.
3. Test: each strategy's best trial's values on every test seed (holdout off: the real test stream),
   stored under OUT/NAME like any run; `selection.json` beside them records the selection
   (`provenance`).

Returns 0 when every test run completed or diverged, 1 when a run failed or a strategy had no completed
trial; raises UserError on bad input and KeyboardInterrupt on Ctrl-C/SIGTERM (finished runs are kept).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

from nlbench.commands.tune.settings import TuneSettings
from nlbench.errors import UserError



class TuneView(Protocol):
    """What a tune shows: the sweep view's messages, live progress and summary table, plus the plan of
    a dry run and the selection table."""

    def message(self, text: str) -> None: ...
    def live(self, total: int, labels: Any) -> Any: ...
    def show_summary(self, title: str, planned: Sequence[Any], results: Any) -> None: ...
    def show_tune_plan(self, header: str, rows: list[dict[str, Any]]) -> None: ...
    def show_selection(self, title: str, rows: list[dict[str, Any]]) -> None: ...


@dataclass
class _Plan:
    strategy: str
    space: dict[str, Any]
    base: Any  # validation spec with the defaults (checks the strategy before anything runs)


def _spec(settings: TuneSettings, strategy: str, device: str, *, seed: int, hparams: dict[str, Any], holdout: float,
          name: str) -> Any:
    from nlbench.core.spec import resolve_spec

    s = settings.sweep
    return resolve_spec(
        s.suite, strategy, device=device, seed=seed, scenario=s.scenario, backbone=s.backbone, head=s.head,
        epochs=s.epochs, batch_size=s.batch_size, hparams=hparams, name=name, protocol=s.protocol,
        **{key: value for key in ("data_path", "amp") if (value := getattr(s, key)) is not None},
        compile=s.compile, channels_last=s.channels_last, holdout=holdout, suite_options=s.suite_options or None,
    )


def _label(params: dict[str, Any]) -> str:
    from nlbench.commands.sweep.plan import PlannedRun

    return PlannedRun(None, tuple(params.items())).label


def plan_tune(settings: TuneSettings, device: str) -> list[_Plan]:
    from nlbench.commands.tune.space import search_space

    plans = []
    for strategy in settings.strategies:
        space = search_space(strategy, ranges=settings.ranges)
        base = _spec(settings, strategy, device, seed=settings.tune_seed, hparams={}, holdout=settings.val_fraction,
                     name=f"{settings.name}-trials")
        for seed in settings.sweep.seeds:
            _spec(settings, strategy, device, seed=seed, hparams={}, holdout=0.0, name=settings.name)
        plans.append(_Plan(strategy, space, base))
    unused = sorted(set(settings.ranges) - {key for plan in plans for key, dim in plan.space.items() if dim.choices is None})
    if unused:
        raise UserError(f"--range {unused[0]}: no strategy of this tune tunes {unused[0]!r} over a range; "
                        f"see `nlbench tune --dry-run` for each strategy's space")
    return plans


def run_tune(settings: TuneSettings, view: TuneView, *, dry_run: bool = False) -> int:
    from nlbench.commands.sweep.plan import PlannedRun
    from nlbench.commands.sweep.run import terminate_as_interrupt
    from nlbench.commands.tune.execute import check_data, open_executor, run_batch
    from nlbench.commands.tune.provenance import SELECTION_FILE, setting_of, write_selection
    from nlbench.commands.tune.study import TrialRecord, ask, new_study, tell
    from nlbench.core.store import check_writable
    from nlbench.data.suites import get_suite

    get_suite(settings.sweep.suite)
    plans = plan_tune(settings, "cpu")  # bad input is answered before torch, data or a cluster load
    s, out = settings.sweep, settings.sweep.out
    n_strategies, n_seeds = len(plans), len(s.seeds)
    metric, direction = settings.objective
    header = (f"tune {settings.name}: {n_strategies} strategy(ies) x {settings.budget} trial(s), each scored on a "
              f"held-out {settings.val_fraction:g} of every experience's training data (tuning seed "
              f"{settings.tune_seed}, {settings.sampler} sampler, metric {settings.metric}), then {n_strategies} x "
              f"{n_seeds} test run(s) on seed(s) {','.join(map(str, s.seeds))}; results in {out / settings.name}/")
    from nlbench.core.regime import regime_warning

    warning = regime_warning([p.base for p in plans])  # at the default clock, which the space may not vary
    if warning:
        view.message(f"warning: {warning}")
    if dry_run:
        rows = [{"strategy": p.strategy, "space": {k: d.describe() for k, d in p.space.items()},
                 "trials": settings.budget, "test_runs": n_seeds} for p in plans]
        view.show_tune_plan(header, rows)
        return 0
    check_writable(out)
    view.message(header)
    with terminate_as_interrupt(), open_executor(s) as (executor, device):
        view.message(f"{executor.describe()}")
        check_data(s)
        studies = {p.strategy: new_study(p.strategy, p.space, settings.sampler, settings.tune_seed, settings.budget, direction)
                   for p in plans}
        for number in range(settings.budget):
            records, labels = {}, {}
            for strategy, entry in studies.items():
                params = ask(entry)
                spec = _spec(settings, strategy, device, seed=settings.tune_seed, hparams=params,
                             holdout=settings.val_fraction, name=f"{settings.name}-trials")
                records[strategy] = TrialRecord(number, params, spec)
                labels[spec.run_id] = f"trial {number}: {_label(params)}"
            view.message(f"trial round {number + 1}/{settings.budget}")
            results = run_batch(executor, [r.spec for r in records.values()], s, view, labels)
            for strategy, record in records.items():
                tell(studies[strategy], record, results.get(record.spec.run_id), metric)

        chosen = {strategy: entry.best() for strategy, entry in studies.items()}
        tests: dict[str, list[Any]] = {}
        for strategy, best in chosen.items():
            if best is not None:
                tests[strategy] = [_spec(settings, strategy, device, seed=seed, hparams=best.params, holdout=0.0,
                                         name=settings.name) for seed in s.seeds]
        # Seed-major: a tune stopped during its test runs leaves every strategy with the same seeds, so its pairs hold.
        planned = [PlannedRun(specs[i], tuple(chosen[st].params.items()))
                   for i in range(len(s.seeds)) for st, specs in tests.items()]
        labels = {run.spec.run_id: f"{run.spec.strategy} test seed {run.spec.seed}: {run.label}" for run in planned}
        view.message(f"test runs: {len(planned)} (the chosen configuration of each strategy on every test seed)")
        results = run_batch(executor, [run.spec for run in planned], s, view, labels) if planned else {}

    rows = []
    for strategy, entry in studies.items():
        best = chosen[strategy]
        specs = tests.get(strategy, [])
        write_selection(out / settings.name / SELECTION_FILE, {
            "strategy": strategy, "setting": setting_of(plans[list(studies).index(strategy)].base),
            "metric": settings.metric, "direction": direction, "val_fraction": settings.val_fraction,
            "tune_seed": settings.tune_seed, "sampler": settings.sampler, "budget": settings.budget,
            "space": {k: d.describe() for k, d in entry.space.items()},
            "trials": [{"number": t.number, "params": dict(t.params), "value": t.value, "status": t.status,
                        "run_id": t.spec.run_id} for t in entry.trials],
            "chosen": dict(best.params) if best else None, "best_value": best.value if best else None,
            "best_trial": best.number if best else None, "test_seeds": list(s.seeds),
            "test_run_ids": [spec.run_id for spec in specs],
        })
        completed = sum(t.status == "completed" for t in entry.trials)
        rows.append({"strategy": strategy, "chosen": _label(best.params) if best else "-",
                     "best_value": best.value if best else None, "trials": f"{completed}/{len(entry.trials)} completed",
                     "test_runs": len(specs)})
    view.show_selection(f"selection on {settings.val_fraction:g} validation ({settings.metric}), budget {settings.budget}", rows)
    if planned:
        view.show_summary(f"tune {settings.name}: test runs, {planned[0].spec.suite}, {planned[0].spec.scenario}-incremental",
                          planned, results)
    missing = [st for st, best in chosen.items() if best is None]
    if missing:
        view.message(f"no completed trial for {', '.join(missing)}: nothing chosen, no test runs")
    failed = any((r or {}).get("status") == "failed" for r in results.values())
    return 1 if failed or missing else 0
