"""`nlbench sweep` and the hidden `nlbench run-one` (the local executor's child): options, the live
display and the tables. The work is `nlbench.commands.sweep`."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Annotated, Any, Mapping, Optional, Sequence

import typer

from nlbench.cli.common import console, user_errors
from nlbench.commands.sweep import (
    PlannedRun, _hms, _pct, _user_error, build_settings, load_config, parse_grid_options, run_sweep, summary_rows,
)


class _Display:
    """Live progress (runs done, failed, running, remaining, ETA) on stderr, one line per finished run."""

    def __init__(self, console: Any, total: int, labels: Mapping[str, str]):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
        from rich.text import Text

        class EtaColumn(ProgressColumn):
            """Throughput-based ETA (elapsed / finished x remaining): right for parallel runs."""

            def render(self, task: Any) -> Text:
                remaining = (task.total or 0) - task.completed
                if remaining <= 0:
                    return Text("ETA 0:00:00", style="progress.remaining")
                if not task.completed or not task.elapsed:
                    return Text("ETA -:--:--", style="progress.remaining")
                return Text(f"ETA {_hms(task.elapsed / task.completed * remaining)}", style="progress.remaining")

        self.console = console
        self.labels = labels
        self.total = total
        self.counts = {"completed": 0, "diverged": 0, "failed": 0}
        self.running = 0
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[counts]}"),
            TimeElapsedColumn(), EtaColumn(), console=console, transient=False,
        )
        self.task = self.progress.add_task("sweep", total=total, counts=self._counts())

    def _counts(self) -> str:
        done = self.counts["completed"] + self.counts["diverged"]
        finished = done + self.counts["failed"]
        return (f"[green]{done} done[/] ([yellow]{self.counts['diverged']} diverged[/]), "
                f"[red]{self.counts['failed']} failed[/], {self.running} running, {self.total - finished} remaining")

    def __enter__(self) -> "_Display":
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def started(self, spec: Any, where: str) -> None:
        self.running += 1
        self.progress.update(self.task, counts=self._counts())

    def _name(self, spec: Any) -> str:
        from rich.markup import escape

        label = self.labels.get(spec.run_id, "-")
        point = f" \\[{escape(label)}]" if label != "-" else ""
        return f"{escape(spec.strategy)}{point} seed {spec.seed} {spec.run_id[:8]}"

    def waiting(self, spec: Any, holder: Mapping[str, Any]) -> None:
        """Another live process holds this run's claim: it is left to that process and waited for."""
        from rich.markup import escape

        from nlbench.core.store import describe_holder

        self.progress.console.print(
            f"[cyan]{'waiting':<9}[/] {self._name(spec)}  claimed by {escape(describe_holder(dict(holder)))}; "
            "waiting for it", highlight=False, soft_wrap=True)

    def done_elsewhere(self, spec: Any, result: Mapping[str, Any]) -> None:
        """Another process stored this run while it waited here: taken as it is, not trained again."""
        status = str(result.get("status"))
        self.counts[status if status in self.counts else "failed"] += 1
        who = f"pid {result['pid']} on {result.get('host', '?')}" if result.get("pid") else "another process"
        self.progress.console.print(f"[cyan]{'elsewhere':<9}[/] {self._name(spec)}  {status} by {who}",
                                    highlight=False, soft_wrap=True)
        self.progress.update(self.task, advance=1, counts=self._counts())

    def finished(self, spec: Any, result: Mapping[str, Any]) -> None:
        self.running = max(0, self.running - 1)
        status = str(result.get("status"))
        self.counts[status if status in self.counts else "failed"] += 1
        style = {"completed": "green", "diverged": "yellow"}.get(status, "red")
        if status == "completed":
            what = f"ACC {_pct((result.get('metrics') or {}).get('acc'))}%"
        else:
            what = (str(result.get("error") or "").strip().splitlines() or [""])[0]
        wall = result.get("wall_time_s") or 0.0
        from rich.markup import escape

        self.progress.console.print(
            f"[{style}]{status:<9}[/] {self._name(spec)}  {escape(what)}  ({wall:.1f} s)", highlight=False, soft_wrap=True,
        )
        self.progress.update(self.task, advance=1, counts=self._counts())


def print_summary(console: Any, title: str, planned: Sequence[PlannedRun], results: Mapping[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in ("strategy", "grid point", "runs", "completed", "diverged", "failed", "not run", "ACC %", "forgetting %"):
        table.add_column(column, justify="left" if column in ("strategy", "grid point") else "right")
    for row in summary_rows(planned, results):
        acc = _pct(row["acc_mean"]) + (f" ± {100 * row['acc_std']:.1f}" if row["acc_std"] is not None else "")
        table.add_row(escape(row["strategy"]), escape(row["point"]), str(row["runs"]), str(row["completed"]), str(row["diverged"]),
                      str(row["failed"]), str(row["not_run"]), acc, _pct(row["forgetting_mean"]))
    console.print(table)
    console.print("  ACC: final average accuracy over the completed seeds (mean ± sample std); "
                  "forgetting: Chaudhry et al.", highlight=False)
    failed = [(r, results[r.spec.run_id]) for r in planned if (results.get(r.spec.run_id) or {}).get("status") == "failed"]
    for run, result in failed[:10]:
        first = (str(result.get("error") or "").strip().splitlines() or [""])[0]
        console.print(f"  [red]failed[/red] {escape(run.spec.strategy)} \\[{escape(run.label)}] seed {run.spec.seed} "
                      f"{run.spec.run_id[:8]}: {escape(first)}", highlight=False)
    if len(failed) > 10:
        console.print(f"  ... and {len(failed) - 10} more failed runs", highlight=False)


def print_plan(console: Any, planned: Sequence[PlannedRun], results: Mapping[str, Any], retry_failed: bool,
               out: Path | None = None) -> None:
    from rich.markup import escape
    from rich.table import Table

    from nlbench.core.store import describe_holder, live_claim

    table = Table(title="Sweep plan", title_justify="left")
    for column in ("#", "strategy", "grid point", "seed", "run id", "state"):
        table.add_column(column, justify="right" if column in ("#", "seed") else "left")
    for index, run in enumerate(planned, 1):
        result = results.get(run.spec.run_id)
        holder = live_claim(out, run.spec) if out is not None else None
        if holder is not None:
            state = f"running elsewhere ({describe_holder(holder)})"
        elif result is None:
            state = "to run"
        elif result.get("status") == "failed":
            state = "failed: will re-run" if retry_failed else "failed: kept"
        else:
            state = f"done ({result.get('status')})"
        table.add_row(str(index), escape(run.spec.strategy), escape(run.label), str(run.spec.seed), run.spec.run_id, state)
    console.print(table)

class RichSweepView:
    """The sweep's terminal view: messages and the live display on stderr, plan and summary on stdout."""

    def __init__(self) -> None:
        self.err = console(stderr=True)

    def message(self, text: str) -> None:
        self.err.print(text, highlight=False)

    def show_plan(self, planned: Sequence[PlannedRun], results: Mapping[str, Any], retry_failed: bool,
                  out: Path, header: str) -> None:
        out_console = console()
        print_plan(out_console, planned, results, retry_failed, out)
        out_console.print(header, highlight=False)

    def live(self, total: int, labels: Mapping[str, str]) -> "_Display":
        return _Display(self.err, total, labels)

    def show_summary(self, title: str, planned: Sequence[PlannedRun], results: Mapping[str, Any]) -> None:
        print_summary(console(), title, planned, results)


def sweep_command(
    config: Annotated[Optional[Path], typer.Option(
        "--config", help="A YAML or TOML file describing the sweep (keys: suite, strategy, grid, seeds, name, epochs, "
        "device, executor, jobs, ...); options given on the command line override its values.",
        dir_okay=False)] = None,
    suite: Annotated[Optional[str], typer.Option(help="Benchmark suite (see `nlbench list`); default: split-digits.")] = None,
    strategy: Annotated[Optional[str], typer.Option(help="Comma-separated strategies; default: every registered one.")] = None,
    grid: Annotated[Optional[list[str]], typer.Option(
        "--grid", help="One grid axis KEY=VALUES (repeatable). Values are separated by ',' (alpha=1e-4,3e-4), or by ':' "
        "for tuple-valued keys (periods=1,8,64:1,16,128). A key applies to the strategies that declare it; the others "
        "run once per seed.")] = None,
    seeds: Annotated[Optional[str], typer.Option(help="Comma-separated seeds, or a range such as 0-4; default: 0.")] = None,
    name: Annotated[Optional[str], typer.Option(help="Results sub-directory (OUT/NAME/RUN_ID); default: the suite's name.")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Epochs per experience; default: the suite's.")] = None,
    scenario: Annotated[Optional[str], typer.Option(help="class, task or domain; default: the suite's.")] = None,
    head: Annotated[Optional[str], typer.Option(help="Task scenario head: mask or multi.")] = None,
    backbone: Annotated[Optional[str], typer.Option(help="Backbone model; default: the suite's.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Training minibatch size; default: the suite's.")] = None,
    protocol: Annotated[Optional[str], typer.Option(
        help="Published protocol preset (e.g. der2020) pinning backbone, epochs, batch and hyperparameters.")] = None,
    data_path: Annotated[Optional[str], typer.Option(
        help="fast (device-resident tensors) or avalanche (Avalanche's stock DataLoader); default: fast.")] = None,
    amp: Annotated[Optional[str], typer.Option(help="Mixed precision: none or bf16; default: none.")] = None,
    compile: Annotated[Optional[bool], typer.Option("--compile", help="torch.compile each run's model.")] = None,
    channels_last: Annotated[Optional[bool], typer.Option("--channels-last", help="Channels-last memory format for image models.")] = None,
    device: Annotated[Optional[str], typer.Option(
        help="auto, cpu or cuda; default: auto (cuda when GPUs are visible, or when the Ray cluster has GPUs).")] = None,
    executor: Annotated[Optional[str], typer.Option(
        help="local (one subprocess per run on this machine) or ray (Ray tasks); default: local.")] = None,
    jobs: Annotated[Optional[int], typer.Option(
        help="Runs at once. Local: default 1 on CPU, the number of GPU slots on GPU. Ray: the most runs in flight; "
        "default: all, scheduled by Ray.")] = None,
    runs_per_gpu: Annotated[Optional[int], typer.Option(
        help="Runs packed onto one GPU: local GPU slots are GPUs x this, and a Ray run asks for num_gpus=1/this; default: 1.")] = None,
    cpus_per_run: Annotated[Optional[float], typer.Option(
        help="Ray: CPUs each run reserves (num_cpus), also its torch thread count; default: 1.")] = None,
    address: Annotated[Optional[str], typer.Option(
        help="Ray: address of a running cluster (auto to find it); default: start a local Ray instance.")] = None,
    retries: Annotated[Optional[int], typer.Option(
        help="Ray: how often a run whose worker or node died is retried (max_retries); default: 2.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Results directory; default: results.")] = None,
    data_root: Annotated[Optional[Path], typer.Option(
        help="Dataset directory (else $NLBENCH_DATA, else ~/.cache/nlbench/data).")] = None,
    download: Annotated[Optional[bool], typer.Option(
        "--download/--no-download", help="Download missing datasets when online; default: yes.")] = None,
    retry_failed: Annotated[Optional[bool], typer.Option(
        "--retry-failed/--no-retry-failed", help="Run again the runs recorded as failed (a crash says nothing about the "
        "method); default: yes. Completed and diverged runs are always kept.")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print the plan (every run and whether it is already done) and the number of runs; run nothing.")] = False,
) -> None:
    """Sweep strategies x hyperparameter grid x seeds; resumable: running the same command again skips finished runs.

    Every run is stored under OUT/NAME/RUN_ID. Exit code 0 when every run completed or diverged, 1 when a
    run failed, 2 on bad input, 130 on Ctrl-C (finished runs are kept).
    """
    with user_errors():
        file_values = load_config(config) if config is not None else {}
        cli_values = {
            "suite": suite, "strategy": strategy, "grid": parse_grid_options(grid or []) or None, "seeds": seeds,
            "name": name, "epochs": epochs, "scenario": scenario, "head": head, "backbone": backbone,
            "batch_size": batch_size, "protocol": protocol, "data_path": data_path, "amp": amp, "compile": compile,
            "channels_last": channels_last, "device": device, "executor": executor, "jobs": jobs,
            "runs_per_gpu": runs_per_gpu, "cpus_per_run": cpus_per_run, "address": address, "retries": retries,
            "out": out, "data_root": data_root, "download": download, "retry_failed": retry_failed,
        }
        code = run_sweep(build_settings(file_values, cli_values), RichSweepView(), dry_run=dry_run)
    if code:
        raise typer.Exit(code)


def _exit_when_orphaned(interval_s: float = 1.0) -> None:
    """End this process when its parent (the sweep driver) dies, so a killed sweep leaves no stray runs."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(interval_s)
            if os.getppid() != parent:
                os._exit(137)

    threading.Thread(target=watch, name="nlbench-watch-parent", daemon=True).start()


def run_one_command(
    spec_json: Annotated[Path, typer.Argument(help="A run spec as JSON (RunSpec.to_json()).", dir_okay=False)],
    out: Annotated[Path, typer.Option(help="Results directory; the run is written to OUT/NAME/RUN_ID.")] = Path("results"),
    data_root: Annotated[Optional[Path], typer.Option(help="Dataset directory (else $NLBENCH_DATA, else ~/.cache/nlbench/data).")] = None,
    download: Annotated[bool, typer.Option(help="Download missing datasets when online.")] = True,
    threads: Annotated[Optional[int], typer.Option(help="Torch CPU threads for this run; default: torch's.")] = None,
    watch_parent: Annotated[bool, typer.Option(help="Exit when the parent process (the sweep) dies.")] = False,
) -> None:
    """Run one spec and write it to the results store (the local sweep executor runs this per run)."""
    with user_errors():
        if watch_parent:
            _exit_when_orphaned()
        try:
            data = json.loads(spec_json.read_text())
        except (OSError, ValueError) as err:
            raise _user_error(f"cannot read the run spec {spec_json}: {err}") from None
        from nlbench.core.spec import RunSpec

        try:
            spec = RunSpec.from_dict(data)
        except TypeError as err:
            raise _user_error(f"{spec_json} does not describe a run: {err}") from None

        import torch

        from nlbench.core.runner import run_one
        from nlbench.core.store import check_writable, process_identity, run_dir, write_run

        if threads:
            torch.set_num_threads(threads)
        check_writable(out)
        result = {**run_one(spec, data_root=data_root, download=download), **process_identity()}  # who trained it
        # Temporary files left by a writer that was killed mid-write: this process owns the run now
        # (the sweep that started it holds the run's claim and handed it down).
        for stale in run_dir(out, spec).glob(".*.tmp"):
            stale.unlink(missing_ok=True)
        write_run(out, spec, result)
        typer.echo(json.dumps({"run_id": spec.run_id, "status": result["status"]}))
