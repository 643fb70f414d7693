"""The `nlbench` command line (Typer).

Heavy libraries (torch, Avalanche, pandas) are imported inside the commands, so `nlbench --help`
answers instantly. Bad input exits with code 2 and one line on stderr (`error: ...`), whether the
commands find it (`UserError`) or the option parser does (a malformed option value, an unknown
option or command, a missing argument); Ctrl-C exits with 130.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer

from nlbench.report import report_command
from nlbench.sweep import run_one_command, sweep_command

app = typer.Typer(
    name="nlbench",
    help="Benchmark Nested Learning methods against classic continual-learning baselines.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn bad input into one line and exit code 2, and Ctrl-C into exit code 130."""
    from nlbench.errors import UserError

    try:
        yield
    except UserError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(err.exit_code) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None


def _console(stderr: bool = False):
    """A rich console; when output is piped (logs, tests) tables get room instead of wrapping at 80."""
    from rich.console import Console

    console = Console(stderr=stderr)
    return console if console.is_terminal else Console(stderr=stderr, width=160)


def _split_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _parse_hparams(pairs: list[str]) -> dict[str, str]:
    from nlbench.errors import UserError

    parsed = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--hp expects KEY=VALUE, got {pair!r}")
        parsed[key.strip()] = value.strip()
    return parsed


@app.command("list")
def list_command() -> None:
    """Show the suites with their metadata and the strategies with their hyperparameter defaults."""
    from rich.table import Table

    from nlbench.registry import OPTIMIZER_HPARAMS, strategies
    from nlbench.suites import ALIASES, SUITES

    console = _console()
    suites = Table(title="Suites", title_justify="left")
    for column in ("suite", "scenarios", "exp", "classes", "input", "backbone", "epochs", "batch", "description"):
        suites.add_column(column)
    aliases = {target: alias for alias, target in ALIASES.items()}
    for info in SUITES.values():
        name = info.name + (f" (alias {aliases[info.name]})" if info.name in aliases else "")
        suites.add_row(name, ", ".join(info.scenarios), str(info.n_experiences), str(info.n_classes),
                       "x".join(map(str, info.input_shape)), info.backbone, str(info.epochs), str(info.batch_size),
                       info.description)
    console.print(suites)

    table = Table(title="Strategies (combine with '+', e.g. ewc+replay)", title_justify="left")
    for column in ("strategy", "family", "hyperparameters (defaults)", "description"):
        table.add_column(column)
    for info in strategies().values():
        hparams = list(info.hparams) + ([] if info.provides_optimizer else list(OPTIMIZER_HPARAMS))
        defaults = ", ".join(f"{h.name}={h.default}" for h in hparams) or "-"
        table.add_row(info.name, info.family, defaults, info.description)
    console.print(table)


@app.command("run")
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
) -> None:
    """Run strategies on one suite, store every run under OUT/NAME/RUN_ID, and print a results table.

    Exit code 0 when every run completed or diverged (divergence is a result), 1 when a run failed
    (its error is stored and printed), 2 on bad input.
    """
    with user_errors():
        from nlbench.errors import UserError
        from nlbench.registry import declared_hparams
        from nlbench.runner import resolve_device
        from nlbench.spec import resolve_spec
        from nlbench.store import check_run_name, check_writable

        names = _split_list(strategy) if strategy else _runnable_strategies(suite, scenario)
        if not names:
            raise UserError("--strategy is empty; give at least one strategy")
        overrides = _parse_hparams(hp or [])
        declared = {n: declared_hparams(n) for n in names}
        # An override applies to the strategies that declare it, so `--hp mem_size=500` can go with
        # a list of strategies; a key that no listed strategy declares is an error.
        unknown = sorted(set(overrides) - {k for keys in declared.values() for k in keys})
        if unknown:
            valid = sorted({k for keys in declared.values() for k in keys})
            raise UserError(f"unknown hyperparameter {unknown[0]!r} for {', '.join(names)}; valid: {', '.join(valid)}")
        if name is not None:
            check_run_name(name)
        resolved_device = str(resolve_device(device))
        specs = [
            resolve_spec(
                suite, n, device=resolved_device, seed=seed, scenario=scenario, backbone=backbone, head=head,
                epochs=epochs, batch_size=batch_size, name=name, protocol=protocol,
                data_path=data_path, amp=amp, compile=compile, channels_last=channels_last,
                hparams={k: v for k, v in overrides.items() if k in declared[n]},
            )
            for n in names
        ]
        check_writable(out)
        failed = _run_specs(specs, out, data_root, download, force)
    if failed:
        raise typer.Exit(1)


def _runnable_strategies(suite: str, scenario: Optional[str]) -> list[str]:
    """Every registered strategy that can run on `suite` in `scenario` (the default of `run`)."""
    from nlbench.registry import strategies
    from nlbench.suites import get_suite

    info = get_suite(suite)
    scenario = scenario or info.default_scenario
    return [
        name for name, s in strategies().items()
        if name not in info.unsupported and (s.scenarios is None or scenario in s.scenarios)
    ]


def _run_specs(specs: list, out: Path, data_root: Optional[Path], download: bool, force: bool) -> bool:
    """Run (or reuse) every spec, print the table; True when a run failed."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from nlbench.data import resolve_data_root
    from nlbench.runner import run_one
    from nlbench.store import claim_holder, claim_run, describe_holder, finished_result, process_identity, wait_for_claim, write_run
    from nlbench.suites import build_benchmark, get_suite

    console = _console(stderr=True)
    first = specs[0]
    suite = get_suite(first.suite)
    with console.status(f"loading {suite.name} ..."):
        benchmark = build_benchmark(suite, first.scenario, first.seed, resolve_data_root(data_root), download)

    results = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        overall = progress.add_task("experiences", total=len(specs) * suite.n_experiences)
        for spec in specs:
            cached = None if force else finished_result(out, spec)
            if cached is not None:
                results.append((spec, cached, True))
                progress.advance(overall, suite.n_experiences)
                continue
            # Claim the run, so a sweep or another `nlbench run` writing here does not train it too.
            claim = claim_run(out, spec)
            if claim is None:
                progress.console.print(f"{spec.strategy}: {describe_holder(claim_holder(out, spec))} is running "
                                       "this run; waiting for it", highlight=False)
                claim = wait_for_claim(out, spec)
            with claim:
                cached = None if force else finished_result(out, spec)
                if cached is not None:  # the other process finished it meanwhile
                    results.append((spec, cached, True))
                    progress.advance(overall, suite.n_experiences)
                    continue
                progress.update(overall, description=f"{spec.strategy:<16}")

                def on_event(kind: str, info: dict) -> None:
                    if kind == "experience" and info["experience"] > 0:
                        progress.advance(overall)

                before = progress.tasks[overall].completed
                result = {**run_one(spec, benchmark=benchmark, progress=on_event), **process_identity()}
                write_run(out, spec, result)
            progress.update(overall, completed=before + suite.n_experiences)
            results.append((spec, result, False))
    _print_table(results, out)
    if any(r["status"] != "completed" for _, r, _ in results):
        for spec, result, _ in results:
            if result["status"] != "completed":
                console.print(f"[red]{spec.strategy}: {result['status']}[/red] {str(result['error']).splitlines()[0]}")
    return any(r["status"] == "failed" for _, r, _ in results)


def _print_table(results: list, out: Path) -> None:
    from rich.table import Table

    from nlbench.metrics import DEFINITIONS

    first = results[0][0]
    table = Table(
        title=f"{first.suite}, {first.scenario}-incremental, seed {first.seed}, {first.epochs} epoch(s) per experience",
        title_justify="left",
    )
    for column in ("strategy", "status", "ACC %", "forgetting %", "BWT %", "time s", "peak MB", "run id"):
        table.add_column(column, justify="left" if column in ("strategy", "status", "run id") else "right")

    def pct(value: float | None) -> str:
        return "-" if value is None or value != value else f"{100 * value:.1f}"

    for spec, result, cached in results:
        m = result.get("metrics") or {}
        table.add_row(
            spec.strategy,
            result["status"] + (" (cached)" if cached else ""),
            pct(m.get("acc")), pct(m.get("forgetting")), pct(m.get("bwt")),
            f"{result['wall_time_s']:.1f}", f"{result['peak_memory_mb']:.0f}", spec.run_id[:8],
        )
    console = _console()
    console.print(table)
    for key in ("acc", "forgetting", "bwt"):
        console.print(f"  {DEFINITIONS[key]}", highlight=False)
    console.print(f"  Runs stored in {out / first.name}/<run id>/", highlight=False)


app.command("sweep")(sweep_command)
app.command("report")(report_command)
app.command("run-one", hidden=True)(run_one_command)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def run_app(typer_app: typer.Typer, args: Optional[list[str]] = None) -> None:
    """Run a Typer app as a program: the exit code is the command's, and the parser's own errors
    (which Click prints as a multi-line usage box) become one `error:` line with exit code 2."""
    try:  # Typer >= 0.22 carries its own copy of Click; older Typer uses the click package
        from typer._click import exceptions as click_errors
    except ImportError:
        from click import exceptions as click_errors

    try:
        code = typer_app(args=args, standalone_mode=False)
    except getattr(click_errors, "NoArgsIsHelpError", ()) as err:  # `nlbench` alone: the help text
        err.show()
        code = err.exit_code
    except click_errors.UsageError as err:  # BadParameter, NoSuchOption, MissingParameter, ...
        where = f"; see '{err.ctx.command_path} --help'" if err.ctx is not None else ""
        typer.echo(f"error: {_one_line(err.format_message()).rstrip('.')}{where}", err=True)
        code = 2
    except click_errors.ClickException as err:  # e.g. a file option that cannot be opened
        typer.echo(f"error: {_one_line(err.format_message())}", err=True)
        code = err.exit_code
    except typer.Abort:  # Ctrl-C or end of input at a prompt
        typer.echo("interrupted", err=True)
        code = 130
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        code = 130
    sys.exit(code if isinstance(code, int) else 0)


def main() -> None:
    run_app(app)


if __name__ == "__main__":
    main()
