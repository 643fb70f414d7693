"""`nlbench verify`: options, one line per retrained run, the summary. The work is `nlbench.commands.verify`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from nlbench.cli.common import console, split_list, user_errors


def verify_command(
    results: Annotated[Path, typer.Argument(help="Results directory (e.g. results/reference).")] = Path("results"),
    name: Annotated[str, typer.Option(help="Comma-separated run names (sub-directories) to draw from; default: all.")] = "",
    strategy: Annotated[str, typer.Option(help="Comma-separated strategies to draw from; default: all.")] = "",
    sample: Annotated[Optional[int], typer.Option(help="Retrain a seeded sample of this many runs; default: every matching run.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sample.")] = 0,
    data_root: Annotated[Optional[Path], typer.Option(help="Dataset directory (else $NLBENCH_DATA, else ~/.cache/nlbench/data).")] = None,
) -> None:
    """Retrain stored runs from their spec.json and check that they reproduce bit for bit.

    A run id hashes the spec, not the code, so finished runs are reused after a code change; this
    command finds the runs the current code no longer reproduces. The accuracy and cross-entropy
    matrices and every metric are compared exactly; each retraining's thread CPU time is printed.
    Nothing is written. Exit code 0 when every run reproduced, 1 when one did not, 2 on bad input.
    """
    with user_errors():
        from nlbench.commands.verify import plan_verify, run_verify

        runs = plan_verify(results, split_list(name), split_list(strategy), sample, seed)
        err = console(stderr=True)
        rows = run_verify(runs, data_root=data_root, events=lambda kind, info: _progress(err, kind, info))
    _print_summary(rows)
    if not all(row["reproduced"] for row in rows):
        raise typer.Exit(1)


def _progress(err: Any, kind: str, info: Any) -> None:
    if kind == "verifying":
        err.print(f"[{info['index']}/{info['total']}] {info['name']}/{info['run_id']} {info['strategy']} seed "
                  f"{info['seed']}: retraining", highlight=False)
    elif kind == "verified":
        word = "identical" if info["identical"] else f"DIFFERS in {', '.join(info['differing'])} (largest accuracy " \
               f"gap {info['max_abs_accuracy_gap']:.3g}; stored by {(info['stored_commit'] or '?')[:7]})"
        err.print(f"  {word}; ACC {info['stored_acc']} -> {info['rerun_acc']}; {info['cpu_s']:.1f} s thread CPU",
                  highlight=False)


def _print_summary(rows: list[dict]) -> None:
    from rich.table import Table

    table = Table(title="nlbench verify: stored runs retrained", title_justify="left")
    for column in ("run", "strategy", "seed", "result", "stored commit", "CPU s"):
        table.add_column(column)
    for row in rows:
        result = "identical" if row["identical"] else "differs: " + ", ".join(row["differing"])
        if not row["id_matches"]:
            result += " (spec does not hash to its directory)"
        table.add_row(f"{row['name']}/{row['run_id']}", row["strategy"], str(row["seed"]), result,
                      (row["stored_commit"] or "?")[:7], f"{row['cpu_s']:.1f}")
    out = console()
    out.print(table)
    same = sum(row["reproduced"] for row in rows)
    out.print(f"{same} of {len(rows)} run(s) reproduced bit for bit; {sum(r['cpu_s'] for r in rows):.0f} s thread CPU "
              "in all", highlight=False)
