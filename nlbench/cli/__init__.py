"""The `nlbench` command line (Typer): the only layer that knows options, rich output and exit codes.

Each command module parses and renders; the work is in `nlbench.commands`. Heavy libraries (torch,
Avalanche, pandas) load inside the commands, after validation, so `--help`, `list` and bad input answer
at once. Bad input exits with code 2 and one line on stderr (`error: ...`), whether the commands find it
(`UserError`) or the option parser does; Ctrl-C exits with 130.
"""

from __future__ import annotations

import typer

from nlbench.cli.common import plain_help, reflow, run_app
from nlbench.cli.cost import cost_command
from nlbench.cli.listing import list_command
from nlbench.cli.report import report_command
from nlbench.cli.run import run_command
from nlbench.cli.sweep import run_one_command, sweep_command
from nlbench.cli.tune import tune_command
from nlbench.cli.verify import verify_command

app = typer.Typer(
    name="nlbench",
    help="Benchmark Nested Learning methods against classic continual-learning baselines.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
plain_help()
for _name, _command in (("list", list_command), ("run", run_command), ("sweep", sweep_command), ("tune", tune_command),
                        ("cost", cost_command), ("report", report_command), ("verify", verify_command)):
    app.command(_name, help=reflow(_command.__doc__))(_command)
app.command("run-one", hidden=True)(run_one_command)


def main() -> None:
    run_app(app)
