"""Continual evaluation (`--eval-every N`): accuracy on every seen experience during training, as a curve.

Source: M. De Lange, G. van de Ven, T. Tuytelaars, "Continual Evaluation for Lifelong Learning:
Identifying the Stability Gap", ICLR 2023. End-of-experience evaluation hides the sharp drop on old
experiences right after a new one starts; evaluating every N iterations shows it. Slow clock levels
apply their updates in bursts, which is exactly where such drops would come from.

Protocol of `ContinualEval`: at the start of training experience k (before its first step), every N
training iterations (counted over the whole stream, never reset), and at the end of experience k,
evaluate test experiences 0..k on a fixed subsample (the first `EVAL_SUBSAMPLE` samples of a seeded
permutation of each test experience, the same for every run). Evaluation is a plain no-grad forward in
eval mode through Avalanche's `avalanche_forward` (task labels for task-incremental heads); it draws no
random numbers and touches no optimizer or plugin state, so the run's own numbers do not change.

result.json gets `continual_eval` = {every, subsample, iteration: [n], experience: [k], accuracy: [[a_j for
j <= k]], boundaries: [b_k], ends: [e_k], summary: `nlbench.core.stability.summarize_curve`}.

`nlbench.core.subsample.ProbeSet` (the fixed subsamples and their accuracy) is shared with the clock
probes (`nlbench.core.probes`). `observer_plugins(spec, benchmark)` gives the plugins a spec asks for, and none
(no import, no cost) when neither `eval_every` nor `probes` is set.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

from avalanche.core import SupervisedPlugin

from nlbench.core.subsample import EVAL_SUBSAMPLE, ProbeSet

class ContinualEval(SupervisedPlugin):
    """Evaluates every seen experience every `every` training iterations (module docstring)."""

    def __init__(self, test_stream: Any, every: int, size: int = EVAL_SUBSAMPLE):
        super().__init__()
        self.probe = ProbeSet(test_stream, size)
        self.every = every
        self.iteration = 0
        self.curve: dict[str, list] = {"iteration": [], "experience": [], "accuracy": [], "boundaries": [], "ends": []}

    def _record(self, strategy: Any) -> None:
        k = strategy.experience.current_experience
        self.curve["iteration"].append(self.iteration)
        self.curve["experience"].append(k)
        self.curve["accuracy"].append([self.probe.accuracy(strategy, j) for j in range(min(k + 1, len(self.probe.test_stream)))])

    def before_training_exp(self, strategy: Any, **kwargs: Any) -> None:
        self.curve["boundaries"].append(self.iteration)
        self._record(strategy)

    def after_training_iteration(self, strategy: Any, **kwargs: Any) -> None:
        self.iteration += 1
        if self.iteration % self.every == 0:
            self._record(strategy)

    def after_training_exp(self, strategy: Any, **kwargs: Any) -> None:
        self.curve["ends"].append(self.iteration)
        if self.curve["iteration"][-1] != self.iteration or self.curve["experience"][-1] != strategy.experience.current_experience:
            self._record(strategy)
        else:  # the last periodic point was this iteration; re-read it after end-of-experience plugins (flushes)
            self.curve["accuracy"].pop()
            self.curve["iteration"].pop()
            self.curve["experience"].pop()
            self._record(strategy)

    # Checkpoints (nlbench.core.checkpoint): the iteration count and the curve so far.
    def state_dict(self) -> dict[str, Any]:
        return {"iteration": self.iteration, "curve": self.curve}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.iteration = int(state["iteration"])
        self.curve = {key: list(values) for key, values in state["curve"].items()}

    def result_fields(self) -> dict[str, Any]:
        from nlbench.core.stability import summarize_curve

        summary = summarize_curve(self.curve) if self.curve["ends"] else {}
        return {"continual_eval": {"every": self.every, "subsample": self.probe.size, **self.curve, "summary": summary}}


def training_iterations(spec: Any, benchmark: Any) -> int:
    """Training iterations of the whole stream: per experience, epochs x minibatches (the last one partial)."""
    return sum(spec.epochs * math.ceil(len(experience.dataset) / spec.batch_size) for experience in benchmark.train_stream)


def observer_plugins(spec: Any, benchmark: Any) -> list:
    """The measurement plugins `spec` asks for: ContinualEval (`eval_every`), ClockProbes (`probes`).

    An `eval_every` beyond the stream's training iterations never fires between an experience's start and
    end: said once, in a warning (the run goes on, and stays checkpointed: both plugins save their state)."""
    plugins: list = []
    if getattr(spec, "eval_every", 0):
        total = training_iterations(spec, benchmark)
        if spec.eval_every > total:
            warnings.warn(f"--eval-every {spec.eval_every} is more than the {total} training iterations of the whole "
                          "stream: the curve holds only each experience's start and end", stacklevel=2)
        plugins.append(ContinualEval(benchmark.test_stream, spec.eval_every))
    if getattr(spec, "probes", False):
        from nlbench.core.probes import ClockProbes

        plugins.append(ClockProbes(benchmark.test_stream))
    return plugins
