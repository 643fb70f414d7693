"""Checkpoints inside a run: a run killed after experience k resumes after k, not from zero.

After every training experience but the last (a run with one experience left costs nothing), the
runner saves `<run_dir>/checkpoint/state.pt`, atomically (nlbench.io). It holds:
- the model's and the optimizer's state dicts (a multi-clock optimizer's clocks, accumulators and base
  optimizers' states are in its own `state_dict`);
- the learner's memory outside them: each plugin's `state_dict()` (replay and A-GEM buffers, SI's
  importances), small adapters for Avalanche's own plugins (EWC's Fisher and anchors, LwF's previous
  model, the strategy clock that EWC keys its penalties on) and templates (DER++'s device buffer with
  its logits; Cumulative's dataset, which is rebuilt from the stream rather than stored);
- the rows of the accuracy matrix so far, the pre-training row, the timings and the start time;
- every RNG state (Python, NumPy, torch CPU and CUDA), so the resumed run draws what the uninterrupted
  one would have drawn: on CPU a killed and resumed run gives a bitwise-identical accuracy matrix.

A checkpoint records the spec's run_id and the versions and commit that wrote it; one that does not
match this run and this build is ignored with a warning (the run starts from zero). A strategy with
state this module cannot capture (a plugin without `state_dict`, Avalanche's dataset-backed stock
rehearsal buffers) is not checkpointed: it runs atomically as before, with one warning. The file is
read with `torch.load(weights_only=True)`: no pickled code runs on resume. The callers remove the
folder once the run is stored (`discard`).
"""

from __future__ import annotations

import copy
import io
import random
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from nlbench.io import atomic_write_bytes

FORMAT = 1
FOLDER = "checkpoint"
FILE = "state.pt"

# Plugins that hold nothing across experiences (by qualified class name: core imports no strategy).
STATELESS = {
    "avalanche.training.plugins.evaluation.EvaluationPlugin",
    "avalanche.training.templates.base_sgd.PeriodicEval",  # eval_every=-1: never evaluates during training
    "nlbench.core.runner.DivergenceCheck",  # its flag is read (and raised on) at every epoch's end
    "nlbench.strategies.cms.clocks.ClockFlush",
    "nlbench.data.bigram.FlattenSequenceOutputs",
}
PLAIN_TEMPLATES = {"avalanche.training.templates.common_templates.SupervisedTemplate"}
# Plugins that are not part of the run at all: experiment trackers (`--log`) may be on when a run is
# killed and off when it resumes, or the other way round.
NOT_OF_THE_RUN = {"nlbench.core.trackers.RunTracker"}


def _run_plugins(strategy: Any) -> list:
    return [plugin for plugin in strategy.plugins if _qualname(plugin) not in NOT_OF_THE_RUN]


def _qualname(obj_or_type: Any) -> str:
    kind = obj_or_type if isinstance(obj_or_type, type) else type(obj_or_type)
    return f"{kind.__module__}.{kind.__qualname__}"


def checkpoint_dir(run_directory: Path) -> Path:
    """Where the checkpoints of the run stored in `run_directory` live."""
    return Path(run_directory) / FOLDER


def discard(run_directory: Path) -> None:
    """Remove the run's checkpoints (called once the run is stored)."""
    shutil.rmtree(checkpoint_dir(run_directory), ignore_errors=True)


# ------------------------------------------------------------------------------------------------
# Adapters for Avalanche's plugins and templates: (save(obj) -> dict, load(obj, state, strategy))


def _save_clock(clock: Any) -> dict:
    return dict(vars(clock))


def _load_clock(clock: Any, state: dict, strategy: Any) -> None:
    vars(clock).update(state)


def _save_ewc(plugin: Any) -> dict:
    """EWC's anchors theta*_k and diagonal Fishers F_k, per experience k, as plain tensors."""
    def plain(table: Any) -> dict:
        return {k: {name: data.data for name, data in params.items()} for k, params in table.items()}

    return {"saved_params": plain(plugin.saved_params), "importances": plain(plugin.importances)}


def _load_ewc(plugin: Any, state: dict, strategy: Any) -> None:
    from avalanche.training.utils import ParamData

    for key in ("saved_params", "importances"):
        table = getattr(plugin, key)
        table.clear()
        for k, params in state[key].items():
            table[k] = {name: ParamData(name, init_tensor=t, device=t.device) for name, t in params.items()}


def _save_lwf(plugin: Any) -> dict:
    """LwF's previous model f_{t-1} (its weights; its structure is the current model's) and the
    classes seen per task."""
    lwf = plugin.lwf
    previous = lwf.prev_model
    return {
        "expcount": lwf.expcount,
        "prev_classes_by_task": {task: sorted(classes) for task, classes in lwf.prev_classes_by_task.items()},
        "prev_model": None if previous is None else previous.state_dict(),
        "prev_training": None if previous is None else previous.training,
    }


def _load_lwf(plugin: Any, state: dict, strategy: Any) -> None:
    lwf = plugin.lwf
    lwf.expcount = state["expcount"]
    lwf.prev_classes_by_task.clear()
    lwf.prev_classes_by_task.update({task: set(classes) for task, classes in state["prev_classes_by_task"].items()})
    lwf.prev_model = None
    if state["prev_model"] is not None:
        previous = copy.deepcopy(strategy.model)  # LwF's copy is taken at the experience's end: same structure
        previous.load_state_dict(state["prev_model"])
        lwf.prev_model = previous.train(state["prev_training"])


PLUGIN_ADAPTERS = {
    "avalanche.training.plugins.clock.Clock": (_save_clock, _load_clock),
    "avalanche.training.plugins.ewc.EWCPlugin": (_save_ewc, _load_ewc),
    "avalanche.training.plugins.lwf.LwFPlugin": (_save_lwf, _load_lwf),
}


def _save_device_der(strategy: Any) -> dict:
    return strategy.device_buffer.state_dict()


def _load_device_der(strategy: Any, state: dict, done: list) -> None:
    strategy.device_buffer.load_state_dict(state)


def _save_cumulative(strategy: Any) -> dict:
    return {}  # the concatenation of the experiences trained so far: rebuilt from the stream


def _load_cumulative(strategy: Any, state: dict, done: list) -> None:
    for experience in done:  # Cumulative's own concatenation, in the same order
        strategy.experience = experience
        strategy.train_dataset_adaptation()
    strategy.adapted_dataset = None


TEMPLATE_ADAPTERS = {
    "nlbench.baselines.der.strategy.DeviceDER": (_save_device_der, _load_device_der),
    "avalanche.training.supervised.cumulative.Cumulative": (_save_cumulative, _load_cumulative),
}


def _template(strategy: Any) -> type:
    """The Avalanche template the runner put nlbench's mixins in front of (the last base)."""
    return type(strategy).__bases__[-1]


def blockers(strategy: Any) -> list[str]:
    """What in `strategy` holds state this module cannot save (empty: it can be checkpointed)."""
    found = []
    template = _qualname(_template(strategy))
    if template not in PLAIN_TEMPLATES and template not in TEMPLATE_ADAPTERS:
        found.append(f"template {template}")
    for plugin in _run_plugins(strategy):
        name = _qualname(plugin)
        if name in STATELESS or name in PLUGIN_ADAPTERS:
            continue
        if not (callable(getattr(plugin, "state_dict", None)) and callable(getattr(plugin, "load_state_dict", None))):
            found.append(f"plugin {name}")
    return found


def state_sources(strategy: Any, exclude: tuple = ()) -> Iterator[tuple[Any, Any]]:
    """(owner, its state as a checkpoint saves it) for the template and every plugin of the run that
    holds state, the plugins in `exclude` left out; the state is None for a plugin this module cannot
    save (`blockers`). `nlbench.core.state_bytes` counts the bytes of the same state."""
    template = _qualname(_template(strategy))
    if template in TEMPLATE_ADAPTERS:
        yield strategy, TEMPLATE_ADAPTERS[template][0](strategy)
    for plugin in _run_plugins(strategy):
        name = _qualname(plugin)
        if name in STATELESS or any(plugin is skipped for skipped in exclude):
            continue
        if name in PLUGIN_ADAPTERS:
            yield plugin, PLUGIN_ADAPTERS[name][0](plugin)
        elif callable(getattr(plugin, "state_dict", None)):
            yield plugin, plugin.state_dict()
        else:
            yield plugin, None


# ------------------------------------------------------------------------------------------------
# RNG states


def rng_state() -> dict[str, Any]:
    numpy_state = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),
        "numpy": {**numpy_state, "state": {"key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
                                           "pos": numpy_state["state"]["pos"]}},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    numpy_state = dict(state["numpy"])
    numpy_state["state"] = {"key": state["numpy"]["state"]["key"].cpu().numpy().astype(np.uint32),
                            "pos": state["numpy"]["state"]["pos"]}
    np.random.set_state(numpy_state)
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


# ------------------------------------------------------------------------------------------------
# The run's checkpoints


@dataclass
class Progress:
    """What a run has recorded so far: the matrix rows, the pre-training row, the timings."""

    matrix: list = field(default_factory=list)
    initial: list = field(default_factory=list)
    train_times: list = field(default_factory=list)
    eval_times: list = field(default_factory=list)
    wall_time_s: float = 0.0
    started_at: str = ""
    resumed_after: list = field(default_factory=list)


def _grow(strategy: Any, done: list, test_stream: Any) -> None:
    """Replay the run's model adaptations in its order, so the model and the optimizer have the
    structure the saved states were taken from: Avalanche's dynamic modules (one head per task) add
    units when evaluated on an experience as well as when trained on it, and `make_optimizer` gives
    the parameters new at each training experience their own group. Weights drawn here are overwritten."""
    def evaluated() -> None:
        strategy.model.eval()
        for experience in test_stream:
            strategy.experience = experience
            strategy.model = strategy.model_adaptation()

    evaluated()  # the pre-training row
    for experience in done:
        strategy.experience = experience
        strategy.model.train()
        strategy.model = strategy.model_adaptation()
        strategy.make_optimizer()
        evaluated()
    strategy.experience = None


class Checkpoints:
    """The checkpoints of one run in `directory` (see the module docstring)."""

    def __init__(self, directory: Path, spec: Any, environment: dict[str, Any]):
        self.directory = Path(directory)
        self.path = self.directory / FILE
        self.spec = spec
        self.build = {"versions": environment.get("versions"), "git_commit": environment.get("git_commit")}
        self.enabled = True
        self.save_times: list[float] = []  # seconds per checkpoint written by this process

    def _disable_for(self, strategy: Any) -> bool:
        found = blockers(strategy)
        if found and self.enabled:
            self.enabled = False
            warnings.warn(f"run {self.spec.run_id} ({self.spec.strategy}) is not checkpointed: nlbench cannot "
                          f"save the state of its {', '.join(found)}; a killed run starts again from zero",
                          stacklevel=3)
        return not self.enabled

    def save(self, strategy: Any, progress: Progress) -> None:
        """Write the state after the last finished experience (the runner skips the final one)."""
        if self._disable_for(strategy):
            return
        tick = time.perf_counter()
        state = {
            "format": FORMAT,
            "run_id": self.spec.run_id,
            "build": self.build,
            "experiences_done": len(progress.matrix),
            "progress": dict(vars(progress)),
            "model": strategy.model.state_dict(),
            "optimizer": strategy.optimizer.state_dict(),
            "template": TEMPLATE_ADAPTERS.get(_qualname(_template(strategy)), (lambda s: {}, None))[0](strategy),
            "plugins": [self._plugin_state(plugin) for plugin in _run_plugins(strategy)],
            "rng": rng_state(),
        }
        buffer = io.BytesIO()
        torch.save(state, buffer)
        try:
            atomic_write_bytes(self.path, buffer.getvalue())
        except OSError as err:  # a full disk costs the checkpoints, never the run
            self.enabled = False
            warnings.warn(f"cannot write the checkpoint {self.path} ({err.strerror or err}); the run goes on "
                          "without checkpoints", stacklevel=2)
            return
        self.save_times.append(time.perf_counter() - tick)

    @staticmethod
    def _plugin_state(plugin: Any) -> dict:
        name = _qualname(plugin)
        if name in STATELESS:
            return {"class": name, "state": None}
        if name in PLUGIN_ADAPTERS:
            return {"class": name, "state": PLUGIN_ADAPTERS[name][0](plugin)}
        return {"class": name, "state": plugin.state_dict()}

    def _read(self, strategy: Any) -> dict | None:
        """The stored checkpoint if it belongs to this run and this build, else None (warned)."""
        for stale in self.directory.glob(".*.tmp"):  # a write killed half-way: this process owns the run
            stale.unlink(missing_ok=True)
        if not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location=strategy.device, weights_only=True)
        except Exception as err:  # truncated or foreign: the run starts again, it does not fail
            return self._ignore(f"it cannot be read ({type(err).__name__}: {err})")
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            return self._ignore(f"it is not an nlbench checkpoint of format {FORMAT}")
        if state.get("run_id") != self.spec.run_id:
            return self._ignore(f"it belongs to run {state.get('run_id')!r}, not {self.spec.run_id!r}")
        if state.get("build") != self.build:
            return self._ignore("another build of nlbench or its dependencies wrote it "
                                f"({state.get('build')} != {self.build})")
        classes = [_qualname(plugin) for plugin in _run_plugins(strategy)]
        if [entry["class"] for entry in state["plugins"]] != classes:
            return self._ignore("its plugins differ from this run's")
        return state

    def _ignore(self, why: str) -> None:
        warnings.warn(f"ignoring the checkpoint {self.path}: {why}; the run starts from zero", stacklevel=4)
        return None

    def resume(self, strategy: Any, benchmark: Any) -> Progress | None:
        """Restore `strategy` (freshly built) to the last checkpoint; None when there is none to use.

        The model's structure is first grown as the run grew it (`_grow`), then every state is loaded,
        the RNGs last.
        """
        if self._disable_for(strategy):
            return None
        state = self._read(strategy)
        if state is None:
            return None
        done = [benchmark.train_stream[k] for k in range(state["experiences_done"])]
        _grow(strategy, done, benchmark.test_stream)
        strategy.model.load_state_dict(state["model"])
        strategy.optimizer.load_state_dict(state["optimizer"])
        adapter = TEMPLATE_ADAPTERS.get(_qualname(_template(strategy)))
        if adapter is not None:
            adapter[1](strategy, state["template"], done)
        for plugin, entry in zip(_run_plugins(strategy), state["plugins"]):
            if entry["class"] in PLUGIN_ADAPTERS:
                PLUGIN_ADAPTERS[entry["class"]][1](plugin, entry["state"], strategy)
            elif entry["class"] not in STATELESS:
                plugin.load_state_dict(entry["state"])
        set_rng_state(state["rng"])
        progress = Progress(**state["progress"])
        progress.resumed_after.append(state["experiences_done"])
        return progress
