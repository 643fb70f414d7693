"""`nlbench sweep` and the hidden `nlbench run-one` (the local executor's child): their options, and
nothing else. The work is `nlbench.commands.sweep` (`run_sweep`, `run_child`); what a sweep shows is
`nlbench.cli.sweep_display`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from nlbench.cli.common import LogDirOption, LogOption, parse_hparams, user_errors
from nlbench.cli.sweep_display import RichSweepView
from nlbench.commands.sweep import build_settings, load_config, parse_grid_options, run_child, run_sweep


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
    suite_option: Annotated[Optional[list[str]], typer.Option(
        "--suite-option", help="Suite option KEY=VALUE (repeatable; e.g. n_tasks=20, regime=reexposure).")] = None,
    eval_every: Annotated[Optional[int], typer.Option(
        help="Evaluate every seen experience every N training iterations (stability gap); default: 0 (off).")] = None,
    probes: Annotated[Optional[bool], typer.Option("--probes", help="Clock-level probes of clocked models.")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print the plan (every run and whether it is already done) and the number of runs; run nothing.")] = False,
    log: LogOption = None,
    log_dir: LogDirOption = None,
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
            "log": log or None, "log_dir": log_dir,
            "suite_options": parse_hparams(suite_option, flag="--suite-option") if suite_option else None,
            "eval_every": eval_every, "probes": probes,
        }
        code = run_sweep(build_settings(file_values, cli_values), RichSweepView(), dry_run=dry_run)
    if code:
        raise typer.Exit(code)


def run_one_command(
    spec_json: Annotated[Path, typer.Argument(help="A run spec as JSON (RunSpec.to_json()).", dir_okay=False)],
    out: Annotated[Path, typer.Option(help="Results directory; the run is written to OUT/NAME/RUN_ID.")] = Path("results"),
    data_root: Annotated[Optional[Path], typer.Option(help="Dataset directory (else $NLBENCH_DATA, else ~/.cache/nlbench/data).")] = None,
    download: Annotated[bool, typer.Option(help="Download missing datasets when online.")] = True,
    threads: Annotated[Optional[int], typer.Option(help="Torch CPU threads for this run; default: torch's.")] = None,
    watch_parent: Annotated[bool, typer.Option(help="Exit when the parent process (the sweep) dies.")] = False,
    tracking: Annotated[Optional[str], typer.Option(help="Experiment trackers to log to, as Tracking JSON.")] = None,
) -> None:
    """Run one spec and write it to the results store (the local sweep executor runs this per run)."""
    with user_errors():
        from nlbench.core.tracking import Tracking

        spec, result = run_child(spec_json, out, data_root=data_root, download=download, threads=threads,
                                 watch_parent=watch_parent, tracking=Tracking.from_json(tracking) if tracking else None)
        typer.echo(json.dumps({"run_id": spec.run_id, "status": result["status"]}))
