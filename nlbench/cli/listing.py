"""`nlbench list`: suites with their metadata, strategies with their hyperparameter defaults. Reads
metadata only (no torch), so it answers quickly."""

from __future__ import annotations

from nlbench.cli.common import console


def list_command() -> None:
    """Show the suites with their metadata and the strategies with their hyperparameter defaults."""
    from rich.table import Table

    from nlbench.core.registry import OPTIMIZER_HPARAMS, strategies
    from nlbench.data.suites import ALIASES, SUITES

    out = console()
    suites = Table(title="Suites", title_justify="left")
    for column in ("suite", "scenarios", "exp", "classes", "input", "backbone", "epochs", "batch", "description",
                   "options (--suite-option)"):
        suites.add_column(column)
    aliases = {target: alias for alias, target in ALIASES.items()}
    for info in SUITES.values():
        name = info.name + (f" (alias {aliases[info.name]})" if info.name in aliases else "")
        suites.add_row(name, ", ".join(info.scenarios), str(info.n_experiences), str(info.n_classes),
                       "x".join(map(str, info.input_shape)), info.backbone, str(info.epochs), str(info.batch_size),
                       info.description, ", ".join(f"{o.name}={o.default}" for o in info.options) or "-")
    out.print(suites)

    table = Table(title="Strategies (combine with '+', e.g. ewc+replay)", title_justify="left")
    for column in ("strategy", "family", "scenarios", "hyperparameters (defaults)", "description"):
        table.add_column(column)
    for info in strategies().values():
        hparams = list(info.hparams) + ([] if info.provides_optimizer else list(OPTIMIZER_HPARAMS))
        defaults = ", ".join(f"{h.name}={h.default}" for h in hparams) or "-"
        table.add_row(info.name, info.family, ", ".join(info.scenarios) if info.scenarios else "any", defaults, info.description)
    out.print(table)
