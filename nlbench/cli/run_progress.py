"""What `nlbench run` shows on stderr while it works (the rendering of `nlbench.commands.run` events).

In a terminal: a status line while PyTorch loads and while the suite's data loads, then one bar over
the experiences still to train, saying which run of how many, the unit, the elapsed time and the time
left in the run that trains now:

    run 3/16 ewc        ━━━━━━━━━━━━━━━━━━━━━━━          12/80 experiences  elapsed 0:00:09  run left 0:00:04

The time left is the run's own: its strategy's finished experiences times the experiences it has left
(`-` until it has finished one). Strategies differ in cost by orders of magnitude (a 3 s estimate for a
47 s run came from averaging over them), so no estimate mixes them. A run reused from the store takes
its experiences off the bar and prints one line. When stderr is not a terminal (CI, a log file): a line
at once while PyTorch and the data load, then one line per finished experience and per finished run,
each stamped with the time since the command started.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Optional

from nlbench.cli.common import console


def _hms(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _pct(value: Any) -> str:
    return "-" if value is None or value != value else f"{100 * value:.1f}%"


def _run_left_column(owner: "RunProgress") -> Any:
    """A bar column `run left H:MM:SS` of the run that trains now (`RunProgress.run_left`)."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class RunLeft(ProgressColumn):
        def render(self, task: Any) -> Text:
            left = owner.run_left()
            return Text(f"run left {'-' if left is None else _hms(left)}")

    return RunLeft()


class RunProgress:
    """Renders `run_specs` events; a context manager that stops the live display on the way out."""

    def __init__(self, err: Optional[Any] = None, clock: Callable[[], float] = time.perf_counter) -> None:
        self.console = err if err is not None else console(stderr=True)
        self.live = self.console.is_terminal
        self.clock = clock
        self.started = clock()
        self.exp_times: dict[str, list[float]] = {}  # strategy -> seconds per experience trained here
        self.run_done = 0  # experiences of the current run trained
        self.status: Any = None
        self.progress: Any = None
        self.task: Any = None
        self.experiences = 1
        self.runs = 0
        self.remaining_total = 0
        self.done = 0  # experiences trained by this command
        self.where: Mapping[str, Any] = {}
        self.exp_started = 0.0

    def __enter__(self) -> "RunProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop_status()
        if self.progress is not None:
            self.progress.stop()

    def warn(self, text: str) -> None:
        """One warning line (e.g. a clock level that will barely tick), above any live display."""
        self._line(f"warning: {text}")

    # -- helpers --------------------------------------------------------------------------------
    def _line(self, text: str) -> None:
        stamp = f"[{_hms(self.clock() - self.started)}] " if not self.live else ""
        target = self.progress.console if self.progress is not None else self.console
        target.print(stamp + text, highlight=False, markup=False, soft_wrap=True)

    def _status(self, text: str) -> None:
        if not self.live:
            return
        if self.status is None:
            self.status = self.console.status(text)
            self.status.start()
        else:
            self.status.update(text)

    def _stop_status(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None

    def _run_name(self, info: Mapping[str, Any]) -> str:
        return f"run {info['index'] + 1}/{info['total']} {info['spec'].strategy}"

    # -- events ---------------------------------------------------------------------------------
    def starting(self) -> None:
        """Before torch loads (several seconds on a cold start, a minute on a busy machine): say so,
        on a pipe too."""
        self._status("starting: loading PyTorch and Avalanche ...")
        if not self.live:
            self._line("starting: loading PyTorch, Avalanche and the data ...")

    def run_left(self) -> Optional[float]:
        """Seconds left in the run that trains now, from its strategy's own finished experiences; None
        until there is one."""
        spec = self.where.get("spec")
        times = self.exp_times.get(spec.strategy) if spec is not None else None
        if not times:
            return None
        per_experience = sum(times) / len(times)
        return max(0.0, per_experience * (self.experiences - self.run_done) - (self.clock() - self.exp_started))

    def event(self, kind: str, info: Mapping[str, Any]) -> None:
        if kind == "loading":
            self.experiences, self.runs = int(info["experiences"]), int(info["total"])
            self._status(f"loading the {info['suite']} data ...")
        elif kind == "loaded":  # said once the data is there: a data error stays one line
            self._stop_status()
            if not self.live:
                self._line(f"loaded {info['suite']}: {self.runs} run(s) x {self.experiences} experiences")
            self._start_bar()
        elif kind == "waiting":
            self._line(f"{self._run_name(info)}: {info['holder']} is running this run; waiting for it")
        elif kind == "started":
            self.where, self.run_done = info, 0
            if self.progress is not None:
                self.progress.update(self.task, description=f"{self._run_name(info):<24}")
        elif kind == "experience":
            if info["experience"] > 0:
                self._experience_done(info["experience"] - 1)
            self.exp_started = self.clock()
        elif kind == "finished":
            self._finished(info)

    def _start_bar(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.remaining_total = self.runs * self.experiences
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("experiences"),
            TextColumn("elapsed"), TimeElapsedColumn(), _run_left_column(self),
            console=self.console, transient=False, disable=not self.live,
        )
        self.task = self.progress.add_task("", total=self.remaining_total)
        self.progress.start()

    def _experience_done(self, index: int) -> None:
        took = self.clock() - self.exp_started
        self.done += 1
        self.run_done += 1
        if self.where.get("spec") is not None:
            self.exp_times.setdefault(self.where["spec"].strategy, []).append(took)
        self.exp_started = self.clock()
        self.progress.update(self.task, completed=self.done)
        if not self.live:
            self._line(f"{self._run_name(self.where)}: experience {index + 1}/{self.experiences} trained and evaluated "
                       f"in {took:.1f} s")

    def _finished(self, info: Mapping[str, Any]) -> None:
        result = info["result"]
        status = str(result.get("status"))
        metrics = result.get("metrics") or {}
        what = f"ACC {_pct(metrics.get('acc'))}, forgetting {_pct(metrics.get('forgetting'))}" if metrics else ""
        if info["cached"]:
            # Reused: nothing was trained, so its experiences leave the bar and the estimate.
            self.remaining_total -= self.experiences
            self.progress.update(self.task, total=self.remaining_total, completed=self.done)
            self._line(f"{self._run_name(info)}: cached ({status}; the stored run took {result.get('wall_time_s') or 0:.1f} s)"
                       + (f", {what}" if what else ""))
            return
        if status == "completed":
            self._experience_done(self.experiences - 1)
        else:  # stopped early: the experiences it did not train leave the bar
            trained = len(result.get("accuracy_matrix") or [])
            self.remaining_total -= self.experiences - trained
            self.done = min(self.done, self.remaining_total)
            self.progress.update(self.task, total=self.remaining_total, completed=self.done)
        first = (str(result.get("error") or "").strip().splitlines() or [""])[0]
        self._line(f"{self._run_name(info)}: {status} in {result.get('wall_time_s') or 0:.1f} s"
                   + (f", {what}" if what else "") + (f" ({first})" if first and status != "completed" else ""))
