"""`nlbench cost`: options, progress on stderr, and the cost table. The work is `nlbench.commands.cost`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from nlbench.cli.common import console, parse_hparams, split_list, user_errors


def cost_command(
    strategy: Annotated[str, typer.Option(help="Comma-separated strategies to measure, e.g. adam,cms,cms-sync.")] = "",
    suite: Annotated[str, typer.Option(help="Benchmark suite (see `nlbench list`).")] = "split-digits",
    suite_option: Annotated[Optional[list[str]], typer.Option("--suite-option", help="Suite option KEY=VALUE (repeatable; e.g. n_tasks=3).")] = None,
    scenario: Annotated[Optional[str], typer.Option(help="class, task or domain; default: the suite's.")] = None,
    head: Annotated[Optional[str], typer.Option(help="Task scenario head: mask or multi.")] = None,
    backbone: Annotated[Optional[str], typer.Option(help="Backbone model; default: the suite's.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Training minibatch size; default: the suite's.")] = None,
    hp: Annotated[Optional[list[str]], typer.Option("--hp", help="Hyperparameter override KEY=VALUE (repeatable).")] = None,
    steps: Annotated[int, typer.Option(help="Training iterations timed per strategy per repeat.")] = 50,
    repeats: Annotated[int, typer.Option(help="Rounds; each times every strategy once, in a seeded random order.")] = 7,
    warmup: Annotated[int, typer.Option(help="Untimed iterations at the start of every turn.")] = 3,
    reference: Annotated[Optional[str], typer.Option(help="Strategy the ratios divide by; default: the first.")] = None,
    spread: Annotated[str, typer.Option(help="Spread of a ratio over repeats: iqr (25th-75th percentile) or ci95 (bootstrap CI of the median).")] = "iqr",
    seed: Annotated[int, typer.Option(help="Seed of the models, the data and the interleaving order.")] = 0,
    threads: Annotated[int, typer.Option(help="torch intra-op threads (1: the thread CPU time is the whole step).")] = 1,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    out: Annotated[Path, typer.Option(help="Results directory.")] = Path("results"),
    name: Annotated[Optional[str], typer.Option(help="Sub-directory of cost.json; default: a slug of the setting, e.g. cost-permuted-fmnist-domain-n_tasks3-cpu.")] = None,
    data_root: Annotated[Optional[Path], typer.Option(help="Dataset directory (else $NLBENCH_DATA, else ~/.cache/nlbench/data).")] = None,
) -> None:
    """Measure each strategy's training-step time and state bytes in isolation, store them in
    OUT/NAME/cost.json and print a table.

    Every strategy is built as its run would be and trained on experience 0, then timed for --steps
    iterations per repeat, the strategies interleaved in a seeded random order within one process, in
    thread CPU time on one thread (wall time between synchronisations on a GPU). State bytes are the
    method's own tensors counted exactly: parameters, gradients, optimizer and clock state, rehearsal
    buffers, stored logits and other plugin state. Exit code 2 on bad input.
    """
    with user_errors():
        from nlbench.commands.cost import plan_cost, run_cost
        from nlbench.core.device import check_device, resolve_device
        from nlbench.core.store import check_writable

        check_device(device)
        fields = dict(scenario=scenario, head=head, backbone=backbone, batch_size=batch_size,
                      suite_options=parse_hparams(suite_option or [], flag="--suite-option"))
        arguments = dict(steps=steps, repeats=repeats, warmup=warmup, seed=seed, threads=threads,
                         reference=reference, spread=spread, name=name, **fields)
        names, overrides = split_list(strategy), parse_hparams(hp or [])
        plan_cost(suite, names, overrides, device="cpu", **arguments)  # bad input answered before torch loads
        plan = plan_cost(suite, names, overrides, device=str(resolve_device(device)), **arguments)
        check_writable(out)
        err = console(stderr=True)
        record, path = run_cost(plan, out, data_root=data_root, events=lambda kind, info: _progress(err, kind, info))
    _print_table(record, path)


def _progress(err: Any, kind: str, info: Any) -> None:
    if kind == "loading":
        err.print(f"loading {info['suite']}", highlight=False)
    elif kind == "preparing":
        err.print(f"{info['strategy']}: built, training on experience 0", highlight=False)
    elif kind == "round":
        err.print(f"round {info['round']}/{info['rounds']}: {', '.join(info['order'])}", highlight=False)


def _print_table(record: dict, path: Path) -> None:
    from rich.table import Table

    setting = record["setting"]
    options = ",".join(f"{k}={v}" for k, v in sorted(setting["suite_options"].items()))
    table = Table(title=f"{setting['suite']}{' (' + options + ')' if options else ''}, {setting['scenario']}-incremental, "
                        f"{setting['backbone']}, batch {setting['batch_size']}, {setting['device_name']}",
                  title_justify="left")
    spread = record["rows"][0]["ratio_to_reference"]["spread"]
    columns = ["strategy", "step ms", f"x {record['reference']} [{'IQR' if spread == 'iqr' else '95% CI'}]",
               "state MB", "params", "grads", "optimizer", "clock", "buffer", "logits", "other"]
    cuda = any(row["cuda_peak_bytes"] is not None for row in record["rows"])
    if cuda:
        columns.append("step peak MB")
    for column in columns:
        table.add_column(column, justify="left" if column == "strategy" else "right")
    for row in record["rows"]:
        ratio, state = row["ratio_to_reference"], row["state_bytes"]
        cells = [row["strategy"] + (" (diverged)" if row.get("diverged") else ""),
                 f"{1000 * row['step_time_median_s']:.3f}",
                 f"{ratio['median']:.3f} [{ratio['low']:.3f}, {ratio['high']:.3f}]",
                 *(f"{state[k] / 2**20:.3f}" for k in ("total", "parameters", "gradients", "optimizer", "clock",
                                                        "buffer", "logits", "other"))]
        if cuda:
            cells.append("-" if row["cuda_peak_bytes"] is None else f"{row['cuda_peak_bytes'] / 2**20:.1f}")
        table.add_row(*cells)
    out = console()
    out.print(table)
    clock = ("thread CPU time" if record["timer"] == "thread_time" else "wall time between CUDA synchronisations")
    load = record["environment"].get("load_average_before")
    for line in (
        f"step ms: median over {record['repeats']} repeats of each repeat's median {clock} per training iteration "
        f"({record['steps']} timed after {record['warmup']} untimed, torch threads = {setting['threads']}), the "
        "strategies interleaved in a seeded random order in one process; per-experience work is excluded.",
        f"x {record['reference']}: the ratio to {record['reference']}'s step time in the same repeat, median "
        f"[{'25th-75th percentile' if spread == 'iqr' else '95% bootstrap CI'}] over repeats.",
        "state MB: the method's own tensors (MB = 2^20 bytes), each storage counted once, at the measured iteration "
        "where they were largest; no RSS.",
        *(["step peak MB: the CUDA allocator's peak during a turn above what was allocated when it began."] if cuda else []),
        *([f"load average before: {', '.join(map(str, load))} (1, 5, 15 min)"] if load else []),
        f"Stored in {path}",
    ):
        out.print(f"  {line}", highlight=False)
