"""Experiment trackers (TensorBoard, Weights & Biases, CSV) fed by one Avalanche plugin per run.

`RunTracker` rides along in the run's strategy (`nlbench.core.runner.run_one` appends it to the
plugins) and writes, as the run goes:
- `train/loss`: the mean training loss of each epoch (step: epochs trained over the stream). The
  loss is summed on the device and read once per epoch, so tracking adds no host sync per step;
- `acc/exp_<j>`, `acc/seen`, `acc/all`: each accuracy-matrix row (step: experiences trained, 0 for
  the pre-training row), its mean over the experiences seen so far and over all of them;
- `time/train_s`, `time/eval_s`: wall time of each training experience and evaluation pass.
`finish(result)` adds the run's metrics (ACC, forgetting, BWT, ...), wall time, peak memory and
status, the full accuracy matrix, then closes every tracker. The spec is each tracker's config.

Where it writes (`Tracking.directory` = D, group G = the sweep's or run's name, label L =
`<strategy>_s<seed>_<run id[:8]>`):
- tensorboard: `D/tensorboard/G/L/` (`tensorboard --logdir D/tensorboard`); a run logged again
  replaces its earlier event files;
- wandb: a W&B run named L in group G, job type = the strategy, under `D/wandb/` (WANDB_MODE=offline
  keeps it local; `wandb sync` uploads it later);
- csv: `D/csv/G/L/metrics.csv` (header `tag,axis,step,value`), `config.json` (the spec), at the end
  `accuracy_matrix.csv` and `summary.json`.
The trackers' libraries are imported when a run opens them, never otherwise.
"""

from __future__ import annotations

import csv
import json
import re
import time
from pathlib import Path
from typing import Any, Mapping

from avalanche.core import SupervisedPlugin

from nlbench.core.tracking import Tracking

_EXP_ACC = re.compile(r"^Top1_Acc_Exp/eval_phase/test_stream/.*Exp(\d+)$")
_FINAL_KEYS = ("acc", "forgetting", "bwt", "avg_inc_acc", "learning_acc", "fwt")


def run_label(spec: Any) -> str:
    strategy = re.sub(r"[^A-Za-z0-9._+-]+", "_", spec.strategy)
    return f"{strategy}_s{spec.seed}_{spec.run_id[:8]}"


class _TensorBoard:
    def __init__(self, path: Path, spec: Mapping[str, Any]):
        from torch.utils.tensorboard import SummaryWriter

        path.mkdir(parents=True, exist_ok=True)
        for old in path.glob("events.out.tfevents.*"):  # a run logged again replaces its log
            old.unlink()
        self.path = path
        self.writer = SummaryWriter(log_dir=str(path))
        self.writer.add_text("spec", "```\n" + json.dumps(dict(spec), indent=2, sort_keys=True) + "\n```", 0)

    def log(self, values: Mapping[str, float], axis: str, step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def finish(self, result: Mapping[str, Any], final: Mapping[str, float], step: int) -> None:
        self.log(final, "experience", step)
        rows = ["| after | " + " | ".join(f"exp {j}" for j in range(len(result.get("initial_accuracy") or []))) + " |"]
        rows.append("|---" * (1 + len(result.get("initial_accuracy") or [])) + "|")
        for i, row in enumerate([result.get("initial_accuracy") or []] + list(result.get("accuracy_matrix") or [])):
            rows.append(f"| {'init' if i == 0 else i - 1} | " + " | ".join(f"{100 * v:.1f}" for v in row) + " |")
        self.writer.add_text("accuracy_matrix", "\n".join(rows), step)
        self.writer.add_text("status", f"{result.get('status')}" + (f": {str(result.get('error')).splitlines()[0]}"
                                                                   if result.get("error") else ""), step)
        self.writer.close()


class _WandB:
    def __init__(self, tracking: Tracking, directory: Path, group: str, label: str, spec: Mapping[str, Any]):
        import wandb

        directory.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=tracking.project, group=group, job_type=str(spec.get("strategy")), name=label,
                              dir=str(directory), config=dict(spec), tags=[str(spec.get("suite")), str(spec.get("strategy"))])
        for axis, pattern in (("epoch", "train/*"), ("experience", "acc/*"), ("experience", "time/*"),
                              ("experience", "final/*")):
            self.run.define_metric(axis)
            self.run.define_metric(pattern, step_metric=axis)

    def log(self, values: Mapping[str, float], axis: str, step: int) -> None:
        self.run.log({**values, axis: step})

    def finish(self, result: Mapping[str, Any], final: Mapping[str, float], step: int) -> None:
        self.run.log({**final, "experience": step})
        self.run.summary.update({"status": result.get("status"), "accuracy_matrix": result.get("accuracy_matrix"),
                                 "initial_accuracy": result.get("initial_accuracy"), **final})
        self.run.finish(exit_code=0 if result.get("status") != "failed" else 1)


class _Csv:
    def __init__(self, path: Path, spec: Mapping[str, Any]):
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        (path / "config.json").write_text(json.dumps(dict(spec), indent=2, sort_keys=True) + "\n")
        self.file = open(path / "metrics.csv", "w", newline="")
        self.writer = csv.writer(self.file)
        self.writer.writerow(["tag", "axis", "step", "value"])

    def log(self, values: Mapping[str, float], axis: str, step: int) -> None:
        for tag, value in values.items():
            self.writer.writerow([tag, axis, step, repr(float(value))])
        self.file.flush()  # readable while the run goes on

    def finish(self, result: Mapping[str, Any], final: Mapping[str, float], step: int) -> None:
        self.log(final, "experience", step)
        self.file.close()
        initial = result.get("initial_accuracy") or []
        with open(self.path / "accuracy_matrix.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["after", *(f"exp_{j}" for j in range(len(initial)))])
            for i, row in enumerate([initial] + list(result.get("accuracy_matrix") or [])):
                writer.writerow(["init" if i == 0 else i - 1, *(repr(float(v)) for v in row)])
        keep = ("status", "error", "metrics", "experience_train_time_s", "eval_time_s", "wall_time_s", "peak_memory_mb",
                "peak_memory_kind", "device", "started_at", "finished_at")
        (self.path / "summary.json").write_text(json.dumps({k: result.get(k) for k in keep}, indent=2) + "\n")


class RunTracker(SupervisedPlugin):
    """Writes one run's curves to the trackers of a `Tracking` (see the module docstring)."""

    def __init__(self, tracking: Tracking, spec: Any):
        super().__init__()
        root = Path(tracking.directory)
        group = tracking.group or spec.name
        label = run_label(spec)
        config = {**spec.to_dict(), "run_id": spec.run_id}
        self.where: dict[str, str] = {}
        self.backends: list[Any] = []
        for kind in tracking.kinds:
            if kind == "tensorboard":
                backend: Any = _TensorBoard(root / "tensorboard" / group / label, config)
            elif kind == "wandb":
                backend = _WandB(tracking, root, group, label, config)
            else:
                backend = _Csv(root / "csv" / group / label, config)
            self.backends.append(backend)
        self.epochs = 0
        self.trained = 0
        self._loss: Any = None
        self._batches = 0
        self._tick = 0.0

    def _log(self, values: Mapping[str, float], axis: str, step: int) -> None:
        for backend in self.backends:
            backend.log(values, axis, step)

    def before_training_exp(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        self._tick = time.perf_counter()

    def after_training_iteration(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        loss = strategy.loss.detach().float()
        self._loss = loss if self._loss is None else self._loss + loss
        self._batches += 1

    def after_training_epoch(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        self.epochs += 1
        if self._batches:
            self._log({"train/loss": float(self._loss) / self._batches}, "epoch", self.epochs)
        self._loss, self._batches = None, 0

    def after_training_exp(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        self.trained += 1
        self._log({"time/train_s": time.perf_counter() - self._tick}, "experience", self.trained)

    def before_eval(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        self._tick = time.perf_counter()

    def after_eval(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        seconds = time.perf_counter() - self._tick
        row: dict[int, float] = {}
        for key, value in strategy.evaluator.get_last_metrics().items():
            match = _EXP_ACC.match(key)
            if match:
                row[int(match.group(1))] = float(value)
        values = {f"acc/exp_{j}": row[j] for j in sorted(row)}
        seen = [row[j] for j in sorted(row)[: self.trained]]
        if seen:
            values["acc/seen"] = sum(seen) / len(seen)
        if row:
            values["acc/all"] = sum(row.values()) / len(row)
        self._log({**values, "time/eval_s": seconds}, "experience", self.trained)

    def finish(self, result: Mapping[str, Any]) -> None:
        """Log the run's final figures and close every tracker (called once, whatever the status)."""
        summary = result.get("metrics") or {}
        final = {f"final/{key}": float(summary[key]) for key in _FINAL_KEYS if summary.get(key) is not None}
        final["final/wall_time_s"] = float(result.get("wall_time_s") or 0.0)
        if result.get("peak_memory_mb") is not None:
            final["final/peak_memory_mb"] = float(result["peak_memory_mb"])
        final["final/completed"] = 1.0 if result.get("status") == "completed" else 0.0
        for backend in self.backends:
            backend.finish(result, final, self.trained)
