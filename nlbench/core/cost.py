"""cost.json: the record `nlbench cost` writes, its schema, the ratio summary, and `load_costs`.

`OUT/NAME/cost.json` (one setting per file; NAME defaults to a slug of the setting, `cost_name`):

    {"kind": "nlbench-cost", "schema": 1,
     "setting": {"suite", "suite_options", "scenario", "head", "backbone", "batch_size", "device",
                 "device_name", "threads"},
     "steps": N, "repeats": R, "warmup": W, "seed": s, "timer": "thread_time" | "cuda_wall",
     "reference": "<strategy>", "environment": {...},
     "rows": [{"strategy", "hp": {resolved hyperparameters},
               "step_time_s": [per round: the median time of a recorded iteration],
               "step_wall_s": [the same in wall time], "step_time_median_s": median of step_time_s,
               "ratio_to_reference": {"median", "low", "high", "spread": "iqr" | "ci95"},
               "state_bytes": {"parameters", "gradients", "optimizer", "clock", "buffer", "logits",
                               "other", "total"},
               "cuda_peak_bytes": int | null, "rss_peak_mb": float | null, "diverged": bool}]}

The ratio of a strategy is formed per round (its median over the reference's median in the same
round, both measured in that round's interleaved order) and summarised over rounds by the median, with
`iqr` (the 25th and 75th percentiles of the per-round ratios) or `ci95` (a 95% percentile-bootstrap
interval of their median, scipy.stats.bootstrap) as its spread. Torch-free: the report loads it;
the measurement is `nlbench.core.cost_timing`.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path
from typing import Any, Literal, Optional, Sequence, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from nlbench.core.schema import _first_error
from nlbench.io import atomic_write_text, read_regular_text

KIND, SCHEMA, FILE = "nlbench-cost", 1, "cost.json"
SPREADS = ("iqr", "ci95")
STATE_KEYS = ("parameters", "gradients", "optimizer", "clock", "buffer", "logits", "other")
Scalar = Union[bool, int, float, str, None]


def _positive_finite(value: float) -> float:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"must be a finite number > 0, got {value!r}")
    return value


class Ratio(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    median: float
    low: float
    high: float
    spread: Literal["iqr", "ci95"]

    @model_validator(mode="after")
    def _ordered(self) -> "Ratio":
        for value in (self.median, self.low, self.high):
            _positive_finite(value)
        if not self.low <= self.median <= self.high:
            raise ValueError(f"needs low <= median <= high, got {self.low}, {self.median}, {self.high}")
        return self


class StateBytes(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    parameters: int = Field(ge=0)
    gradients: int = Field(ge=0)
    optimizer: int = Field(ge=0)
    clock: int = Field(ge=0)
    buffer: int = Field(ge=0)
    logits: int = Field(ge=0)
    other: int = Field(ge=0)
    total: int = Field(ge=0)

    @model_validator(mode="after")
    def _adds_up(self) -> "StateBytes":
        parts = sum(getattr(self, key) for key in STATE_KEYS)
        if parts != self.total:
            raise ValueError(f"total {self.total} is not the sum of the categories ({parts})")
        return self


class CostRow(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    strategy: str
    hp: dict[str, Union[Scalar, list[Scalar]]]
    step_time_s: list[float] = Field(min_length=1)
    step_time_median_s: float
    ratio_to_reference: Ratio
    state_bytes: StateBytes
    cuda_peak_bytes: Optional[int] = Field(default=None, ge=0)
    rss_peak_mb: Optional[float] = None

    @field_validator("step_time_s")
    @classmethod
    def _times(cls, values: list[float]) -> list[float]:
        for value in values:
            _positive_finite(value)
        return values

    @field_validator("step_time_median_s")
    @classmethod
    def _median(cls, value: float) -> float:
        return _positive_finite(value)


class CostSetting(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    suite: str
    suite_options: dict[str, Scalar]
    scenario: Literal["class", "task", "domain"]
    head: Literal["single", "mask", "multi"]
    backbone: str
    batch_size: int = Field(ge=1)
    device: str
    device_name: str
    threads: int = Field(ge=1)


class CostRecord(BaseModel):
    """cost.json (module docstring). Extra keys are allowed and not checked."""

    model_config = ConfigDict(strict=True, extra="allow")

    kind: Literal["nlbench-cost"]
    schema_: Literal[1] = Field(alias="schema")
    setting: CostSetting
    steps: int = Field(ge=1)
    repeats: int = Field(ge=1)
    seed: int = Field(ge=0)
    reference: str
    environment: dict[str, Any]
    rows: list[CostRow] = Field(min_length=1)

    @model_validator(mode="after")
    def _rows_fit(self) -> "CostRecord":
        names = [row.strategy for row in self.rows]
        if len(set(names)) != len(names):
            raise ValueError(f"a strategy appears twice in rows ({', '.join(names)})")
        if self.reference not in names:
            raise ValueError(f"reference {self.reference!r} is not one of the rows ({', '.join(names)})")
        for row in self.rows:
            if len(row.step_time_s) != self.repeats:
                raise ValueError(f"{row.strategy}: {len(row.step_time_s)} step times for {self.repeats} repeats")
        return self


# ------------------------------------------------------------------------------------------------
# Summary, name, file


def summarise_ratio(times: Sequence[float], reference: Sequence[float], spread: str, seed: int) -> dict[str, Any]:
    """Per-round ratios times[r] / reference[r], as {median, low, high, spread} (module docstring)."""
    import numpy as np

    ratios = np.asarray(times, dtype=float) / np.asarray(reference, dtype=float)
    median = float(np.median(ratios))
    if len(ratios) < 2 or np.ptp(ratios) == 0:
        low = high = median
    elif spread == "iqr":
        low, high = (float(v) for v in np.percentile(ratios, [25, 75]))
    else:
        from scipy.stats import bootstrap

        interval = bootstrap((ratios,), np.median, confidence_level=0.95, method="percentile", n_resamples=9999,
                             random_state=np.random.default_rng(seed)).confidence_interval
        low, high = float(interval.low), float(interval.high)
    return {"median": median, "low": min(low, median), "high": max(high, median), "spread": spread}


def options_label(options: dict[str, Any]) -> str:
    """Suite options as the report writes them (`nlbench.commands.report.labels.label` of a dict):
    `k=v,k=v` in key order, `default` when none is set."""
    def label(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        return f"{value:g}" if isinstance(value, float) else str(value)

    return ",".join(f"{k}={label(v)}" for k, v in sorted(options.items())) or "default"


def cost_name(setting: dict[str, Any], suite_defaults: dict[str, Any]) -> str:
    """The default NAME of a cost run: `cost-SUITE-SCENARIO`, then what differs from the suite's
    defaults (head, each suite option, backbone, batch size), then the device type; e.g.
    `cost-permuted-fmnist-domain-n_tasks3-train_per_task3000-cpu`. Different settings get different
    files; the same setting measured again replaces its file."""
    parts = ["cost", setting["suite"], setting["scenario"]]
    if setting["head"] != suite_defaults["head"]:
        parts.append(setting["head"])
    parts += [f"{k}{v}" for k, v in sorted(setting["suite_options"].items())]
    for key in ("backbone", "batch_size"):
        if setting[key] != suite_defaults[key]:
            parts.append(f"{'b' if key == 'batch_size' else ''}{setting[key]}")
    parts.append(str(setting["device"]).split(":")[0])
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(str(p) for p in parts))


def write_cost(directory: Path, record: dict[str, Any]) -> Path:
    """Validate `record` and write it to DIRECTORY/cost.json atomically; the path written."""
    CostRecord.model_validate(record)
    path = Path(directory) / FILE
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return path


COLUMNS = ("strategy", "suite", "suite_options", "scenario", "head", "backbone", "batch_size", "device",
           "device_name", "threads", "steps", "repeats", "reference", "step_time_median_s", "step_time_s", "ratio_median",
           "ratio_low", "ratio_high", "ratio_spread", *(f"state_bytes_{k}" for k in (*STATE_KEYS, "total")),
           "cuda_peak_bytes", "rss_peak_mb", "path")


def load_costs(root: Path | str = "results") -> Any:
    """Every cost.json under `root` (at any depth) as a pandas DataFrame, one row per strategy per file
    (`COLUMNS`; `suite_options` as `options_label` writes it; `step_time_s` the per-round list, so two
    strategies of one file can be paired round by round with `summarise_ratio`). A file that is not
    valid JSON or fails the schema is skipped with one warning naming it."""
    import pandas as pd

    rows = []
    for path in sorted(Path(root).rglob(FILE)):
        try:
            data = json.loads(read_regular_text(path))
            record = CostRecord.model_validate(data)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            warnings.warn(f"skipping {path}: not a readable JSON file ({err})", stacklevel=2)
            continue
        except ValidationError as err:
            warnings.warn(f"skipping {path}: {_first_error(err)}", stacklevel=2)
            continue
        setting = record.setting
        for row in record.rows:
            ratio, state = row.ratio_to_reference, row.state_bytes
            rows.append({
                "strategy": row.strategy, "suite": setting.suite, "suite_options": options_label(setting.suite_options),
                "scenario": setting.scenario, "head": setting.head, "backbone": setting.backbone,
                "batch_size": setting.batch_size, "device": setting.device, "device_name": setting.device_name,
                "threads": setting.threads, "steps": record.steps, "repeats": record.repeats,
                "reference": record.reference, "step_time_median_s": row.step_time_median_s,
                "step_time_s": list(row.step_time_s),
                "ratio_median": ratio.median, "ratio_low": ratio.low, "ratio_high": ratio.high,
                "ratio_spread": ratio.spread,
                **{f"state_bytes_{k}": getattr(state, k) for k in (*STATE_KEYS, "total")},
                "cuda_peak_bytes": row.cuda_peak_bytes, "rss_peak_mb": row.rss_peak_mb, "path": str(path),
            })
    return pd.DataFrame(rows, columns=list(COLUMNS))
