"""The declared schema of a stored run: what spec.json and result.json must hold to be counted.

A stored run is counted (by `load_results`, the report and a sweep's resume) only when both files pass
these pydantic models; otherwise `check_run` raises ValueError naming the file and the first failing
field, and the run is skipped with one warning. Types are strict (no "3" for 3, no true for 1), and
the values must make sense:
- spec.json: a registered strategy (composites like `ewc+replay` included), a seed in 0..2^32-1,
  positive epochs and batch size, hyperparameters that are JSON scalars or flat lists of them;
- result.json: a known status; an accuracy matrix of equal-length rows, no more rows than columns
  (one row per trained experience, one column per test experience), square and finite when the
  status is `completed`, every accuracy a fraction in [0, 1] (NaN is allowed only in a run that did
  not complete); metrics that are numbers (accuracies in [0, 1], forgetting and transfer in [-1, 1],
  `acc` present and finite for a completed run); times and memory non-negative and finite; the seed
  and run id those of spec.json.
Extra keys in result.json are allowed and not checked: the runner adds `clocks` and `diagnostics`,
plugins add their own (`result_fields()`).
"""

from __future__ import annotations

import math
import reprlib
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from nlbench.core.spec import MAX_SEED, RunSpec

Scalar = Union[bool, int, float, str, None]
_FRACTIONS = ("acc", "avg_inc_acc", "learning_acc")  # accuracies: fractions in [0, 1]
_SIGNED = ("bwt", "forgetting", "fwt")  # differences of accuracies: in [-1, 1]


def _finite_non_negative(value: Optional[float]) -> Optional[float]:
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise ValueError(f"must be a finite number >= 0, got {value!r}")
    return value


class SpecRecord(BaseModel):
    """spec.json: `RunSpec.to_dict()`. Unknown keys are ignored, as `RunSpec.from_dict` ignores them."""

    model_config = ConfigDict(strict=True, extra="ignore")

    suite: str
    strategy: str
    scenario: Literal["class", "task", "domain"]
    backbone: str
    seed: int = Field(ge=0, le=MAX_SEED)
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    eval_batch_size: int = Field(ge=0)  # 0 is a stored `failed` run's spec, never a trained one
    device: str
    hparams: dict[str, Union[Scalar, list[Scalar]]] = {}
    head: Literal["single", "mask", "multi"] = "single"
    protocol: Optional[str] = None
    data_path: Literal["fast", "avalanche"] = "fast"
    amp: Literal["none", "bf16"] = "none"
    compile: bool = False
    channels_last: bool = False
    name: str = "default"
    schema_: int = Field(default=1, alias="schema")

    @field_validator("strategy")
    @classmethod
    def _registered(cls, name: str) -> str:
        from nlbench.core.registry import components
        from nlbench.errors import UserError

        try:
            components(name)
        except UserError as err:
            raise ValueError(str(err).split(";")[0]) from None
        return name


class ResultRecord(BaseModel):
    """result.json as `nlbench.core.runner.run_one` and `store.write_run` write it; extra keys allowed."""

    model_config = ConfigDict(strict=True, extra="allow")

    schema_: int = Field(alias="schema")
    run_id: str
    status: Literal["completed", "diverged", "failed"]
    error: Optional[str] = None
    seed: Optional[int] = None
    accuracy_matrix: list[list[float]]
    initial_accuracy: list[float] = []
    metrics: dict[str, Optional[float]]
    experience_train_time_s: list[float] = []
    eval_time_s: list[float] = []
    wall_time_s: Optional[float] = None
    peak_memory_mb: Optional[float] = None
    peak_memory_kind: Optional[str] = None
    device: Optional[str] = None
    device_name: Optional[str] = None
    environment: Optional[dict[str, Any]] = None
    started_at: Optional[str] = None
    finished_at: Optional[str] = None
    host: Optional[str] = None
    pid: Optional[int] = None

    @field_validator("wall_time_s", "peak_memory_mb")
    @classmethod
    def _non_negative(cls, value: Optional[float]) -> Optional[float]:
        return _finite_non_negative(value)

    @field_validator("experience_train_time_s", "eval_time_s")
    @classmethod
    def _times(cls, values: list[float]) -> list[float]:
        for value in values:
            _finite_non_negative(value)
        return values

    @field_validator("initial_accuracy")
    @classmethod
    def _fractions(cls, values: list[float]) -> list[float]:
        if any(not 0 <= v <= 1 for v in values if not math.isnan(v)):
            raise ValueError("accuracies must be fractions in [0, 1]")
        return values

    @field_validator("metrics")
    @classmethod
    def _metric_ranges(cls, metrics: dict[str, Optional[float]]) -> dict[str, Optional[float]]:
        for key, value in metrics.items():
            if value is None or math.isnan(value):
                continue
            low = 0.0 if key in _FRACTIONS else -1.0 if key in _SIGNED else -math.inf
            high = 1.0 if key in _FRACTIONS or key in _SIGNED else math.inf
            if not (math.isfinite(value) and low <= value <= high):
                raise ValueError(f"{key} = {value!r} is out of range [{low:g}, {high:g}]")
        return metrics

    @model_validator(mode="after")
    def _matrix_fits_status(self) -> "ResultRecord":
        matrix = self.accuracy_matrix
        columns = len(matrix[0]) if matrix else len(self.initial_accuracy)
        if any(len(row) != columns for row in matrix):
            raise ValueError(f"accuracy_matrix is ragged (row lengths {sorted({len(r) for r in matrix})})")
        if len(matrix) > columns:
            raise ValueError(f"accuracy_matrix has {len(matrix)} rows but {columns} columns (one row per "
                             "trained experience, one column per test experience)")
        if self.initial_accuracy and len(self.initial_accuracy) != columns:
            raise ValueError(f"initial_accuracy has {len(self.initial_accuracy)} entries, the matrix {columns} columns")
        values = [v for row in matrix for v in row]
        if any(not 0 <= v <= 1 for v in values if not math.isnan(v)):
            raise ValueError("accuracy_matrix holds a value outside [0, 1] (accuracies are fractions)")
        if self.status == "completed":
            if not matrix or len(matrix) != columns:
                raise ValueError(f"status is completed but accuracy_matrix is {len(matrix)} x {columns}, not square")
            if any(math.isnan(v) for v in values):
                raise ValueError("status is completed but accuracy_matrix holds NaN")
            acc = self.metrics.get("acc")
            if acc is None or not math.isfinite(acc):
                raise ValueError("status is completed but metrics.acc is missing or not finite")
        return self


def _where(loc: tuple) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text.replace("schema_", "schema") or "(the whole record)"


def _first_error(err: ValidationError) -> str:
    first = err.errors(include_url=False)[0]
    message = first["msg"].removeprefix("Value error, ")
    given = "" if first["type"] in ("value_error", "missing") else f", got {reprlib.repr(first.get('input'))}"
    more = f" (and {err.error_count() - 1} more problem(s))" if err.error_count() > 1 else ""
    return f"field {_where(first['loc'])}: {message}{given}{more}"


def check_run(spec_data: Any, result_data: Any, spec_path: Any, result_path: Any) -> tuple[RunSpec, dict[str, Any]]:
    """(RunSpec, result dict) when both records pass the schema; ValueError naming the file and field."""
    try:
        spec_record = SpecRecord.model_validate(spec_data)
    except ValidationError as err:
        raise ValueError(f"{spec_path}: {_first_error(err)}") from None
    try:
        result = ResultRecord.model_validate(result_data)
    except ValidationError as err:
        raise ValueError(f"{result_path}: {_first_error(err)}") from None
    del spec_record  # valid: RunSpec reads the same data
    spec = RunSpec.from_dict(spec_data)
    if result.seed is not None and result.seed != spec.seed:
        raise ValueError(f"{result_path}: field seed: {result.seed} differs from spec.json's seed {spec.seed}")
    if result.run_id != spec.run_id:
        raise ValueError(f"{result_path}: field run_id: {reprlib.repr(result.run_id)} is not the hash of spec.json "
                         f"({spec.run_id}); one of the two files was changed")
    return spec, result_data
