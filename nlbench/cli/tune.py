"""`nlbench tune`: its options and its rendering (the selection table and the dry-run plan); the work is
`nlbench.commands.tune.run_tune`, and the live progress and test summary are the sweep's view."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from nlbench.cli.common import console, parse_hparams, user_errors
from nlbench.cli.sweep_display import RichSweepView
from nlbench.commands.tune import build_tune_settings, run_tune


class RichTuneView(RichSweepView):
    """The sweep's view plus the tune's two tables."""

    def show_tune_plan(self, header: str, rows: list[dict[str, Any]]) -> None:
        from rich.markup import escape
        from rich.table import Table

        table = Table(title="Tune plan", title_justify="left")
        for column in ("strategy", "search space", "trials", "test runs"):
            table.add_column(column, justify="right" if column in ("trials", "test runs") else "left")
        for row in rows:
            space = "; ".join(f"{k} {v}" for k, v in row["space"].items()) or "(nothing to tune: defaults)"
            table.add_row(escape(row["strategy"]), escape(space), str(row["trials"]), str(row["test_runs"]))
        out = console()
        out.print(table)
        out.print(header, highlight=False)

    def show_selection(self, title: str, rows: list[dict[str, Any]]) -> None:
        from rich.markup import escape
        from rich.table import Table

        table = Table(title=title, title_justify="left")
        for column in ("strategy", "chosen", "best validation %", "trials", "test runs"):
            table.add_column(column, justify="left" if column in ("strategy", "chosen") else "right")
        for row in rows:
            value = "-" if row["best_value"] is None else f"{100 * row['best_value']:.1f}"
            table.add_row(escape(row["strategy"]), escape(row["chosen"]), value, row["trials"], str(row["test_runs"]))
        console().print(table)


def tune_command(
    strategy: Annotated[Optional[str], typer.Option(help="Comma-separated strategies to tune (required); each gets the same budget.")] = None,
    suite: Annotated[Optional[str], typer.Option(help="Benchmark suite (see `nlbench list`); default: split-digits.")] = None,
    budget: Annotated[Optional[int], typer.Option(help="Trials per strategy (the same for every strategy); default: 8.")] = None,
    seeds: Annotated[Optional[str], typer.Option(help="Test seeds, e.g. 1-5 or 1,2,3 (not the tuning seed); default: 1-5.")] = None,
    sampler: Annotated[Optional[str], typer.Option(help="Optuna sampler: tpe (first half of the budget random) or random; default: tpe.")] = None,
    metric: Annotated[Optional[str], typer.Option(help="Selection metric on the validation data: val_acc (final average accuracy) or val_avg_inc_acc; default: val_acc.")] = None,
    val_fraction: Annotated[Optional[float], typer.Option(help="Fraction of each experience's training data held out for validation; default: 0.1.")] = None,
    tune_seed: Annotated[Optional[int], typer.Option(help="Seed of the trials, the validation split and the sampler; default: 0.")] = None,
    range_: Annotated[Optional[list[str]], typer.Option(
        "--range", help="Search range KEY=LOW..HIGH for every strategy here that tunes KEY (repeatable; e.g. lr=1e-7..3e-2); "
                        "default: the ranges in search_spaces.toml.")] = None,
    name: Annotated[Optional[str], typer.Option(help="Results sub-directory of the test runs (trials go to NAME-trials); default: SUITE-SCENARIO-tuned.")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Epochs per experience; default: the suite's.")] = None,
    scenario: Annotated[Optional[str], typer.Option(help="class, task or domain; default: the suite's.")] = None,
    head: Annotated[Optional[str], typer.Option(help="Task scenario head: mask or multi.")] = None,
    backbone: Annotated[Optional[str], typer.Option(help="Backbone model; default: the suite's.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Training minibatch size; default: the suite's.")] = None,
    data_path: Annotated[Optional[str], typer.Option(help="fast or avalanche; default: fast.")] = None,
    amp: Annotated[Optional[str], typer.Option(help="Mixed precision: none or bf16; default: none.")] = None,
    compile: Annotated[Optional[bool], typer.Option("--compile", help="torch.compile each run's model.")] = None,
    channels_last: Annotated[Optional[bool], typer.Option("--channels-last", help="Channels-last memory format for image models.")] = None,
    suite_option: Annotated[Optional[list[str]], typer.Option(
        "--suite-option", help="Suite option KEY=VALUE (repeatable; e.g. train_per_task=2000, regime=mixture).")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu or cuda; default: auto.")] = None,
    executor: Annotated[Optional[str], typer.Option(help="local or ray, as in `nlbench sweep`; default: local.")] = None,
    jobs: Annotated[Optional[int], typer.Option(help="Runs at once, as in `nlbench sweep`.")] = None,
    runs_per_gpu: Annotated[Optional[int], typer.Option(help="Runs packed onto one GPU, as in `nlbench sweep`.")] = None,
    cpus_per_run: Annotated[Optional[float], typer.Option(help="Ray: CPUs each run reserves; default: 1.")] = None,
    address: Annotated[Optional[str], typer.Option(help="Ray: address of a running cluster.")] = None,
    retries: Annotated[Optional[int], typer.Option(help="Ray: retries of a run whose worker died; default: 2.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Results directory; default: results.")] = None,
    data_root: Annotated[Optional[Path], typer.Option(help="Dataset directory (else $NLBENCH_DATA, else ~/.cache/nlbench/data).")] = None,
    download: Annotated[Optional[bool], typer.Option("--download/--no-download", help="Download missing datasets when online; default: yes.")] = None,
    retry_failed: Annotated[Optional[bool], typer.Option("--retry-failed/--no-retry-failed", help="Run failed runs again; default: yes.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print each strategy's search space and the number of runs; run nothing.")] = False,
) -> None:
    """Tune strategies with an equal trial budget on validation data held out of the training stream, then
    run each chosen configuration on the test seeds; resumable (the same command skips finished runs).

    Exit code 0 when every test run completed or diverged, 1 when a run failed or a strategy had no
    completed trial, 2 on bad input, 130 on Ctrl-C (finished runs are kept).
    """
    with user_errors():
        settings = build_tune_settings({
            "strategy": strategy, "suite": suite, "budget": budget, "seeds": seeds, "sampler": sampler, "metric": metric,
            "val_fraction": val_fraction, "tune_seed": tune_seed, "ranges": range_, "name": name, "epochs": epochs, "scenario": scenario,
            "head": head, "backbone": backbone, "batch_size": batch_size, "data_path": data_path, "amp": amp,
            "compile": compile, "channels_last": channels_last, "device": device,
            "suite_options": parse_hparams(suite_option, flag="--suite-option") if suite_option else None, "executor": executor, "jobs": jobs,
            "runs_per_gpu": runs_per_gpu, "cpus_per_run": cpus_per_run, "address": address, "retries": retries,
            "out": out, "data_root": data_root, "download": download, "retry_failed": retry_failed,
        })
        code = run_tune(settings, RichTuneView(), dry_run=dry_run)
    if code:
        raise typer.Exit(code)
