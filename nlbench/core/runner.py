"""Run one spec: train a strategy over a suite's stream and record the full accuracy matrix.

Protocol (every strategy, every suite): evaluate on every test experience once before training (the
pre-training row b, for FWT), then after each training experience i evaluate on every test
experience j, giving R[i, j]. Metrics are derived from R by `nlbench.core.metrics`. Wall time per
experience, peak memory, the environment and the run's status are recorded beside R.

A run whose training loss becomes NaN/inf stops with status `diverged` and keeps the rows evaluated
before it diverged; any other exception gives status `failed` with the error. Bad input and missing
data raise `UserError` before any training starts.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import random
import re
import subprocess
import time
import traceback
import warnings
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from avalanche.core import SupervisedPlugin
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.training.plugins import EvaluationPlugin
from avalanche.training.templates import SupervisedTemplate

from nlbench.core import metrics
from nlbench.core.checkpoint import Checkpoints, Progress
from nlbench.core.continual_eval import observer_plugins
from nlbench.data.fastpath import Autocast, FastDataPath, random_crop_flip
from nlbench.core.backbones import build_backbone
from nlbench.core.device import resolve_device
from nlbench.models.heads import wrap_for_scenario
from nlbench.core.registry import BuildContext, assemble_optimizer, build_parts
from nlbench.core.spec import RunSpec
from nlbench.data.streams import build_benchmark, hold_out
from nlbench.data.suites import Benchmark, configure_suite

ProgressCallback = Callable[[str, dict], None]

# nlbench keeps its own record of every metric, so an evaluator without loggers is intended.
warnings.filterwarnings("ignore", message="No loggers specified, metrics will not be logged")


class Diverged(RuntimeError):
    """The training loss became NaN or inf."""


class DivergenceCheck(SupervisedPlugin):
    """Flags a non-finite training loss without a host sync per step: the flag is a device tensor,
    read once at the end of each epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.nonfinite: torch.Tensor | None = None

    def before_backward(self, strategy: Any, **kwargs: Any) -> None:
        bad = ~torch.isfinite(strategy.loss.detach())
        self.nonfinite = bad if self.nonfinite is None else self.nonfinite | bad

    def after_training_epoch(self, strategy: Any, **kwargs: Any) -> None:
        if self.nonfinite is not None and bool(self.nonfinite):
            raise Diverged(f"training loss became NaN/inf during experience {strategy.experience.current_experience}")


class PersistentOptimizer:
    """Template mixin: build the optimizer once and keep its state for the whole stream.

    Avalanche's `make_optimizer` resets the optimizer on the first experience and re-adds every
    parameter as one group, which wipes the clocks, accumulators and Gram statistics that Nested
    Learning optimizers keep (and fails for several parameter groups). Here parameters that appear
    later (new task heads) are added as a new group and nothing is ever reset: optimizer state is
    the slowest memory of the learner, and one stream is one learning process.
    """

    def make_optimizer(self, reset_optimizer_state: bool = False, **kwargs: Any) -> None:
        known = {id(p) for group in self.optimizer.param_groups for p in group["params"]}
        new = [p for p in self.model.parameters() if p.requires_grad and id(p) not in known]
        if new:
            self.optimizer.add_param_group({"params": new})
        self.optimized_param_id = {}  # marks the optimizer as set up for Avalanche's check


@lru_cache(maxsize=None)
def _template_class(mixins: tuple[type, ...], template: type) -> type:
    """`template` with nlbench's mixins in front (persistent optimizer, data path, autocast)."""
    return type(f"NLBench{template.__name__}", (PersistentOptimizer, *mixins, template), {})


@lru_cache(maxsize=1)
def environment() -> dict[str, Any]:
    """Versions, machine and source revision, so a result says what produced it."""
    versions = {}
    for package in ("nlbench", "torch", "torchvision", "avalanche-lib", "numpy", "pandas"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    source = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5).stdout.strip()) if commit else None
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    return {
        "versions": versions,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "git_commit": commit,
        "git_dirty": dirty,
    }


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


class PeakMemory:
    """Peak memory of one run: CUDA allocator peak on a GPU, peak resident set size (VmHWM) on CPU.

    On Linux, writing 5 to /proc/self/clear_refs resets VmHWM, so the CPU figure is this run's peak
    even when several runs share a process; elsewhere it falls back to the process-lifetime peak.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.kind = "cuda_max_allocated" if device.type == "cuda" else "rss_peak"
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        else:
            try:
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                self.kind = "rss_peak_process"

    def megabytes(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        try:
            status = Path("/proc/self/status").read_text()
            return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024
        except (OSError, AttributeError):
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(spec: RunSpec, benchmark: Benchmark) -> torch.nn.Module:
    suite = benchmark.suite
    overrides = suite.backbone_kwargs if spec.backbone == suite.backbone else {}
    backbone = build_backbone(spec.backbone, suite.input_shape, suite.n_classes, **overrides)
    return wrap_for_scenario(backbone, spec.head, benchmark.experience_classes, suite.n_classes)


def build_strategy(spec: RunSpec, benchmark: Benchmark, device: torch.device) -> tuple[Any, EvaluationPlugin]:
    """Model, optimizer and plugins from the registry, assembled into one Avalanche strategy."""
    model = build_model(spec, benchmark).to(device)
    ctx = BuildContext(spec=spec, suite=benchmark.suite, model=model, device=device)
    parts = build_parts(spec.strategy, ctx, spec.hp)
    if parts.model_transform is not None:
        model = parts.model_transform(model).to(device)
    image = benchmark.suite.kind == "image"
    if spec.channels_last and image:
        model = model.to(memory_format=torch.channels_last)
    optimizer = assemble_optimizer(parts, model)
    if spec.compile:
        model.compile()  # in place: parameters, hooks and the optimizer's references stay the same
    evaluator = EvaluationPlugin(accuracy_metrics(experience=True), loggers=[])
    mixins = ((FastDataPath,) if ctx.fast_path else ()) + ((Autocast,) if spec.amp == "bf16" else ())
    template = _template_class(mixins, parts.template or SupervisedTemplate)
    criterion, seam = torch.nn.CrossEntropyLoss(), []
    if benchmark.suite.kind == "sequence":  # (B, L, V) logits: token-level loss and next-token accuracy
        from nlbench.data.bigram import FlattenSequenceOutputs, SequenceCrossEntropy

        from nlbench.data.bigram import TokenCrossEntropy

        criterion, seam = SequenceCrossEntropy(), [FlattenSequenceOutputs(), TokenCrossEntropy()]
    strategy = template(
        model=model,
        optimizer=optimizer,
        criterion=criterion,
        train_mb_size=spec.batch_size,
        train_epochs=spec.epochs,
        eval_mb_size=spec.eval_batch_size,
        device=device,
        plugins=[*parts.plugins, *seam, *observer_plugins(spec, benchmark), DivergenceCheck()],
        evaluator=evaluator,
        eval_every=-1,
        **parts.template_kwargs,
    )
    strategy.fast_augment = random_crop_flip if benchmark.suite.augment else None
    strategy.channels_last = spec.channels_last and image
    return strategy, evaluator


_EXP_ACC = re.compile(r"^Top1_Acc_Exp/eval_phase/test_stream/.*Exp(\d+)$")


def evaluate_row(strategy: Any, evaluator: EvaluationPlugin, test_stream: Any) -> list[float]:
    """Accuracy on every test experience, in stream order (keys are matched by pattern: task-aware
    benchmarks put /TaskNNN in them, task-free ones do not)."""
    strategy.eval(test_stream)
    found: dict[int, float] = {}
    for key, value in evaluator.get_last_metrics().items():
        match = _EXP_ACC.match(key)
        if match:
            found[int(match.group(1))] = float(value)
    return [found[j] for j in range(len(test_stream))]


def run_extras(strategy: Any) -> dict[str, Any]:
    """What the optimizer and the plugins add to result.json, each under its own key.

    - `clocks`: a multi-clock optimizer's global step and per-level update counts (`clock_summary()`,
      nl-math.md 10);
    - `diagnostics`: an optimizer's own measurements (`diagnostics()`, e.g. how often a stabiliser acted);
    - any plugin with `result_fields()` returns a dict merged in (continual evaluation curves, probes, ...).
    A key that two sources give is an error: nothing is silently overwritten.
    """
    extra: dict[str, Any] = {}
    optimizer = getattr(strategy, "optimizer", None) if strategy is not None else None
    for key, method in (("clocks", "clock_summary"), ("diagnostics", "diagnostics")):
        function = getattr(optimizer, method, None)
        if callable(function):
            value = function()
            if value:  # an optimizer with nothing to report (a clock without a measuring base) adds no empty key
                extra[key] = value
    for plugin in getattr(strategy, "plugins", []) if strategy is not None else []:
        fields = getattr(plugin, "result_fields", None)
        if callable(fields):
            for key, value in fields().items():
                if key in extra:
                    raise RuntimeError(f"two sources report {key!r} for result.json")
                extra[key] = value
    return extra


def run_one(
    spec: RunSpec,
    benchmark: Benchmark | None = None,
    data_root: Path | None = None,
    download: bool = True,
    progress: ProgressCallback | None = None,
    tracking: Any = None,
    checkpoint_dir: Path | None = None,
) -> dict[str, Any]:
    """Train `spec.strategy` over the stream; return the result record (see module docstring).

    `tracking` (a `nlbench.core.tracking.Tracking`) writes the run to experiment trackers as it goes. With
    `checkpoint_dir`, the state after each experience but the last is saved there, and a run killed
    earlier resumes after its last saved experience (`nlbench.core.checkpoint`)."""
    from nlbench.data.readers import resolve_data_root

    notify = progress or (lambda kind, info: None)
    device = resolve_device(spec.device)
    if benchmark is None:
        benchmark = build_benchmark(configure_suite(spec.suite, spec.suite_options), spec.scenario, spec.seed,
                                    resolve_data_root(data_root), download)
    if spec.holdout:  # a tuning run: validation data held out of each training experience replaces the test stream
        benchmark = hold_out(benchmark, spec.holdout, spec.seed)
    # Benchmark builders reseed the global RNG; seed after them so the model init is the seed's own.
    seed_everything(spec.seed)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)

    started = time.perf_counter()
    started_at = datetime.now(timezone.utc).isoformat()
    memory = PeakMemory(device)
    matrix: list[list[float]] = []
    initial: list[float] = []
    train_times: list[float] = []
    eval_times: list[float] = []
    status, error = "completed", None
    strategy = tracker = None
    checkpoints = Checkpoints(checkpoint_dir, spec, environment()) if checkpoint_dir is not None else None
    resumed_after: list[int] = []
    try:
        strategy, evaluator = build_strategy(spec, benchmark, device)
        if tracking:  # the trackers' libraries load only when asked for; not part of the run's state
            from nlbench.core.trackers import RunTracker

            tracker = RunTracker(tracking, spec)
            strategy.plugins.append(tracker)
        resumed = checkpoints.resume(strategy, benchmark) if checkpoints is not None else None
        if resumed is not None:  # the rows, timings and RNG states of the killed run continue
            matrix, initial, train_times, eval_times = resumed.matrix, resumed.initial, resumed.train_times, resumed.eval_times
            started, started_at, resumed_after = time.perf_counter() - resumed.wall_time_s, resumed.started_at, resumed.resumed_after
        else:
            tick = time.perf_counter()
            initial = evaluate_row(strategy, evaluator, benchmark.test_stream)
            eval_times.append(time.perf_counter() - tick)
        for experience in benchmark.train_stream:
            if experience.current_experience < len(matrix):
                continue  # trained before the checkpoint it resumed from
            notify("experience", {"spec": spec, "experience": experience.current_experience})
            tick = time.perf_counter()
            strategy.train(experience)
            train_times.append(time.perf_counter() - tick)
            tick = time.perf_counter()
            matrix.append(evaluate_row(strategy, evaluator, benchmark.test_stream))
            eval_times.append(time.perf_counter() - tick)
            if checkpoints is not None and len(matrix) < len(benchmark.train_stream):
                checkpoints.save(strategy, Progress(matrix, initial, train_times, eval_times,
                                                    time.perf_counter() - started, started_at, resumed_after))
    except Diverged as err:
        status, error = "diverged", str(err)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as err:  # a crash of one run must not take the others with it
        status, error = "failed", f"{type(err).__name__}: {err}\n{traceback.format_exc()}"

    summary = metrics.summarize(np.array(matrix), np.array(initial)) if len(matrix) == len(benchmark.train_stream) else {}
    extra = run_extras(strategy)
    result = {
        "status": status,
        "error": error,
        "seed": spec.seed,
        "accuracy_matrix": matrix,
        "initial_accuracy": initial,
        "metrics": summary,
        "experience_train_time_s": train_times,
        "eval_time_s": eval_times,
        "wall_time_s": time.perf_counter() - started,
        "peak_memory_mb": memory.megabytes(),
        "peak_memory_kind": memory.kind,
        "device": str(device),
        "device_name": device_description(device),
        "environment": environment(),
        "started_at": started_at,
        "finished_at": datetime.now(timezone.utc).isoformat(),
        **({"resumed_after": resumed_after} if resumed_after else {}),
        **extra,
    }
    if tracker is not None:
        tracker.finish(result)
    return result
