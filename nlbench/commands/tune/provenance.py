"""The record of a selection: `OUT/NAME/selection.json`, next to the test runs it chose.

Why a file beside the runs and not a field of the spec: a run is a pure function of its spec, and two
commands that train the same configuration share one run directory (same run id). Why a configuration
was chosen (its trials, the budget, the validation scores) belongs to the selection, not to the run:
an unhashed spec field would record whichever command trained the run first, and re-tuning with
another budget would have to rewrite finished runs. One file per results name holds one entry per
(strategy, setting); a new tune of the same strategy in the same setting replaces its entry, and the
runs it no longer points to stay stored as ordinary runs.

The entry (JSON): strategy; setting (suite, scenario, head, backbone, epochs, batch_size, protocol);
metric, direction, val_fraction, tune_seed, sampler, budget, space (hyperparameter -> range); trials
(number, params, value, status, run_id of the validation run under NAME-trials); chosen (the best
trial's params), best_value, best_trial; test_seeds and test_run_ids; created_at; nlbench version.
`nlbench report` reads `test_run_ids` to know which runs are the tuned ones (Verdicts). Both read the
file through `nlbench.core.selection`, its declared schema: a damaged file is skipped whole, with one
warning naming the file and the field, and a FIFO or other non-regular file is never opened.
"""

from __future__ import annotations

import json
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nlbench.core.selection import SELECTION_FILE, SELECTION_SCHEMA, read_selection_file

__all__ = ["SELECTION_FILE", "SELECTION_SCHEMA", "SETTING_KEYS", "read_selection", "setting_of", "write_selection"]
SETTING_KEYS = ("suite", "scenario", "head", "backbone", "epochs", "batch_size", "protocol")


def setting_of(spec: Any) -> dict[str, Any]:
    return {key: getattr(spec, key) for key in SETTING_KEYS}


def _json_value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def write_selection(path: Path, entry: dict[str, Any]) -> None:
    """Add `entry` to the selection file at `path`, replacing the entry of the same strategy and setting."""
    import importlib.metadata

    from nlbench.io import atomic_write_text

    entry = {**entry, "created_at": datetime.now(timezone.utc).isoformat()}
    try:
        entry["nlbench_version"] = importlib.metadata.version("nlbench")
    except importlib.metadata.PackageNotFoundError:
        entry["nlbench_version"] = None
    entry["chosen"] = {k: _json_value(v) for k, v in entry.get("chosen", {}).items()}
    for trial in entry.get("trials", []):
        trial["params"] = {k: _json_value(v) for k, v in trial["params"].items()}
    entries = [e for e in read_selection(path)
               if not (e.get("strategy") == entry["strategy"] and e.get("setting") == entry["setting"])]
    entries.append(entry)
    payload = {"schema": SELECTION_SCHEMA, "kind": "nlbench-selection", "selections": entries}
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def read_selection(path: Path) -> list[dict[str, Any]]:
    """The entries of a selection file that passes the schema (`nlbench.core.selection`); [] when it is
    absent, and [] with one UserWarning naming the file and the failing field when it is damaged (a
    tune then writes a new file in its place)."""
    entries, problem = read_selection_file(path)
    if problem:
        warnings.warn(problem, UserWarning, stacklevel=2)
    return entries
