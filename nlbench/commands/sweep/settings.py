"""The settings of one sweep: a sweep file (YAML, TOML or JSON), then command-line options over it.

`build_settings` merges the two (the command line wins; `grid` merges per key) and checks every value's
type, so a bad sweep file or option is one `UserError` line before anything runs. Grid values stay
as given (CLI text or a file's list): each strategy's declared `HParam` parses them later
(`nlbench.commands.sweep.plan`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from nlbench.errors import UserError, echo, exact_float

EXECUTORS = ("local", "ray")
MAX_SEEDS = 10_000  # a bound on `--seeds 0-N`, so a typo cannot exhaust memory


@dataclass
class SweepSettings:
    """Everything a sweep command says, after the file and the command line are merged."""

    suite: str = "split-digits"
    strategy: Optional[tuple[str, ...]] = None  # None: every registered strategy
    grid: dict[str, Any] = field(default_factory=dict)  # key -> CLI string or list of values
    seeds: tuple[int, ...] = (0,)
    name: Optional[str] = None
    epochs: Optional[int] = None
    scenario: Optional[str] = None
    head: Optional[str] = None
    backbone: Optional[str] = None
    batch_size: Optional[int] = None
    protocol: Optional[str] = None
    data_path: Optional[str] = None
    amp: Optional[str] = None
    compile: bool = False
    channels_last: bool = False
    device: str = "auto"
    executor: str = "local"
    jobs: Optional[int] = None
    runs_per_gpu: Optional[int] = None
    cpus_per_run: float = 1.0
    address: Optional[str] = None
    retries: int = 2
    out: Path = Path("results")
    data_root: Optional[Path] = None
    download: bool = True
    retry_failed: bool = True
    log: tuple[str, ...] = ()  # experiment trackers (`--log`): tensorboard, wandb, csv
    log_dir: Optional[Path] = None  # their directory; default: logs
    suite_options: dict[str, Any] = field(default_factory=dict)  # KEY: value (n_tasks, regime, ...)
    eval_every: int = 0  # continual evaluation every N iterations (0: off)
    probes: bool = False  # clock-level probes of clocked models


_STR_KEYS = ("suite", "name", "scenario", "head", "backbone", "protocol", "data_path", "amp", "device", "executor", "address")
_INT_KEYS = ("epochs", "batch_size", "jobs", "runs_per_gpu", "retries", "eval_every")
CONFIG_KEYS = tuple(f.name for f in fields(SweepSettings))


def _split_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_seeds(raw: Any) -> tuple[int, ...]:
    """`0,1,2`, `0-4` (inclusive), an int, or a list of ints -> a tuple of distinct seeds, in order.

    Digits are plain ASCII ('٣' or '³' is not 3), and every seed lies in 0..2^32-1 (numpy's range).
    """
    from nlbench.core.spec import MAX_SEED

    bad = UserError(f"--seeds expects comma-separated integers in 0..{MAX_SEED} or a range like 0-4, got {echo(raw)}")
    if isinstance(raw, bool):
        raise bad
    if isinstance(raw, int):
        items: list[Any] = [raw]
    elif isinstance(raw, str):
        items = []
        for part in _split_list(raw):
            low, dash, high = (p.strip() for p in part.partition("-"))
            if dash and _is_decimal(low) and _is_decimal(high):
                low_n, high_n = int(low), int(high)
                if high_n < low_n or high_n > MAX_SEED:
                    raise bad
                if high_n - low_n >= MAX_SEEDS:
                    raise UserError(f"--seeds {echo(part)} gives {high_n - low_n + 1} seeds; at most {MAX_SEEDS} per sweep")
                items.extend(range(low_n, high_n + 1))
            else:
                items.append(part)
    elif isinstance(raw, (list, tuple)):
        items = list(raw)
    else:
        raise bad
    if len(items) > MAX_SEEDS:
        raise UserError(f"--seeds gives {len(items)} seeds; at most {MAX_SEEDS} per sweep")
    seeds: dict[int, None] = {}
    for item in items:
        if isinstance(item, str):
            seed = int(item) if _is_decimal(item) else None
        else:
            seed = item if isinstance(item, int) and not isinstance(item, bool) else None
        if seed is None or not 0 <= seed <= MAX_SEED:
            raise bad
        seeds.setdefault(seed)
    if not seeds:
        raise bad
    return tuple(seeds)


def _is_decimal(text: str) -> bool:
    """Plain ASCII digits (str.isdigit() also accepts '²', which int() rejects)."""
    return text.isascii() and text.isdecimal()


def parse_grid_options(pairs: Sequence[str]) -> dict[str, str]:
    """`--grid KEY=VALUES` options -> {key: "VALUES"} (values are parsed per strategy later)."""
    grid: dict[str, str] = {}
    for pair in pairs:
        key, sep, values = pair.partition("=")
        key = key.strip()
        if not sep or not key or not values.strip():
            raise UserError(f"--grid expects KEY=VALUES such as alpha=1e-4,3e-4 or periods=1,8,64:1,16,128, got {echo(pair)}")
        if key in grid:
            raise UserError(f"--grid {key} is given twice; put all its values in one option")
        grid[key] = values.strip()
    return grid


def load_config(path: Path) -> dict[str, Any]:
    """Read a sweep file (.yaml/.yml, .toml or .json) into a dict of settings keys."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise UserError(f"cannot read sweep file {path}: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise UserError(f"sweep file {path} is not UTF-8 text (byte {err.start}); write it as YAML or TOML text") from None
    except ValueError as err:  # e.g. an embedded NUL in the path
        raise UserError(f"cannot read sweep file {echo(str(path))}: {err}") from None
    suffix = path.suffix.lower()

    def number(literal: str) -> float:  # a float that underflows or overflows is bad input, as on the command line
        return exact_float(literal, f"sweep file {path}: ")

    try:
        if suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise UserError(f"reading {path} needs PyYAML (pip install pyyaml); or write the sweep as TOML") from None
            data = yaml.load(text, Loader=_yaml_loader(yaml, number))
        elif suffix == ".toml":
            try:
                import tomllib
            except ImportError:  # Python 3.10
                try:
                    import tomli as tomllib  # type: ignore[no-redef]
                except ImportError:
                    raise UserError(f"reading {path} on Python 3.10 needs tomli (pip install tomli); or use YAML") from None
            data = tomllib.loads(text, parse_float=number)
        elif suffix == ".json":
            data = json.loads(text, parse_float=number)
        else:
            raise UserError(f"sweep file {path} must end in .yaml, .yml, .toml or .json")
    except ValueError as err:  # yaml.YAMLError, tomllib.TOMLDecodeError and JSONDecodeError are ValueErrors...
        raise UserError(f"sweep file {path} is not valid: {_first_line(err)}") from None
    except RecursionError:
        raise UserError(f"sweep file {path} is nested too deeply to be a sweep description") from None
    except Exception as err:  # ...except YAMLError, which is not
        if type(err).__module__.startswith("yaml"):
            raise UserError(f"sweep file {path} is not valid YAML: {_first_line(err)}") from None
        raise
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"sweep file {path} must hold a mapping of settings (suite, strategy, grid, seeds, ...)")
    normalised = {str(k).replace("-", "_"): v for k, v in data.items()}
    if "strategies" in normalised and "strategy" not in normalised:
        normalised["strategy"] = normalised.pop("strategies")
    unknown = sorted(set(normalised) - set(CONFIG_KEYS))
    if unknown:
        raise UserError(f"sweep file {path}: unknown key {echo(unknown[0])}; valid: {', '.join(CONFIG_KEYS)}")
    return normalised


def _yaml_loader(yaml: Any, number: Any) -> Any:
    """PyYAML's safe loader, its floats checked by `number` (the literal's text, as written)."""

    class Loader(yaml.SafeLoader):
        pass

    def construct_float(loader: Any, node: Any) -> float:
        value = yaml.SafeLoader.construct_yaml_float(loader, node)
        if value == 0.0 or math.isinf(value):
            number(str(node.value))
        return value

    Loader.add_constructor("tag:yaml.org,2002:float", construct_float)
    return Loader


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def build_settings(file_values: Mapping[str, Any], cli_values: Mapping[str, Any]) -> SweepSettings:
    """Merge a sweep file's values with the command line's (the command line wins; `grid` merges per key)."""
    values: dict[str, Any] = {k: v for k, v in file_values.items() if v is not None}
    file_grid = values.pop("grid", None) or {}
    if not isinstance(file_grid, dict):
        raise UserError("'grid' in the sweep file must be a mapping KEY: [values] (or KEY: 'v1,v2')")
    for key, value in cli_values.items():
        if value is not None and key != "grid":
            values[key] = value
    grid = {str(k): v for k, v in file_grid.items()}
    grid.update(cli_values.get("grid") or {})

    settings = SweepSettings(grid=grid)
    for key, value in values.items():
        if key in _STR_KEYS:
            if not isinstance(value, str) or not value.strip():
                raise UserError(f"{key!r} must be a non-empty string, got {echo(value)}")
            value = value.strip()
        elif key in _INT_KEYS:
            if isinstance(value, bool) or not isinstance(value, int):
                raise UserError(f"{key!r} must be an integer, got {echo(value)}")
            if key == "retries" and value < 0:
                raise UserError(f"--retries must be >= 0, got {value}")
        elif key == "cpus_per_run":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise UserError(f"'cpus_per_run' must be a number, got {echo(value)}")
            value = float(value)
            if not (math.isfinite(value) and value > 0):
                raise UserError(f"--cpus-per-run must be a positive number, got {value:g}")
        elif key == "suite_options":
            if not isinstance(value, dict):
                raise UserError(f"'suite_options' must be a mapping KEY: value, got {value!r}")
            value = {str(k): v for k, v in value.items()}
        elif key in ("download", "retry_failed", "compile", "channels_last", "probes"):
            if not isinstance(value, bool):
                raise UserError(f"{key!r} must be true or false, got {echo(value)}")
        elif key == "log":
            from nlbench.core.tracking import parse_trackers

            value = parse_trackers(value)
        elif key in ("out", "data_root", "log_dir"):
            if not isinstance(value, (str, Path)) or not str(value).strip() or "\0" in str(value):
                raise UserError(f"{key!r} must be a directory path, got {echo(value)}")
            value = Path(value).expanduser()
        elif key == "strategy":
            names = _split_list(value) if isinstance(value, str) else [str(v).strip() for v in value] if isinstance(value, (list, tuple)) else None
            if not names:
                raise UserError("--strategy is empty; give at least one strategy (comma-separated)")
            value = tuple(dict.fromkeys(names))
        elif key == "seeds":
            value = parse_seeds(value)
        setattr(settings, key, value)
    if settings.log:  # the trackers' directory is usable: one line now, not a failed run after the data loaded
        from nlbench.core.tracking import check_log_dir

        check_log_dir(settings.log_dir or "logs")
    if settings.executor not in EXECUTORS:
        raise UserError(f"unknown executor {echo(settings.executor)}; valid: {', '.join(EXECUTORS)}")
    if settings.name is not None:
        from nlbench.core.store import check_run_name

        check_run_name(settings.name)
    return settings
