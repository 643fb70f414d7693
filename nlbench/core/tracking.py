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
from dataclasses import asdict, dataclass
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
    if values is None:
        return ()
    if isinstance(values, str):
        values = [values]
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
    """A validated `Tracking` (empty, so false, when no tracker is asked for)."""
    kinds = parse_trackers(values)
    where = str(directory) if directory is not None and str(directory).strip() else DEFAULT_LOG_DIR
    return Tracking(kinds=kinds, directory=where, group=group)
