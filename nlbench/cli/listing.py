"""`nlbench list`: suites with their metadata, strategies with their hyperparameter defaults. Reads
metadata only (no torch), so it answers quickly."""

from __future__ import annotations

from nlbench.cli.common import console


def list_command() -> None:
    """Show the suites with their metadata and the strategies with their hyperparameter defaults."""
    from rich.table import Table

    from nlbench.core.registry import OPTIMIZER_HPARAMS, strategies
    from nlbench.data.suites import ALIASES, SUITES

    out = console(wide=100)  # redirected: a readable width (the tables are narrower; long text wraps)
    suites = Table(title="Suites", title_justify="left")
    for column in ("suite", "scenarios", "exp", "classes", "input", "backbone", "epochs", "batch"):
        suites.add_column(column, no_wrap=True)
    aliases = {target: alias for alias, target in ALIASES.items()}
    for info in SUITES.values():
        suites.add_row(info.name, ", ".join(info.scenarios), str(info.n_experiences), str(info.n_classes),
                       "x".join(map(str, info.input_shape)), info.backbone, str(info.epochs), str(info.batch_size))
    out.print(suites)
    for info in SUITES.values():  # below the table, so the table stays narrow
        alias = f" (alias {aliases[info.name]})" if info.name in aliases else ""
        options = "; ".join(o.listing() for o in info.options)
        out.print(f"  {info.name}{alias}: {info.description}" + (f"; options (--suite-option): {options}" if options else ""),
                  highlight=False)
    out.print()

    rows = []
    for info in strategies().values():
        hparams = list(info.hparams) + ([] if info.provides_optimizer else list(OPTIMIZER_HPARAMS))
        rows.append((f"{info.name}\n({info.family})", ", ".join(info.scenarios) if info.scenarios else "any",
                     "\n".join(f"{h.name}={h.default}" for h in hparams) or "-", info.description))
    widest = max(len(line) for row in rows for line in row[2].splitlines())
    table = Table(title="Strategies (combine with '+', e.g. ewc+replay)", title_justify="left")
    for column in ("strategy (family)", "scenarios", "hyperparameters (defaults)", "description"):
        # A value is never cut short with '…' (piped output is 100 columns): one hyperparameter per
        # line in a column as wide as the widest, and a word longer than its column is folded onto
        # the next line rather than truncated.
        table.add_column(column, no_wrap=column.startswith("strategy"), overflow="fold",
                         min_width=widest if column.startswith("hyper") else None)
    for row in rows:
        table.add_row(*row)
    out.print(table)
