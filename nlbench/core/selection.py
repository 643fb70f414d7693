"""The declared schema of `selection.json`, the record `nlbench tune` writes beside the test runs it chose
(`nlbench.commands.tune.provenance` writes it; the tune and the report read it through here).

A selection file is used only when it passes these pydantic models, as a stored run is used only when
its spec.json and result.json pass `nlbench.core.schema`. Types are strict (no "5" for 5, no 5 for a
list of run ids). A file that does not pass is skipped whole, with one message naming the file and the
first failing field, so no reader ever sees half of a damaged file: a truncated file, a list or a
binary blob at the top, an entry that is not an object, `test_run_ids` that is not a list of run ids.
A path that is not a regular file (a FIFO, a device, a directory) is never opened: reading a FIFO
with no writer would block forever.

Required in an entry: `strategy` and `test_run_ids` (what the report's Verdicts read), and a trial's
`number`. Every other field the tune writes, in the entry, its `setting` and its trials, is optional here
but typed when present (see provenance.py for their meaning): the report's Tuning section reads them.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from nlbench.core.schema import _first_error

SELECTION_FILE = "selection.json"
SELECTION_SCHEMA = 1

Scalar = Union[bool, int, float, str, None]
Params = dict[str, Union[Scalar, list[Scalar]]]
RunId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")]  # RunSpec.run_id: 16 hex digits of a sha256


class Setting(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    suite: Optional[str] = None
    scenario: Optional[str] = None
    head: Optional[str] = None
    backbone: Optional[str] = None
    epochs: Optional[int] = Field(default=None, ge=1)
    batch_size: Optional[int] = Field(default=None, ge=1)
    protocol: Optional[str] = None


class TrialEntry(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    number: int = Field(ge=0)
    params: Params = {}
    value: Optional[float] = None  # +inf: a diverged trial of a minimised metric
    status: Optional[Literal["completed", "diverged", "failed", "not run"]] = None
    run_id: Optional[RunId] = None


class SelectionEntry(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    strategy: str = Field(min_length=1)
    test_run_ids: list[RunId]
    setting: Optional[Setting] = None
    metric: Optional[str] = None
    direction: Optional[Literal["maximize", "minimize"]] = None
    val_fraction: Optional[float] = Field(default=None, gt=0, lt=1)
    tune_seed: Optional[int] = Field(default=None, ge=0)
    sampler: Optional[str] = None
    budget: Optional[int] = Field(default=None, ge=1)
    space: Optional[dict[str, str]] = None
    trials: list[TrialEntry] = []
    chosen: Optional[Params] = None
    best_value: Optional[float] = None
    best_trial: Optional[int] = Field(default=None, ge=0)
    test_seeds: list[int] = []
    created_at: Optional[str] = None
    nlbench_version: Optional[str] = None



class SelectionRecord(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    schema_: Literal[1] = Field(default=SELECTION_SCHEMA, alias="schema")
    kind: Literal["nlbench-selection"] = "nlbench-selection"
    selections: list[SelectionEntry]


def _read_regular(path: Path) -> bytes:
    """The bytes of `path`; OSError when it is not a regular file (checked before and after opening,
    and opened non-blocking, so a FIFO swapped in between cannot block the read either)."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise IsADirectoryError("not a regular file")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise IsADirectoryError("not a regular file")
        return handle.read()


def read_selection_file(path: Path | str) -> tuple[list[dict[str, Any]], Optional[str]]:
    """(entries, None) for a valid file, ([], None) when there is none, ([], "skipping PATH: why") when
    it is damaged: the message names the file and the first failing field (module docstring)."""
    path = Path(path)
    if not os.path.lexists(path):
        return [], None
    try:
        data = json.loads(_read_regular(path))
    except IsADirectoryError:
        kind = "a directory" if path.is_dir() else "a FIFO" if path.is_fifo() else "not a regular file"
        return [], f"skipping {path}: it is {kind}, not a selection file; not read"
    except OSError as err:
        return [], f"skipping {path}: unreadable ({err.strerror or err}); its selections are not used"
    except ValueError as err:  # truncated, not JSON, not text
        why = str(err).splitlines()[0][:120] if isinstance(err, json.JSONDecodeError) else "not text: a binary file?"
        return [], f"skipping {path}: the whole file: not valid JSON ({why}); its selections are not used"
    try:
        SelectionRecord.model_validate(data)
    except ValidationError as err:
        return [], f"skipping {path}: {_first_error(err)}; its selections are not used"
    return list(data["selections"]), None


def selected_run_ids(root: Path | str) -> tuple[set[str], list[str]]:
    """The test run ids of every valid selection file under `root`, and one message per damaged one."""
    ids: set[str] = set()
    problems: list[str] = []
    for path in sorted(Path(root).rglob(SELECTION_FILE)):
        entries, problem = read_selection_file(path)
        if problem:
            problems.append(problem)
        for entry in entries:
            ids.update(entry["test_run_ids"])
    return ids, problems
