"""Published numbers: `baselines/published.csv`, its mapping onto nlbench's names, and whether a run is
comparable with a published row.

`baselines/published.csv` is `shared/data/published-baselines.csv` (every row and column kept; the
published `scenario` and `metric` columns are renamed `published_scenario` and `published_metric`)
plus the mapping columns built by `map_published`: `suite`, `scenario`, `strategy`, `method_hparams`
(hyperparameters that identify the method, e.g. `ewc_mode=online` for oEWC), `metric` (our metric
key), `protocol`, `our_backbone`, `value_frac`/`std_frac` (the published percentages as fractions, the
unit of nlbench's metrics), `spread` (sd or sem) and `mapping_note`. Regenerate it with
`python -m nlbench.commands.report.published SOURCE.csv`.

`baselines/published-extra.csv` holds rows added inside this repository (same columns as the shared
source, each with its provenance in `source` and `source_detail`); `load_published` maps them with
`map_published` and appends them, so they need no regeneration step.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Mapping

from nlbench.core.protocols import (
    METHOD_IDENTITY,
    PROTOCOLS,
    PUBLISHED_METHODS,
    _n_experiences,
    _present,
    backbone_descriptor,
    get_protocol,
    preset_of_published,
    read_preset,
    run_buffer_size,
)
from nlbench.errors import UserError


def published_csv_path() -> Path:
    """Where baselines/published.csv lives (installed as package data of nlbench.baselines)."""
    from importlib.resources import files

    return Path(str(files("nlbench.baselines") / "published.csv"))


def published_extra_path() -> Path:
    """baselines/published-extra.csv: published rows added in this repository, in the shared source's columns."""
    return published_csv_path().with_name("published-extra.csv")


def _spec_fields(spec_row: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(fields, hparams) from a RunSpec, a mapping with `hparams`, or a load_results row (`hp.<k>`)."""
    from nlbench.core.spec import RunSpec

    if isinstance(spec_row, RunSpec):
        return spec_row.to_dict(), dict(spec_row.hp)
    data = dict(spec_row.items()) if hasattr(spec_row, "items") else dict(spec_row)
    if isinstance(data.get("hparams"), Mapping):
        return data, dict(data["hparams"])
    hp = {k[3:]: v for k, v in data.items() if isinstance(k, str) and k.startswith("hp.") and _present(v)}
    return data, hp


def _parse_int(text: Any) -> int | None:
    """'50' -> 50; '250 (uncertain)', 'iteration-based', NaN -> None."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return None if (isinstance(text, float) and (math.isnan(text) or not text.is_integer())) else int(text)
    text = str(text).strip()
    return int(text) if re.fullmatch(r"\d+", text) else None


def _published_buffer(text: Any, n_tasks: int | None) -> int | None:
    """'200' -> 200; '250/task' -> 250 * n_tasks; 'generative', '100/class' -> None."""
    value = _parse_int(text)
    if value is not None:
        return value
    match = re.fullmatch(r"(\d+)/task", str(text).strip())
    if match and n_tasks is not None:
        return int(match.group(1)) * n_tasks
    return None


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and not isinstance(b, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def protocol_matches(spec_row: Any, published_row: Mapping[str, Any]) -> tuple[bool, str]:
    """Is a run (or a group of runs) comparable with a published number? Returns (ok, reason).

    `spec_row`: a RunSpec, a dict with an `hparams` mapping, or a row of `store.load_results`
    (hyperparameters as `hp.<key>`). `published_row`: a row of baselines/published.csv.
    Checks backbone, epochs and buffer size (and the number of experiences); and, because a matching
    backbone/epochs/buffer still leaves optimizer, lr and batch size open, a run is only comparable when
    it was made under the preset that reproduces the row's source (`protocol`) with the preset's values.
    The reason lists every mismatch, or says what matched.
    """
    fields, hp = _spec_fields(spec_row)
    row = dict(published_row)
    problems: list[str] = []
    for key in ("suite", "scenario", "strategy"):
        if str(fields.get(key)) != str(row.get(key)):
            return False, f"different {key}: run {fields.get(key)!r}, published {row.get(key)!r}"
    suite = str(fields["suite"])
    n_experiences = _n_experiences(suite)

    ours_backbone = backbone_descriptor(suite, str(fields.get("backbone")))
    theirs_backbone = row.get("our_backbone")
    if not _present(theirs_backbone):
        problems.append(f"published backbone {row.get('backbone')!r} has no nlbench equivalent")
    elif ours_backbone != theirs_backbone:
        problems.append(f"backbone {ours_backbone} vs published {row.get('backbone')} ({theirs_backbone})")

    theirs_epochs = _parse_int(row.get("epochs_per_task"))
    if theirs_epochs is None:
        problems.append(f"published epochs {row.get('epochs_per_task')!r} is not a fixed number")
    elif int(fields.get("epochs")) != theirs_epochs:
        problems.append(f"epochs {fields.get('epochs')} vs published {theirs_epochs}")

    n_tasks = _parse_int(row.get("n_tasks"))
    if n_tasks is None:
        problems.append(f"published task count {row.get('n_tasks')!r} is uncertain")
    elif n_tasks != n_experiences:
        problems.append(f"{n_experiences} experiences vs published {n_tasks} tasks")

    ours_buffer = run_buffer_size(str(fields["strategy"]), hp, n_experiences)
    theirs_buffer = _published_buffer(row.get("buffer_size"), n_tasks)
    if theirs_buffer is None:
        problems.append(f"published buffer {row.get('buffer_size')!r} is not a sample count")
    elif ours_buffer != theirs_buffer:
        problems.append(f"buffer {'all data' if ours_buffer is None else ours_buffer} vs published {theirs_buffer}")

    # The preset: the only way optimizer, lr, batch size and method weights are pinned to the paper's.
    preset_name = row.get("protocol")
    run_protocol = fields.get("protocol")
    verified_note = ""
    if not _present(preset_name):
        problems.append("no nlbench preset reproduces this source's protocol (optimizer, lr, batch size unchecked)")
    elif run_protocol != preset_name:
        problems.append(f"run not made with --protocol {preset_name}")
    else:
        protocol = get_protocol(str(preset_name))
        if fields.get("scenario") not in protocol.scenarios:
            problems.append(f"preset {protocol.name} covers scenario(s) {', '.join(protocol.scenarios)} only")
        if int(fields.get("batch_size")) != protocol.batch_size:
            problems.append(f"batch size {fields.get('batch_size')} vs preset {protocol.batch_size}")
        method = next(
            (m for m in protocol.methods if m.method == row.get("method") and m.strategy == fields["strategy"]
             and m.buffer_size == (theirs_buffer or 0)),
            None,
        )
        if method is None:
            problems.append(f"preset {protocol.name} has no settings for {row.get('method')} with buffer {row.get('buffer_size')}")
        else:
            for key, value in method.hparams.items():
                if key not in hp or not _same(hp[key], value):
                    problems.append(f"{key}={hp.get(key, 'unset')} vs preset {value}")
            if not method.verified:
                verified_note = f"; preset hyperparameters UNVERIFIED: {method.note}"
    if problems:
        return False, "; ".join(problems)
    return True, (
        f"backbone {ours_backbone}, {theirs_epochs} epochs, buffer {theirs_buffer}, {n_tasks} tasks and "
        f"preset {preset_name} match{verified_note}"
    )


def no_published_number_lines(protocols: Any) -> list[str]:
    """For each preset among `protocols` (names) that has no readable published number, one plain sentence
    saying which protocol the runs followed and why nothing is beside them."""
    lines = []
    for name in sorted({str(p) for p in protocols}):
        protocol = PROTOCOLS.get(name)
        if protocol is not None and protocol.no_published_number:
            lines.append(
                f"Runs under preset `{name}` ({protocol.title}; {protocol.citation}) follow that paper's protocol, "
                f"but no published number is beside them: {protocol.no_published_number}. They are not a "
                "reproduction of a published value; the preset's differences from the authors' runs are in the Notes."
            )
    return lines


# --------------------------------------------------------------------------------------------------
# Published numbers -> nlbench names

_MAPPING = read_preset("published_methods.toml")  # data: suites, scenarios, metrics, methods
SUITE_OF_BENCHMARK: dict[str, str] = _MAPPING["suites"]
SCENARIO_OF: dict[str, str] = _MAPPING["scenarios"]
METRIC_OF: dict[str, str] = _MAPPING["metrics"]
# published method -> (nlbench strategy, note); "" = no nlbench strategy
METHOD_MAP: dict[str, tuple[str, str]] = {name: (m["strategy"], m["note"]) for name, m in PUBLISHED_METHODS.items()}


def _our_backbone(text: str, source: str) -> str:
    """Published backbone text -> nlbench backbone descriptor, or '' when nlbench has none."""
    t = str(text).strip()
    if t in ("ResNet-18 (from scratch)", "ResNet-18 (mammoth default)"):
        return "resnet18"
    if t == "ResNet-18" and ("Boschini" in source or "mammoth" in source.lower()):
        return "resnet18"  # Mammoth's ResNet-18, nf=64
    if t in ("reduced ResNet-18", "reduced ResNet-18 (paper)", "SlimResNet18"):
        return "reduced-resnet18"  # GEM's nf=20 ResNet-18 (Avalanche calls it SlimResNet18)
    match = re.fullmatch(r"MLP (\d+)x(\d+)(?: ReLU)?(?: \((?:paper|mammoth mnistmlp|--mlp_hidden_size=\d+)\))?", t)
    if match:
        return f"mlp-{match.group(1)}x{match.group(2)}"
    return ""


def _spread(detail: str, std: Any) -> str:
    if not _present(std):
        return ""
    if re.search(r"SEM|s\.e\.m", detail):
        return "sem"
    if re.search(r"mean\s*±\s*sd|±sd", detail):
        return "sd"
    return "unknown"


def map_published(source: Any) -> Any:
    """published-baselines.csv (a DataFrame) -> the mapped table stored as baselines/published.csv."""
    import pandas as pd

    from nlbench.data.suites import SUITES

    rows = []
    for _, row in source.iterrows():
        row = row.to_dict()
        notes = []
        suite = SUITE_OF_BENCHMARK.get(row["benchmark"], "")
        if not suite:
            notes.append(f"no nlbench suite for {row['benchmark']}")
        scenario = SCENARIO_OF.get(row["scenario"], "")
        if suite and scenario and scenario not in SUITES[suite].scenarios:
            notes.append(f"nlbench's {suite} has no {scenario}-incremental scenario")
            scenario = ""
        strategy, method_note = METHOD_MAP.get(row["method"], ("", "no nlbench strategy"))
        if method_note:
            notes.append(method_note)
        metric = METRIC_OF.get(row["metric"], "")
        if not metric:
            notes.append(f"nlbench does not compute {row['metric']}")
        elif metric == "forgetting":
            notes.append("assumed Chaudhry et al.'s forgetting (best earlier minus final accuracy)")
        protocol = preset_of_published(row)
        if not protocol and str(row["source"]).startswith("Buzzega") and row["scenario"] == "task_il":
            notes.append("Task-IL of a class-IL-trained model masked at test time; nlbench's task scenario trains with the mask")
        value, std = row["value"], row["std"]
        rows.append({
            "suite": suite,
            "scenario": scenario,
            "strategy": strategy,
            "method_hparams": METHOD_IDENTITY.get(row["method"], "") if strategy else "",
            "metric": metric,
            "protocol": protocol,
            "our_backbone": _our_backbone(row["backbone"], str(row["source"])),
            "value_frac": value / 100.0,
            "std_frac": std / 100.0 if _present(std) else float("nan"),
            "spread": _spread(str(row["source_detail"]), std),
            "mapping_note": "; ".join(notes),
            "benchmark": row["benchmark"],
            "published_scenario": row["scenario"],
            "method": row["method"],
            "published_metric": row["metric"],
            "value": value,
            "std": std,
            "n_tasks": row["n_tasks"],
            "epochs_per_task": row["epochs_per_task"],
            "backbone": row["backbone"],
            "buffer_size": row["buffer_size"],
            "source": row["source"],
            "source_detail": row["source_detail"],
        })
    return pd.DataFrame(rows)


_SHIPPED = object()  # load_published's default: the extra rows shipped with the package


def _read_published_csv(path: Path) -> Any:
    """A published-baselines CSV as strings; UserError (one line, naming the file) when it is not a regular
    file, not a CSV pandas can parse, or lacks a column of the bundled baselines/published.csv."""
    import csv

    import pandas as pd

    if not path.is_file():  # a FIFO would block the read, a directory cannot be one
        raise UserError(f"published baselines file {path} is not a regular file")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, ValueError) as err:
        why = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"published baselines file {path} is not a readable CSV: {why}") from None
    with open(published_csv_path(), newline="", encoding="utf-8") as handle:
        expected = next(csv.reader(handle))
    missing = [c for c in expected if c not in table.columns]
    if missing:
        raise UserError(f"published baselines file {path} lacks the column(s) {', '.join(missing)}; it needs the columns "
                        f"of the bundled baselines/published.csv ({', '.join(expected)})")
    return table


def load_published(path: Path | str | None = None, extra_path: Any = _SHIPPED) -> Any:
    """baselines/published.csv as a DataFrame (strings kept as strings, empty cells as '').

    `extra_path` (default: the shipped baselines/published-extra.csv when `path` is not given; None:
    none) holds rows in the shared source's columns; they are mapped and appended.
    """
    import io

    import pandas as pd

    path = Path(path) if path is not None else published_csv_path()
    if extra_path is _SHIPPED:
        extra_path = published_extra_path() if path == published_csv_path() else None
    if not path.exists():
        raise UserError(f"published baselines file {path} is missing")
    table = _read_published_csv(path)
    if extra_path is not None and Path(extra_path).exists():
        extra = pd.read_csv(extra_path)
        if len(extra):
            # Through CSV text, so the extra rows get exactly the types the shipped rows get.
            mapped = pd.read_csv(io.StringIO(map_published(extra).to_csv(index=False)), dtype=str, keep_default_na=False)
            table = pd.concat([table, mapped[table.columns]], ignore_index=True)
    for column in ("value_frac", "std_frac", "value", "std"):
        table[column] = pd.to_numeric(table[column].replace("", "nan"), errors="coerce")
    return table


def main(argv: list[str] | None = None) -> None:
    """python -m nlbench.commands.report.published SOURCE.csv [DEST.csv]: regenerate baselines/published.csv."""
    import sys

    import pandas as pd

    args = sys.argv[1:] if argv is None else argv
    source = Path(args[0]) if args else Path(__file__).resolve().parents[2] / "shared" / "data" / "published-baselines.csv"
    dest = Path(args[1]) if len(args) > 1 else published_csv_path()
    map_published(pd.read_csv(source)).to_csv(dest, index=False)
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
