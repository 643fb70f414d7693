"""`nlbench sweep`: resumable grid sweeps over hyperparameters, seeds and strategies.

A sweep is the Cartesian product of strategies x grid points x seeds, each point resolved into one
`RunSpec` and handed to an executor (`nlbench.commands.sweep.executors`: local subprocesses, or Ray tasks). Every run
lands in the results store under OUT/NAME/RUN_ID, so the same command run again resumes the sweep.

Decisions (documented in `nlbench sweep --help` too):
- A grid key applies to the strategies that declare it: `--strategy replay,sgd --grid mem_size=100,200`
  gives two replay runs and one sgd run per seed (sgd is not duplicated). A key that no listed
  strategy declares is an error naming the valid keys; a value is parsed and range-checked by each
  strategy's declared `HParam`.
- Values of a tuple-valued key (kind "ints", e.g. clock periods) are separated by ':'
  (`periods=1,8,64:1,16,128`); values of every other key by ',' (`alpha=1e-4,3e-4`).
- Resume: runs whose `done` marker holds `completed` or `diverged` are skipped (both are outcomes of
  the spec). Runs recorded as `failed` (a crash, a kill) are run again by default, as `nlbench run`
  does; `--no-retry-failed` skips them too.
- Runs are ordered seed-major (every configuration with seed 0 first), so a sweep stopped early has
  whole seeds rather than whole strategies.
- The exit code is 0 when every planned run is completed or diverged, 1 when any is failed,
  2 on bad input, 130 on Ctrl-C (or SIGTERM); finished runs are kept in every case.
- Several sweeps may write into one results directory at once: each run is claimed before it starts
  (`nlbench.core.store.claim_run`), a run claimed by another live process is waited for and its stored
  result taken (printed as `elsewhere`), and a run whose claimer died is run here. Every run is then
  stored once and trained once; result.json records the `pid` and `host` of the process that trained it.

This module is light at import (stdlib and typer only): the CLI imports it at startup. `python -m
nlbench.commands.sweep run-one SPEC --out DIR` is the subprocess entry point of the local executor.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ContextManager, Iterator, Mapping, Optional, Protocol, Sequence


EXECUTORS = ("local", "ray")
_REUSABLE = ("completed", "diverged")
MAX_SEEDS = 10_000  # a bound on `--seeds 0-N`, so a typo cannot exhaust memory

# --------------------------------------------------------------------------------------------------
# Settings: a sweep file, then command-line options over it


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


_STR_KEYS = ("suite", "name", "scenario", "head", "backbone", "protocol", "data_path", "amp", "device", "executor", "address")
_INT_KEYS = ("epochs", "batch_size", "jobs", "runs_per_gpu", "retries")
CONFIG_KEYS = tuple(f.name for f in fields(SweepSettings))


def _user_error(message: str) -> Exception:
    from nlbench.errors import UserError

    return UserError(message)


def _split_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_seeds(raw: Any) -> tuple[int, ...]:
    """`0,1,2`, `0-4` (inclusive), an int, or a list of ints -> a tuple of distinct seeds, in order."""
    bad = _user_error(f"--seeds expects comma-separated non-negative integers or a range like 0-4, got {raw!r}")
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
                if high_n < low_n:
                    raise bad
                if high_n - low_n >= MAX_SEEDS:
                    raise _user_error(f"--seeds {part} gives {high_n - low_n + 1} seeds; at most {MAX_SEEDS} per sweep")
                items.extend(range(low_n, high_n + 1))
            else:
                items.append(part)
    elif isinstance(raw, (list, tuple)):
        items = list(raw)
    else:
        raise bad
    if len(items) > MAX_SEEDS:
        raise _user_error(f"--seeds gives {len(items)} seeds; at most {MAX_SEEDS} per sweep")
    seeds: dict[int, None] = {}
    for item in items:
        try:
            seed = int(item) if not isinstance(item, (bool, float)) else None
        except (TypeError, ValueError):
            seed = None
        if seed is None or seed < 0:
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
            raise _user_error(f"--grid expects KEY=VALUES such as alpha=1e-4,3e-4 or periods=1,8,64:1,16,128, got {pair!r}")
        if key in grid:
            raise _user_error(f"--grid {key} is given twice; put all its values in one option")
        grid[key] = values.strip()
    return grid


def load_config(path: Path) -> dict[str, Any]:
    """Read a sweep file (.yaml/.yml, .toml or .json) into a dict of settings keys."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise _user_error(f"cannot read sweep file {path}: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise _user_error(f"sweep file {path} is not UTF-8 text (byte {err.start}); write it as YAML or TOML text") from None
    except ValueError as err:  # e.g. an embedded NUL in the path
        raise _user_error(f"cannot read sweep file {path!r}: {err}") from None
    suffix = path.suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise _user_error(f"reading {path} needs PyYAML (pip install pyyaml); or write the sweep as TOML") from None
            data = yaml.safe_load(text)
        elif suffix == ".toml":
            try:
                import tomllib
            except ImportError:  # Python 3.10
                try:
                    import tomli as tomllib  # type: ignore[no-redef]
                except ImportError:
                    raise _user_error(f"reading {path} on Python 3.10 needs tomli (pip install tomli); or use YAML") from None
            data = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise _user_error(f"sweep file {path} must end in .yaml, .yml, .toml or .json")
    except ValueError as err:  # yaml.YAMLError, tomllib.TOMLDecodeError and JSONDecodeError are ValueErrors...
        raise _user_error(f"sweep file {path} is not valid: {_first_line(err)}") from None
    except RecursionError:
        raise _user_error(f"sweep file {path} is nested too deeply to be a sweep description") from None
    except Exception as err:  # ...except YAMLError, which is not
        if type(err).__module__.startswith("yaml"):
            raise _user_error(f"sweep file {path} is not valid YAML: {_first_line(err)}") from None
        raise
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise _user_error(f"sweep file {path} must hold a mapping of settings (suite, strategy, grid, seeds, ...)")
    normalised = {str(k).replace("-", "_"): v for k, v in data.items()}
    if "strategies" in normalised and "strategy" not in normalised:
        normalised["strategy"] = normalised.pop("strategies")
    unknown = sorted(set(normalised) - set(CONFIG_KEYS))
    if unknown:
        raise _user_error(f"sweep file {path}: unknown key {unknown[0]!r}; valid: {', '.join(CONFIG_KEYS)}")
    return normalised


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def build_settings(file_values: Mapping[str, Any], cli_values: Mapping[str, Any]) -> SweepSettings:
    """Merge a sweep file's values with the command line's (the command line wins; `grid` merges per key)."""
    values: dict[str, Any] = {k: v for k, v in file_values.items() if v is not None}
    file_grid = values.pop("grid", None) or {}
    if not isinstance(file_grid, dict):
        raise _user_error("'grid' in the sweep file must be a mapping KEY: [values] (or KEY: 'v1,v2')")
    for key, value in cli_values.items():
        if value is not None and key != "grid":
            values[key] = value
    grid = {str(k): v for k, v in file_grid.items()}
    grid.update(cli_values.get("grid") or {})

    settings = SweepSettings(grid=grid)
    for key, value in values.items():
        if key in _STR_KEYS:
            if not isinstance(value, str) or not value.strip():
                raise _user_error(f"{key!r} must be a non-empty string, got {value!r}")
            value = value.strip()
        elif key in _INT_KEYS:
            if isinstance(value, bool) or not isinstance(value, int):
                raise _user_error(f"{key!r} must be an integer, got {value!r}")
        elif key == "cpus_per_run":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise _user_error(f"'cpus_per_run' must be a number, got {value!r}")
            value = float(value)
        elif key in ("download", "retry_failed", "compile", "channels_last"):
            if not isinstance(value, bool):
                raise _user_error(f"{key!r} must be true or false, got {value!r}")
        elif key in ("out", "data_root"):
            if not isinstance(value, (str, Path)) or not str(value).strip() or "\0" in str(value):
                raise _user_error(f"{key!r} must be a directory path, got {value!r}")
            value = Path(value).expanduser()
        elif key == "strategy":
            names = _split_list(value) if isinstance(value, str) else [str(v).strip() for v in value] if isinstance(value, (list, tuple)) else None
            if not names:
                raise _user_error("--strategy is empty; give at least one strategy (comma-separated)")
            value = tuple(dict.fromkeys(names))
        elif key == "seeds":
            value = parse_seeds(value)
        setattr(settings, key, value)
    if settings.executor not in EXECUTORS:
        raise _user_error(f"unknown executor {settings.executor!r}; valid: {', '.join(EXECUTORS)}")
    if settings.name is not None:
        from nlbench.core.store import check_run_name

        check_run_name(settings.name)
    return settings


# --------------------------------------------------------------------------------------------------
# The grid


def _format_value(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def parse_grid_values(hparam: Any, raw: Any) -> list[Any]:
    """One grid axis for one strategy: the CLI string form, or a list from a sweep file, parsed and
    validated by the declared HParam (its UserError names the valid range)."""
    if isinstance(raw, str):
        separator = ":" if hparam.kind == "ints" else ","
        texts = [part.strip() for part in raw.split(separator)]
        if any(not text for text in texts):
            raise _user_error(f"--grid {hparam.name}={raw!r} has an empty value; separate values with '{separator}'")
        values = [hparam.parse(text) for text in texts]
    else:
        items = list(raw) if isinstance(raw, (list, tuple)) else [raw]
        if hparam.kind == "ints" and items and all(isinstance(i, int) and not isinstance(i, bool) for i in items):
            items = [tuple(items)]  # a flat list of integers is one tuple value: periods: [1, 8, 64]
        if not items:
            raise _user_error(f"--grid {hparam.name} has no values")
        values = []
        for item in items:
            if isinstance(item, str):
                values.append(hparam.parse(item))
            else:
                values.append(hparam.validate(tuple(item) if isinstance(item, list) else item))
    return list(dict.fromkeys(values))  # drop repeats (1e-3 and 0.001 are one value)


def expand_grid(strategies: Sequence[str], grid: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(strategy, grid point) pairs: per strategy, the product of the grid keys it declares."""
    from nlbench.core.registry import declared_hparams

    declared = {name: declared_hparams(name) for name in strategies}
    valid = sorted({key for keys in declared.values() for key in keys})
    for key in grid:
        if not any(key in keys for keys in declared.values()):
            raise _user_error(f"unknown grid key {key!r} for {', '.join(strategies)}; valid: {', '.join(valid)}")
    points: list[tuple[str, dict[str, Any]]] = []
    for name in strategies:
        keys = [key for key in grid if key in declared[name]]
        axes = [parse_grid_values(declared[name][key], grid[key]) for key in keys]
        for combination in itertools.product(*axes):
            points.append((name, dict(zip(keys, combination))))
    return points


@dataclass(frozen=True)
class PlannedRun:
    spec: Any  # RunSpec
    point: tuple[tuple[str, Any], ...]  # the grid values of this run (the keys its strategy declares)

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={_format_value(v)}" for k, v in self.point) or "-"


def plan_runs(settings: SweepSettings, device: str) -> list[PlannedRun]:
    """Every run of the sweep as a resolved, validated spec; seed-major; repeated specs dropped."""
    from nlbench.core.registry import strategies as registered
    from nlbench.core.spec import resolve_spec

    names = list(settings.strategy) if settings.strategy else list(registered())
    points = expand_grid(names, settings.grid)
    planned: dict[str, PlannedRun] = {}
    for seed in settings.seeds:
        for name, point in points:
            spec = resolve_spec(
                settings.suite, name, device=device, seed=seed, scenario=settings.scenario,
                backbone=settings.backbone, head=settings.head, epochs=settings.epochs,
                batch_size=settings.batch_size, hparams=point, name=settings.name, protocol=settings.protocol,
                **{key: value for key in ("data_path", "amp") if (value := getattr(settings, key)) is not None},
                compile=settings.compile, channels_last=settings.channels_last,
            )
            planned.setdefault(spec.run_id, PlannedRun(spec, tuple(point.items())))
    return list(planned.values())


# --------------------------------------------------------------------------------------------------
# The store as the sweep sees it


def stored_result(out: Path, spec: Any) -> dict[str, Any] | None:
    """The finished result stored for `spec` (any status), or None (not run, unfinished or corrupt)."""
    from nlbench.core.store import is_done, read_run, run_dir

    if not is_done(out, spec):
        return None
    try:
        return read_run(run_dir(out, spec))[1]
    except ValueError:
        return None


def done_stamp(out: Path, spec: Any) -> tuple[int, int] | None:
    """Identity (inode, mtime) of the run's `done` marker, None when absent: a new write changes it."""
    from nlbench.core.store import DONE, run_dir

    try:
        st = (run_dir(out, spec) / DONE).stat()
    except (OSError, ValueError):
        return None
    return (st.st_ino, st.st_mtime_ns)


def is_reusable(result: Mapping[str, Any] | None, retry_failed: bool) -> bool:
    if result is None:
        return False
    status = result.get("status")
    return status in _REUSABLE or (status == "failed" and not retry_failed)


# --------------------------------------------------------------------------------------------------
# Progress and summary


def _hms(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _pct(value: Any) -> str:
    return "-" if value is None or value != value else f"{100 * value:.1f}"


def summary_rows(planned: Sequence[PlannedRun], results: Mapping[str, Mapping[str, Any] | None]) -> list[dict[str, Any]]:
    """One row per (strategy, grid point): runs per status and ACC/forgetting over completed seeds."""
    import statistics

    groups: dict[tuple[str, str], list[PlannedRun]] = {}
    for run in planned:
        groups.setdefault((run.spec.strategy, run.label), []).append(run)
    rows = []
    for (strategy, label), runs in groups.items():
        statuses = [str((results.get(r.spec.run_id) or {}).get("status", "not run")) for r in runs]
        completed = [results[r.spec.run_id] for r, s in zip(runs, statuses) if s == "completed"]
        accs = [m["acc"] for m in ((c.get("metrics") or {}) for c in completed) if m.get("acc") is not None]
        forgetting = [m["forgetting"] for m in ((c.get("metrics") or {}) for c in completed) if m.get("forgetting") is not None]
        rows.append({
            "strategy": strategy,
            "point": label,
            "runs": len(runs),
            "completed": statuses.count("completed"),
            "diverged": statuses.count("diverged"),
            "failed": statuses.count("failed"),
            "not_run": statuses.count("not run"),
            "acc_mean": statistics.fmean(accs) if accs else None,
            "acc_std": statistics.stdev(accs) if len(accs) > 1 else None,
            "forgetting_mean": statistics.fmean(forgetting) if forgetting else None,
        })
    return rows



# --------------------------------------------------------------------------------------------------
# Running a sweep


class SweepView(Protocol):
    """What a sweep shows (the CLI renders it with rich; tests may record it)."""

    def message(self, text: str) -> None: ...
    def show_plan(self, planned: Sequence[PlannedRun], results: Mapping[str, Any], retry_failed: bool,
                  out: Path, header: str) -> None: ...
    def live(self, total: int, labels: Mapping[str, str]) -> ContextManager[Any]: ...  # yields executor Events
    def show_summary(self, title: str, planned: Sequence[PlannedRun], results: Mapping[str, Any]) -> None: ...


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (a scheduler's stop) ends the sweep as cleanly as Ctrl-C does."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _local_executor(settings: SweepSettings, workdir: Path) -> tuple[Any, str]:
    from nlbench.commands.sweep.executors import LocalExecutor, plan_local, visible_gpu_ids

    if settings.device.startswith("cuda:"):
        raise _user_error("--device cuda:N is not available in a sweep; choose GPUs with CUDA_VISIBLE_DEVICES and use --device cuda")
    if settings.device not in ("auto", "cpu", "cuda"):
        raise _user_error(f"unknown device {settings.device!r}; valid in a sweep: auto, cpu, cuda")
    from nlbench.core.device import resolve_device

    device = str(resolve_device(settings.device))
    gpu_ids: list[str] = []
    if device == "cuda":
        import torch

        gpu_ids = visible_gpu_ids(torch.cuda.device_count())
    plan = plan_local(use_gpu=device == "cuda", gpu_ids=gpu_ids, runs_per_gpu=settings.runs_per_gpu,
                      jobs=settings.jobs, cpu_count=os.cpu_count() or 1)
    return LocalExecutor(plan, workdir=workdir, data_root=settings.data_root, download=settings.download), device


def _check_data(settings: SweepSettings) -> None:
    """Fail before any run starts when the suite's data is missing (and download it once, here,
    rather than in every subprocess at once)."""
    from nlbench.data.readers import load_arrays, resolve_data_root
    from nlbench.data.suites import get_suite

    info = get_suite(settings.suite)
    root = resolve_data_root(settings.data_root)
    for train in (True, False):
        load_arrays(info.dataset, root, train=train, download=settings.download)


def run_sweep(settings: SweepSettings, view: SweepView, *, dry_run: bool = False) -> int:
    """Plan the sweep, run what is not done yet, hand the summary to `view`; return the exit code (0 or 1).

    Raises UserError on bad input and KeyboardInterrupt after a Ctrl-C (finished runs are kept).
    """
    import shutil
    import tempfile

    from nlbench.commands.sweep.executors import RayExecutor
    from nlbench.core.store import check_writable
    from nlbench.data.suites import get_suite

    get_suite(settings.suite)  # unknown suite: one line before anything heavy starts
    out = settings.out
    workdir = Path(tempfile.mkdtemp(prefix="nlbench-sweep-"))
    executor: Any = None
    try:
        if settings.executor == "ray":
            if settings.device not in ("auto", "cpu", "cuda"):
                raise _user_error(f"unknown device {settings.device!r}; valid with --executor ray: auto, cpu, cuda")
            executor = RayExecutor(address=settings.address, jobs=settings.jobs, runs_per_gpu=settings.runs_per_gpu,
                                   cpus_per_run=settings.cpus_per_run, retries=settings.retries,
                                   data_root=settings.data_root, download=settings.download)
            # Validate the plan before starting a cluster; the device is the cluster's answer.
            plan_runs(settings, "cpu")
            if not dry_run:
                check_writable(out)
            device = executor.connect(settings.device)
        else:
            if settings.address:
                raise _user_error("--address joins a Ray cluster; it needs --executor ray")
            executor, device = _local_executor(settings, workdir)
        planned = plan_runs(settings, device)
        if not planned:
            raise _user_error("the sweep is empty")
        # The done markers' stamps as read now: a run another process stores after this point is
        # recognised by the executor and taken as it is, not trained again.
        done_before = {run.spec.run_id: done_stamp(out, run.spec) for run in planned}
        results = {run.spec.run_id: stored_result(out, run.spec) for run in planned}
        todo = [run for run in planned if not is_reusable(results[run.spec.run_id], settings.retry_failed)]
        name = planned[0].spec.name
        n_points = len({(r.spec.strategy, r.point) for r in planned})
        header = (f"sweep {name}: {len(planned)} runs ({n_points} configuration(s) x {len(settings.seeds)} seed(s)), "
                  f"{len(planned) - len(todo)} already done, {len(todo)} to run")
        if dry_run:
            view.show_plan(planned, results, settings.retry_failed, out, header)
            return 0
        check_writable(out)
        view.message(header)
        view.message(f"{executor.describe()}; results in {out / name}/")
        interrupted = False
        if todo:
            if settings.executor == "local":
                _check_data(settings)
            labels = {run.spec.run_id: run.label for run in todo}
            with _terminate_as_interrupt():
                try:
                    with view.live(len(todo), labels) as display:
                        executor.run([run.spec for run in todo], out, display, done_before=done_before)
                except KeyboardInterrupt:
                    interrupted = True
        results = {run.spec.run_id: stored_result(out, run.spec) for run in planned}
        view.show_summary(f"sweep {name}: {planned[0].spec.suite}, {planned[0].spec.scenario}-incremental",
                      planned, results)
        if interrupted:
            finished = sum(r is not None for r in results.values())
            view.message(f"interrupted: {finished} of {len(planned)} runs are stored; "
                         "run the same command again to finish the sweep")
            raise KeyboardInterrupt
        return 1 if any((r or {}).get("status") == "failed" for r in results.values()) else 0
    finally:
        if executor is not None and hasattr(executor, "close"):
            executor.close()
        shutil.rmtree(workdir, ignore_errors=True)
