"""Which experiment trackers a run writes to, and where: the `--log` choice of `run`, `sweep` (and any
command that trains runs).

A `Tracking` names the trackers (`tensorboard`, `wandb`, `csv`), the log directory and the group
(a sweep's or a run's name). It is plain data: torch-free, so the CLI checks `--log` before torch
loads, and JSON-serialisable, so it travels to a sweep's child processes and Ray tasks. It is not
part of a run's spec: logging a run does not change its run id, its numbers or its result.json.

Each run then carries a `nlbench.core.trackers.RunTracker` (an Avalanche plugin) built from it;
that module, and the trackers' own libraries, load only when a tracker is asked for.
"""

from __future__ import annotations

import importlib.util
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

from nlbench.errors import UserError

TRACKERS = ("tensorboard", "wandb", "csv")
# The module each tracker needs, and the package that provides it (the `track` extra installs both).
_NEEDS = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb")}
DEFAULT_LOG_DIR = "logs"


@dataclass(frozen=True)
class Tracking:
    """The trackers a run writes to. `directory/<tracker>/<group>/<run label>` is each run's log
    (W&B keeps its own layout under `directory/wandb/`, with the group as the W&B group)."""

    kinds: tuple[str, ...] = ()
    directory: str = DEFAULT_LOG_DIR
    group: Optional[str] = None  # None: the run's name (its results sub-directory)
    project: str = "nlbench"  # the W&B project

    def __bool__(self) -> bool:
        return bool(self.kinds)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "Tracking":
        data = json.loads(text)
        return cls(kinds=tuple(data.get("kinds") or ()), directory=str(data.get("directory") or DEFAULT_LOG_DIR),
                   group=data.get("group"), project=str(data.get("project") or "nlbench"))


def parse_trackers(values: Optional[Iterable[Any]]) -> tuple[str, ...]:
    """`--log tensorboard --log csv` or `--log tensorboard,csv` (or a sweep file's list) -> the distinct
    trackers in order. Raises UserError for an unknown name or a tracker whose library is missing."""
    if values is None or values is False:  # a sweep file's `log: false`: no trackers
        return ()
    if isinstance(values, str):
        values = [values]
    elif not isinstance(values, (list, tuple)):
        raise UserError(f"--log expects tracker names ({', '.join(TRACKERS)}) or false, got {values!r}")
    kinds: dict[str, None] = {}
    for value in values:
        if not isinstance(value, str):
            raise UserError(f"--log expects tracker names ({', '.join(TRACKERS)}), got {value!r}")
        for part in value.split(","):
            name = part.strip().lower()
            if not name:
                continue
            if name not in TRACKERS:
                raise UserError(f"unknown tracker {part.strip()!r} for --log; valid: {', '.join(TRACKERS)}")
            kinds.setdefault(name)
    for name in kinds:
        module, package = _NEEDS.get(name, (None, None))
        if module is not None and importlib.util.find_spec(module) is None:
            raise UserError(f"--log {name} needs the {package} package: pip install -e '.[track]' (or pip install {package})")
    return tuple(kinds)


def make_tracking(values: Optional[Iterable[Any]], directory: Any = None, group: Optional[str] = None) -> Tracking:
    """A validated `Tracking` (empty, so false, when no tracker is asked for); with a tracker, the log
    directory is checked too (`check_log_dir`)."""
    kinds = parse_trackers(values)
    where = str(directory) if directory is not None and str(directory).strip() else DEFAULT_LOG_DIR
    if kinds:
        check_log_dir(where)
    return Tracking(kinds=kinds, directory=where, group=group)


def check_log_dir(directory: Any) -> None:
    """Raise UserError when the trackers could not write under `directory`: it, or the nearest folder
    above it that exists, is not a directory, or that folder is not writable. Leaves nothing behind: a
    missing directory is not created (the first run does that), and the write probe is removed."""
    path = Path(str(directory)).expanduser()
    if "\0" in str(path):
        raise UserError(f"--log-dir {str(directory)!r} is not a valid path")
    existing = path.absolute()
    while not (existing.exists() or existing.is_symlink()) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        what = "is a file" if existing == path.absolute() else f"is under {existing}, which is a file"
        raise UserError(f"--log-dir {path} {what}, not a directory; choose a directory for the tracker logs")
    try:
        os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".nlbench-log-probe-"))
    except OSError as err:
        raise UserError(f"--log-dir {path} is not writable ({existing}: {err.strerror or err}); "
                        "choose a directory you can write to") from None
