"""`nlbench run`: options, progress on stderr, and the results table. The work is `nlbench.commands.run`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Mapping, Optional

import typer

from nlbench.cli.common import console, parse_hparams, split_list, user_errors


def run_command(
    suite: Annotated[str, typer.Option(help="Benchmark suite (see `nlbench list`).")] = "split-digits",
    strategy: Annotated[Optional[str], typer.Option(help="Comma-separated strategies; default: every registered one.")] = None,
    scenario: Annotated[Optional[str], typer.Option(help="class, task or domain; default: the suite's.")] = None,
    backbone: Annotated[Optional[str], typer.Option(help="Backbone model; default: the suite's.")] = None,
    head: Annotated[Optional[str], typer.Option(help="Task scenario head: mask (logit masking) or multi (one head per task).")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Epochs per experience; default: the suite's.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Training minibatch size; default: the suite's.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed (model init, data order, permutations).")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    hp: Annotated[Optional[list[str]], typer.Option("--hp", help="Hyperparameter override KEY=VALUE (repeatable).")] = None,
    out: Annotated[Path, typer.Option(help="Results directory.")] = Path("results"),
    name: Annotated[Optional[str], typer.Option(help="Results sub-directory; default: the suite's name.")] = None,
    protocol: Annotated[Optional[str], typer.Option(help="Published protocol preset (e.g. der2020) pinning backbone, epochs, batch and hyperparameters.")] = None,
    data_root: Annotated[Optional[Path], typer.Option(help="Dataset directory (else $NLBENCH_DATA, else ~/.cache/nlbench/data).")] = None,
    download: Annotated[bool, typer.Option(help="Download missing datasets when online.")] = True,
    force: Annotated[bool, typer.Option(help="Re-run even when a finished result with the same spec exists.")] = False,
    data_path: Annotated[str, typer.Option(help="fast (device-resident tensors, the default) or avalanche (Avalanche's stock DataLoader).")] = "fast",
    amp: Annotated[str, typer.Option(help="Mixed precision: none or bf16 (autocast; losses and metrics stay float32).")] = "none",
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model (worth it on a GPU).")] = False,
    channels_last: Annotated[bool, typer.Option("--channels-last", help="Channels-last memory format for image models.")] = False,
    suite_option: Annotated[Optional[list[str]], typer.Option("--suite-option", help="Suite option KEY=VALUE (repeatable; e.g. n_tasks=20, regime=reexposure; see `nlbench list`).")] = None,
    eval_every: Annotated[int, typer.Option(help="Evaluate every seen experience every N training iterations (stability gap); 0: off.")] = 0,
    probes: Annotated[bool, typer.Option("--probes", help="Clocked models: per-level update counts, weight change and accuracy with the level reverted.")] = False,
) -> None:
    """Run strategies on one suite, store every run under OUT/NAME/RUN_ID, and print a results table.

    Exit code 0 when every run completed or diverged (divergence is a result), 1 when a run failed
    (its error is stored and printed), 2 on bad input.
    """
    with user_errors():
        from nlbench.commands.run import plan_specs, run_specs
        from nlbench.core.device import check_device, resolve_device
        from nlbench.core.store import check_writable

        names = split_list(strategy) if strategy else None  # None: every strategy that can run here
        fields = dict(seed=seed, scenario=scenario, backbone=backbone, head=head, epochs=epochs, batch_size=batch_size,
                      protocol=protocol, data_path=data_path, amp=amp, compile=compile, channels_last=channels_last,
                      suite_options=parse_hparams(suite_option or [], flag="--suite-option"), eval_every=eval_every, probes=probes)
        overrides = parse_hparams(hp or [])
        check_device(device)
        # Validate everything before torch loads (the device is only known once it has): bad input
        # is answered in well under a second.
        plan_specs(suite, names, overrides, device="cpu", name=name, **fields)
        specs = plan_specs(suite, names, overrides, device=str(resolve_device(device)), name=name, **fields)
        check_writable(out)
        with _RunProgress() as progress:
            outcomes = run_specs(specs, out, data_root=data_root, download=download, force=force, events=progress.event)
        _print_table(outcomes, out)
        failed = [o for o in outcomes if o.result["status"] != "completed"]
        err = console(stderr=True)
        for o in failed:
            err.print(f"[red]{o.spec.strategy}: {o.result['status']}[/red] {str(o.result['error']).splitlines()[0]}")
    if any(o.result["status"] == "failed" for o in outcomes):
        raise typer.Exit(1)


class _RunProgress:
    """Renders `run_specs` events: a status line while data loads, then a bar of experiences over all
    runs (run i of n, elapsed, remaining); one plain line per finished run when stderr is not a terminal."""

    def __init__(self) -> None:
        self.console = console(stderr=True)
        self.progress: Any = None
        self.status: Any = None
        self.task: Any = None
        self.experiences = 1

    def __enter__(self) -> "_RunProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.status is not None:
            self.status.stop()
        if self.progress is not None:
            self.progress.stop()

    def _start_bar(self, total_runs: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("experiences"), TimeElapsedColumn(), TimeRemainingColumn(),
                                 console=self.console, transient=False, disable=not self.console.is_terminal)
        self.task = self.progress.add_task("runs", total=total_runs * self.experiences)
        self.progress.start()

    def event(self, kind: str, info: Mapping[str, Any]) -> None:
        if kind == "loading":
            self.experiences = int(info["experiences"])
            if self.console.is_terminal:  # in a log, the first finished run is the first line
                self.status = self.console.status(f"loading {info['suite']} ...")
                self.status.start()
            self._total = int(info["total"])
        elif kind == "loaded":
            if self.status is not None:
                self.status.stop()
                self.status = None
            self._start_bar(self._total)
        elif kind == "waiting":
            self.progress.console.print(f"{info['spec'].strategy}: {info['holder']} is running this run; waiting for it",
                                        highlight=False)
        elif kind == "started":
            spec = info["spec"]
            self.progress.update(self.task, description=f"run {info['index'] + 1}/{info['total']} {spec.strategy:<16}")
        elif kind == "experience" and info["experience"] > 0:
            self.progress.advance(self.task)
        elif kind == "finished":
            self.progress.update(self.task, completed=(info["index"] + 1) * self.experiences)
            if not self.console.is_terminal:
                result, spec = info["result"], info["spec"]
                acc = (result.get("metrics") or {}).get("acc")
                what = f"ACC {100 * acc:.1f}%" if acc is not None else str(result.get("status"))
                self.console.print(f"run {info['index'] + 1}/{info['total']} {spec.strategy}: {result['status']}"
                                   f"{' (reused from the store)' if info['cached'] else ''}, {what}", highlight=False)


def _print_table(outcomes: list, out: Path) -> None:
    from rich.table import Table

    from nlbench.core.metrics import DEFINITIONS

    first = outcomes[0].spec
    table = Table(
        title=f"{first.suite}, {first.scenario}-incremental, seed {first.seed}, {first.epochs} epoch(s) per experience",
        title_justify="left",
    )
    for column in ("strategy", "status", "ACC %", "forgetting %", "BWT %", "time s", "peak MB", "run id"):
        table.add_column(column, justify="left" if column in ("strategy", "status", "run id") else "right")

    def pct(value: float | None) -> str:
        return "-" if value is None or value != value else f"{100 * value:.1f}"

    for outcome in outcomes:
        spec, result = outcome.spec, outcome.result
        m = result.get("metrics") or {}
        table.add_row(
            spec.strategy,
            result["status"] + (" (cached)" if outcome.cached else ""),
            pct(m.get("acc")), pct(m.get("forgetting")), pct(m.get("bwt")),
            f"{result['wall_time_s']:.1f}", f"{result['peak_memory_mb']:.0f}", spec.run_id[:8],
        )
    out_console = console()
    out_console.print(table)
    for key in ("acc", "forgetting", "bwt"):
        out_console.print(f"  {DEFINITIONS[key]}", highlight=False)
    out_console.print(f"  Runs stored in {out / first.name}/<run id>/", highlight=False)
