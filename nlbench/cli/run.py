"""`nlbench run`: options, progress on stderr, and the results table. The work is `nlbench.commands.run`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from nlbench.cli.common import LogDirOption, LogOption, console, parse_hparams, split_list, tracking_option, user_errors
from nlbench.cli.run_progress import RunProgress
from nlbench.core.signals import terminate_as_interrupt


def run_command(
    suite: Annotated[str, typer.Option(help="Benchmark suite (see `nlbench list`).")] = "split-digits",
    strategy: Annotated[Optional[str], typer.Option(help="Comma-separated strategies; default: every registered one.")] = None,
    scenario: Annotated[Optional[str], typer.Option(help="class, task or domain; default: the suite's.")] = None,
    backbone: Annotated[Optional[str], typer.Option(help="Backbone model; default: the suite's.")] = None,
    head: Annotated[Optional[str], typer.Option(help="Task scenario head: mask (logit masking) or multi (one head per task).")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Epochs per experience; default: the suite's.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Training minibatch size; default: the suite's.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed (model init, data order, permutations), 0..2^32-1.",
                                      parser=lambda text: _ascii_int(text, "--seed"))] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    hp: Annotated[Optional[list[str]], typer.Option("--hp", help="Hyperparameter override KEY=VALUE (repeatable).")] = None,
    out: Annotated[Path, typer.Option(help="Results directory.")] = Path("results"),
    name: Annotated[Optional[str], typer.Option(help="Results sub-directory; default: the suite's name.")] = None,
    protocol: Annotated[Optional[str], typer.Option(help="Published protocol preset (e.g. der2020) pinning backbone, epochs, batch and hyperparameters.")] = None,
    data_root: Annotated[Optional[Path], typer.Option(help="Dataset directory (else $NLBENCH_DATA, else ~/.cache/nlbench/data).")] = None,
    download: Annotated[bool, typer.Option(help="Download missing datasets when online.")] = True,
    force: Annotated[bool, typer.Option("--force", help="Re-run even when a finished result with the same spec exists.")] = False,
    data_path: Annotated[str, typer.Option(help="fast (device-resident tensors, the default) or avalanche (Avalanche's stock DataLoader).")] = "fast",
    amp: Annotated[str, typer.Option(help="Mixed precision: none or bf16 (autocast; losses and metrics stay float32).")] = "none",
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model (worth it on a GPU).")] = False,
    channels_last: Annotated[bool, typer.Option("--channels-last", help="Channels-last memory format for image models.")] = False,
    log: LogOption = None,
    log_dir: LogDirOption = None,
    suite_option: Annotated[Optional[list[str]], typer.Option("--suite-option", help="Suite option KEY=VALUE (repeatable; e.g. n_tasks=20, regime=reexposure; see `nlbench list`).")] = None,
    eval_every: Annotated[int, typer.Option(help="Evaluate every seen experience every N training iterations (stability gap); 0: off.")] = 0,
    probes: Annotated[bool, typer.Option("--probes", help="Clocked models: per-level update counts, weight change and accuracy with the level reverted.")] = False,
) -> None:
    """Run strategies on one suite, store every run under OUT/NAME/RUN_ID, and print a results table.

    Exit code 0 when every run completed or diverged (divergence is a result), 1 when a run failed
    (its error is stored and printed), 2 on bad input, 130 on Ctrl-C or SIGTERM (finished runs are kept).
    """
    with user_errors(), terminate_as_interrupt():
        from nlbench.commands.run import plan_specs, run_specs
        from nlbench.core.device import check_device, resolve_device
        from nlbench.core.store import check_writable

        names = split_list(strategy) if strategy else None  # None: every strategy that can run here
        fields = dict(seed=seed, scenario=scenario, backbone=backbone, head=head, epochs=epochs, batch_size=batch_size,
                      protocol=protocol, data_path=data_path, amp=amp, compile=compile, channels_last=channels_last,
                      suite_options=parse_hparams(suite_option or [], flag="--suite-option"), eval_every=eval_every, probes=probes)
        overrides = parse_hparams(hp or [])
        check_device(device)
        tracking = tracking_option(log, log_dir)
        # Validate everything before torch loads (the device is only known once it has): bad input
        # is answered in well under a second.
        checked = plan_specs(suite, names, overrides, device="cpu", name=name, **fields)
        unprobed = list(dict.fromkeys(s.strategy for s in checked if probes and not s.probes))
        if unprobed:
            from nlbench.core.registry import probes_note

            typer.echo(f"note: {probes_note(unprobed)}", err=True)
        check_writable(out)  # before the progress line: a store that cannot be written is one line
        from nlbench.core.regime import regime_warning

        warning = regime_warning(checked)
        with RunProgress() as progress:
            progress.starting()
            specs = plan_specs(suite, names, overrides, device=str(resolve_device(device)), name=name, **fields)
            if warning:  # after the device is known (a bad device is its one line), before any data loads
                progress.warn(warning)
            outcomes = run_specs(specs, out, data_root=data_root, download=download, force=force, events=progress.event,
                                 tracking=tracking)
        _print_table(outcomes, out)
        failed = [o for o in outcomes if o.result["status"] != "completed"]
        err = console(stderr=True)
        for o in failed:
            err.print(f"[red]{o.spec.strategy}: {o.result['status']}[/red] {str(o.result['error']).splitlines()[0]}")
    if any(o.result["status"] == "failed" for o in outcomes):
        raise typer.Exit(1)


def _ascii_int(text: Any, flag: str) -> int:
    """An integer option in plain ASCII digits (Click's int() also reads '٣' as 3)."""
    from nlbench.errors import echo

    if isinstance(text, int):
        return text
    body = str(text).strip().removeprefix("-")
    if not (body.isascii() and body.isdecimal()) or len(body) > 30:
        raise typer.BadParameter(f"{echo(str(text))} is not a valid integer (plain digits, 0..2^32-1)", param_hint=flag)
    return int(str(text).strip())


def _print_table(outcomes: list, out: Path) -> None:
    from rich.table import Table

    from nlbench.core.metrics import DEFINITIONS

    first = outcomes[0].spec
    table = Table(
        title=f"{first.suite}, {first.scenario}-incremental, seed {first.seed}, {first.epochs} epoch(s) per experience",
        title_justify="left",
    )
    for column in ("strategy", "status", "ACC %", "forgetting %", "BWT %", "run time s", "peak MB", "run id"):
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
            _number(result.get("wall_time_s"), 1) + (" (stored)" if outcome.cached else ""),
            _number(result.get("peak_memory_mb"), 0) + ("*" if result.get("peak_memory_kind") == "rss_peak_process" else ""),
            spec.run_id[:8],
        )
    out_console = console()
    out_console.print(table)
    for key in ("acc", "forgetting", "bwt"):
        out_console.print(f"  {DEFINITIONS[key]}", highlight=False)
    for line in _footnotes(outcomes):
        out_console.print(f"  {line}", highlight=False)
    out_console.print(f"  Runs stored in {out / first.name}/<run id>/", highlight=False)


def _number(value: Any, digits: int) -> str:
    return "-" if value is None or value != value else f"{value:.{digits}f}"


def _footnotes(outcomes: list) -> list[str]:
    """What the time and memory columns measure, said once under the table."""
    kinds = {o.result.get("peak_memory_kind") for o in outcomes}
    lines = ["run time: wall time of the whole run (training and every evaluation)."]
    if any(o.cached for o in outcomes):
        lines.append("cached: reused from the store (not trained again); its time and memory are the stored run's.")
    if "cuda_max_allocated" in kinds:
        lines.append("peak MB on GPU: the CUDA allocator's peak during the run (tensors only).")
    if "rss_peak" in kinds:
        lines.append("peak MB on CPU: the run's peak resident memory (reset at its start), including the Python/PyTorch baseline.")
    if "rss_peak_process" in kinds:
        lines.append("peak MB*: the process's peak resident memory so far (this system cannot reset it per run).")
    return lines
