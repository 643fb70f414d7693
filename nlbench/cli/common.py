"""What every command line shares: one `error:` line and exit code 2 for bad input, exit 130 for
Ctrl-C, a rich console sized for pipes, and small option parsers."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated, Any, Iterator, Optional

import typer

from nlbench.errors import UserError, bound_message


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn bad input into one line and exit code 2, and Ctrl-C into exit code 130."""
    try:
        yield
    except UserError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(err.exit_code) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None


def console(stderr: bool = False, wide: int = 160) -> Any:
    """A rich console; when output is piped (logs, tests) tables get `wide` columns instead of wrapping at 80."""
    from rich.console import Console

    made = Console(stderr=stderr)
    return made if made.is_terminal else Console(stderr=stderr, width=wide)


# `--log` and `--log-dir`, shared by every command that trains runs (run, sweep, and tune to come).
LogOption = Annotated[Optional[list[str]], typer.Option(
    "--log",
    help="Log each run to an experiment tracker: tensorboard, wandb or csv (repeatable, or comma-separated). "
         "Off by default. tensorboard and wandb need pip install -e '.\\[track]'.")]
LogDirOption = Annotated[Optional[Path], typer.Option(
    "--log-dir", help="Where --log writes (DIR/tensorboard, DIR/wandb, DIR/csv); default: logs.")]


def tracking_option(log: Optional[list[str]], log_dir: Optional[Path], group: Optional[str] = None) -> Any:
    """`--log`/`--log-dir` -> a validated `nlbench.core.tracking.Tracking` (false when no tracker is asked for)."""
    from nlbench.core.tracking import make_tracking

    return make_tracking(log, log_dir.resolve() if log_dir is not None else Path("logs").resolve(), group)


def split_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_hparams(pairs: list[str], flag: str = "--hp") -> dict[str, str]:
    """`--hp KEY=VALUE` options -> {key: "value"} (each value is parsed by the strategy's HParam later)."""
    parsed = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"{flag} expects KEY=VALUE, got {pair!r}")
        parsed[key.strip()] = value.strip()
    return parsed


def plain_help() -> None:
    """Help without Typer's type placeholders (`<str>`, `<list[str]>`, `<bool>`, from Typer 0.2x on):
    an option shows a placeholder only where it declares one (`--hp KEY=VALUE`, `--out DIR`), so the
    descriptions get the room."""
    try:
        from typer.core import TyperArgument, TyperOption
    except ImportError:  # pragma: no cover - older Typer shows Click's own metavars
        return
    for kind in (TyperOption, TyperArgument):
        if hasattr(kind, "display_type_rich") and not getattr(kind, "_nlbench_plain", False):
            kind.display_type_rich = lambda self, ctx: self.metavar if isinstance(self, TyperOption) else None
            kind._nlbench_plain = True


def reflow(doc: str | None) -> str:
    """A docstring as help text: paragraphs kept, each on one line (rich help keeps single line
    breaks, which would cut sentences where the source wraps)."""
    import inspect

    paragraphs = inspect.cleandoc(doc or "").split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in paragraphs)


def _one_line(text: str) -> str:
    return bound_message(" ".join(str(text).split()))  # Click quotes the user's text in full


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
