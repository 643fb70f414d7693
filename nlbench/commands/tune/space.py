"""Search spaces: `nlbench/core/presets/search_spaces.toml` read, checked against each strategy's declared
hyperparameters, and sampled through an Optuna trial.

A strategy is tunable only when every component of it has a table in the file; a table names exactly the
hyperparameters that are tuned (the others keep their defaults), so nothing is tuned over a range nobody
wrote down. Strategies without an optimizer of their own also search `[default-optimizer]` (the shared
learning rate of every plugin method). Bounds and choices are validated by each `HParam`, so a range
outside what a hyperparameter accepts is a `UserError` before any run starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

from nlbench.errors import UserError

SPACES_FILE = Path(__file__).resolve().parents[2] / "core" / "presets" / "search_spaces.toml"
DEFAULT_OPTIMIZER = "default-optimizer"


@dataclass(frozen=True)
class Dimension:
    """One tuned hyperparameter: a range (uniform or log-uniform) or a list of choices."""

    name: str
    kind: str  # the HParam's kind
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] | None = None

    def describe(self) -> str:
        if self.choices is not None:
            return "{" + ", ".join(_show(c) for c in self.choices) + "}"
        return f"[{self.low:g}, {self.high:g}]" + (" log" if self.log else "")

    def suggest(self, trial: Any) -> Any:
        """The value an Optuna trial draws for this dimension (tuples travel as "1,8,64" strings)."""
        if self.choices is not None:
            encoded = [_encode(c) for c in self.choices]
            return _decode(trial.suggest_categorical(self.name, encoded), self.kind)
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log)


def _show(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _encode(value: Any) -> Any:
    return ",".join(map(str, value)) if isinstance(value, tuple) else value


def _decode(value: Any, kind: str) -> Any:
    if kind != "ints":
        return value
    return tuple(int(v) if v.strip().isdigit() else v.strip() for v in value.split(","))  # relative tokens (e/8) stay text


@lru_cache(maxsize=4)
def load_spaces(path: Path = SPACES_FILE) -> dict[str, dict[str, Any]]:
    """The raw tables of the search-space file (strategy -> hyperparameter -> entry)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read the search spaces {path}: {err}") from None
    if not all(isinstance(table, dict) for table in data.values()):
        raise UserError(f"{path}: every top-level entry must be a [strategy] table")
    return data


def _dimension(strategy: str, hparam: Any, entry: Any) -> Dimension:
    where = f"search space of {strategy!r}, {hparam.name}"
    if entry == "choices":
        if hparam.kind == "bool":
            return Dimension(hparam.name, hparam.kind, choices=(False, True))
        if not hparam.choices:
            raise UserError(f"{where}: \"choices\" needs a hyperparameter with declared choices; give low/high instead")
        return Dimension(hparam.name, hparam.kind, choices=tuple(hparam.choices))
    if not isinstance(entry, Mapping):
        raise UserError(f"{where}: expected {{low, high[, log]}}, {{choices = [...]}} or \"choices\", got {entry!r}")
    unknown = sorted(set(entry) - {"low", "high", "log", "choices"})
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r}; valid: low, high, log, choices")
    if "choices" in entry:
        raw = entry["choices"]
        if not isinstance(raw, list) or not raw:
            raise UserError(f"{where}: choices must be a non-empty list")
        values = tuple(hparam.parse(v) if isinstance(v, str) and hparam.kind != "str" else hparam.validate(v) for v in raw)
        return Dimension(hparam.name, hparam.kind, choices=tuple(dict.fromkeys(values)))
    if hparam.kind not in ("float", "int"):
        raise UserError(f"{where}: a {hparam.kind} hyperparameter is tuned over choices, not a range")
    if "low" not in entry or "high" not in entry:
        raise UserError(f"{where}: a range needs both low and high")
    low, high = (hparam.validate(int(entry[k]) if hparam.kind == "int" else entry[k]) for k in ("low", "high"))
    log = entry.get("log", False)
    if not isinstance(log, bool):
        raise UserError(f"{where}: log must be true or false")
    if not low < high:
        raise UserError(f"{where}: low must be below high, got [{low}, {high}]")
    if log and low <= 0:
        raise UserError(f"{where}: a log range needs low > 0, got {low}")
    return Dimension(hparam.name, hparam.kind, low=low, high=high, log=log)


def search_space(strategy: str, path: Path = SPACES_FILE,
                 ranges: Mapping[str, tuple[float, float]] | None = None) -> dict[str, Dimension]:
    """The tuned dimensions of a (possibly composite) strategy; UserError when one is undeclared.

    `ranges` (`nlbench tune --range KEY=LOW..HIGH`) replaces the bounds of a dimension the strategy tunes
    (its log flag stays the file's); a key the strategy does not tune is left out, so one tune gives every
    strategy that tunes KEY the same range."""
    from nlbench.core.registry import components, declared_hparams

    spaces = load_spaces(path)
    infos = components(strategy)
    declared = declared_hparams(strategy)
    tables: list[tuple[str, dict[str, Any]]] = []
    for info in infos:
        if info.name not in spaces:
            raise UserError(f"strategy {info.name!r} has no search space in {path.name}; declare one "
                            f"(an empty [{info.name}] table tunes only the shared optimizer)")
        tables.append((info.name, spaces[info.name]))
    if not any(info.provides_optimizer for info in infos):
        tables.append((DEFAULT_OPTIMIZER, spaces.get(DEFAULT_OPTIMIZER, {})))
    dims: dict[str, Dimension] = {}
    for owner, table in tables:
        for key, entry in table.items():
            if key not in declared:
                raise UserError(f"{path.name}: [{owner}] tunes {key!r}, which {strategy!r} does not declare; "
                                f"valid: {', '.join(sorted(declared))}")
            if key not in dims:
                dims[key] = _dimension(owner, declared[key], entry)
    for key, (low, high) in (ranges or {}).items():
        if key in dims and dims[key].choices is None:
            dims[key] = _dimension(f"{strategy} (--range)", declared[key], {"low": low, "high": high, "log": dims[key].log})
    return dims


def parse_range(text: str) -> tuple[str, tuple[float, float]]:
    """`KEY=LOW..HIGH` (e.g. lr=1e-7..3e-2) -> (KEY, (LOW, HIGH)); UserError on any other form."""
    key, sep, bounds = text.partition("=")
    low, dots, high = bounds.partition("..")
    try:
        if not (sep and dots and key.strip()):
            raise ValueError
        values = float(low), float(high)
    except ValueError:
        raise UserError(f"--range expects KEY=LOW..HIGH (e.g. lr=1e-7..3e-2), got {text!r}") from None
    if not values[0] < values[1]:
        raise UserError(f"--range {text}: LOW must be below HIGH")
    return key.strip(), values
