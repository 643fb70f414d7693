"""What `nlbench sweep` shows: the live progress of the runs, the plan of a dry run and the summary
table. `RichSweepView` is the rich rendering of `nlbench.commands.sweep.SweepView`; its live display is
the executors' `Events` (started, finished, waiting, done elsewhere)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from nlbench.cli.common import console
from nlbench.commands.sweep import PlannedRun, summary_rows


def _hms(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _pct(value: Any) -> str:
    return "-" if value is None or value != value else f"{100 * value:.1f}"


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

    from nlbench.commands.report.stats import t_critical

    table = Table(title=title, title_justify="left")
    for column in ("strategy", "grid point", "runs", "completed", "diverged", "failed", "not run", "ACC % ± 95% CI",
                   "forgetting %"):
        table.add_column(column, justify="left" if column in ("strategy", "grid point") else "right")
    for row in summary_rows(planned, results):
        # "±" is the 95% CI of the mean here too, the interval `nlbench report` gives the same cell
        n = row["completed"]
        ci = t_critical(n) * row["acc_std"] / math.sqrt(n) if row["acc_std"] is not None and n > 1 else None
        acc = _pct(row["acc_mean"]) + (f" ± {100 * ci:.1f}" if ci is not None else "")
        table.add_row(escape(row["strategy"]), escape(row["point"]), str(row["runs"]), str(row["completed"]), str(row["diverged"]),
                      str(row["failed"]), str(row["not_run"]), acc, _pct(row["forgetting_mean"]))
    console.print(table)
    console.print("  ACC: final average accuracy over the completed seeds, mean ± 95% CI of the mean (Student t, "
                  "as in `nlbench report`; one seed: no interval); forgetting: Chaudhry et al.", highlight=False)
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
        self.err.print(text, highlight=False, soft_wrap=True)  # one message, one line (logs grep it)

    def show_plan(self, planned: Sequence[PlannedRun], results: Mapping[str, Any], retry_failed: bool,
                  out: Path, header: str) -> None:
        out_console = console()
        print_plan(out_console, planned, results, retry_failed, out)
        out_console.print(header, highlight=False)

    def live(self, total: int, labels: Mapping[str, str]) -> "_Display":
        return _Display(self.err, total, labels)

    def show_summary(self, title: str, planned: Sequence[PlannedRun], results: Mapping[str, Any]) -> None:
        print_summary(console(), title, planned, results)
