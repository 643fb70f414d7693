"""The cost of a training step, measured in isolation: every strategy in one process, interleaved.

Protocol (`measure_costs`):
1. Each strategy is built by the runner's own machinery (`build_strategy`: the same model, plugins,
   optimizer and template as its run, seeded like a run) and trained on experience 0 as its run would
   be, so that the state a step touches exists: clocks and accumulators, rehearsal buffers, stored
   logits, EWC's Fishers, LwF's previous model, task heads. A rehearsal method's measured steps then
   include its replay.
2. Then `repeats` rounds; in each, every strategy, in an order drawn from a seeded RNG afresh each
   round, trains `warmup + steps` iterations on the round's experience (1, 2, ..., cycling; experience
   0 when the stream has one). The first `warmup` iterations of a turn are not recorded (the caches
   after switching strategies are cold).
3. A training iteration is timed from the end of the previous iteration (or the start of the epoch)
   to its own end, as `StepTimer` stamps them: drawing the minibatch (and the memory minibatch of a
   replay method), forward, loss, backward, the optimizer step and every plugin's per-iteration hooks.
   Per-experience and per-epoch work is excluded: building the experience's dataset and loader,
   updating a buffer, computing EWC's Fisher or LwF's copy, the divergence check at the epoch's end.
   On a CPU the clock is the thread's CPU time (`time.thread_time`): with torch on one thread the
   whole step runs on it, and time the OS gives other processes is not counted (contention for caches
   and memory bandwidth still slows it: an idle machine gives the cleanest figures). On a GPU it is
   wall time between `torch.cuda.synchronize()` calls.
4. A turn's figure is the median of its recorded iterations; ratios are formed per round, against the
   reference strategy's figure in the same round (`nlbench.core.cost.summarise_ratio`).

Memory: the method's state bytes (`nlbench.core.state_bytes`) at the end of every iteration of a turn
(warm-up included), the largest total kept (a clocked level's accumulator exists only while its
window is open). On a GPU, `cuda_peak_bytes` is the allocator's peak during a turn above what was
allocated when the turn began (every strategy's state and the data were resident then): the step's
working memory (activations, temporaries, a loader's joined memory), the largest over rounds. The
process's peak RSS is recorded as a raw figure: one process holds every strategy, so it is nobody's
memory.
"""

from __future__ import annotations

import random
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from avalanche.core import SupervisedPlugin

from nlbench.core.runner import Diverged, build_strategy, seed_everything
from nlbench.core.state_bytes import state_bytes

Events = Callable[[str, dict], None]


class StepTimer(SupervisedPlugin):
    """Per-iteration time of the next `arm(n)` iterations, then `stop_training()` (see module docstring).

    The state count runs after an iteration's stamp and before the next interval starts, so it is
    never part of a step."""

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.cuda = device.type == "cuda"
        self.left = 0  # iterations still to record in this turn (0: not armed)
        self.times: list[float] = []  # the measuring clock (thread CPU time, or GPU wall time)
        self.walls: list[float] = []  # wall time, recorded beside it
        self.peak_state: dict[str, int] | None = None
        self._start: tuple[float, float] = (0.0, 0.0)

    def arm(self, iterations: int) -> None:
        self.left, self.times, self.walls = iterations, [], []

    def _now(self) -> tuple[float, float]:
        if self.cuda:
            torch.cuda.synchronize()
            wall = time.perf_counter()
            return wall, wall
        return time.thread_time(), time.perf_counter()

    def before_training_epoch(self, strategy: Any, **kwargs: Any) -> None:
        if self.left:
            self._start = self._now()

    def after_training_iteration(self, strategy: Any, **kwargs: Any) -> None:
        if not self.left:
            return
        end = self._now()
        self.times.append(end[0] - self._start[0])
        self.walls.append(end[1] - self._start[1])
        self.left -= 1
        if not self.left:
            strategy.stop_training()
        counts = state_bytes(strategy, exclude=(self,))
        if self.peak_state is None or counts["total"] > self.peak_state["total"]:
            self.peak_state = counts
        self._start = self._now()


@dataclass
class Measurement:
    """One strategy's raw figures: per round, the median recorded iteration (measuring clock and wall)."""

    spec: Any  # RunSpec
    step_time_s: list[float] = field(default_factory=list)
    step_wall_s: list[float] = field(default_factory=list)
    state_bytes: dict[str, int] = field(default_factory=dict)
    cuda_peak_bytes: int | None = None
    diverged: bool = False


def train_turn(strategy: Any, timer: StepTimer, experience: Any, iterations: int, cuda: bool) -> tuple[bool, int | None]:
    """Train `iterations` recorded iterations on `experience`; (diverged, the turn's CUDA working peak)."""
    timer.arm(iterations)
    strategy.train_epochs = iterations  # an upper bound (an epoch has at least one iteration): the timer stops it
    strategy._stop_training = False
    base = None
    if cuda:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    diverged = False
    try:
        strategy.train(experience)
    except Diverged:  # a NaN loss costs what a finite one does; its turn is measured all the same
        diverged = True
    timer.left = 0
    peak = None
    if cuda:
        torch.cuda.synchronize()
        peak = int(torch.cuda.max_memory_allocated() - base)
    return diverged, peak


def measure_costs(specs: Sequence[Any], benchmark: Any, device: torch.device, *, steps: int, repeats: int,
                  warmup: int, seed: int, events: Events | None = None) -> list[Measurement]:
    """Measure every spec's step time and state bytes (module docstring); one Measurement per spec."""
    notify = events or (lambda kind, info: None)
    stream = benchmark.train_stream
    cuda = device.type == "cuda"
    learners = []
    for spec in specs:
        notify("preparing", {"strategy": spec.strategy})
        seed_everything(spec.seed)
        strategy, _ = build_strategy(spec, benchmark, device)
        timer = StepTimer(device)
        strategy.plugins.append(timer)
        try:
            strategy.train(stream[0])
        except Diverged:
            pass
        learners.append((strategy, timer, Measurement(spec)))
    order = random.Random(seed)
    for round_ in range(repeats):
        experience = stream[1 + round_ % (len(stream) - 1)] if len(stream) > 1 else stream[0]
        turns = order.sample(range(len(learners)), len(learners))
        notify("round", {"round": round_ + 1, "rounds": repeats, "order": [specs[i].strategy for i in turns]})
        for index in turns:
            strategy, timer, measured = learners[index]
            diverged, peak = train_turn(strategy, timer, experience, warmup + steps, cuda)
            recorded, walls = timer.times[warmup:], timer.walls[warmup:]
            if not recorded:
                raise RuntimeError(f"{measured.spec.strategy}: no training iteration was recorded in round {round_ + 1}")
            measured.step_time_s.append(statistics.median(recorded))
            measured.step_wall_s.append(statistics.median(walls))
            measured.diverged |= diverged
            if peak is not None:
                measured.cuda_peak_bytes = max(peak, measured.cuda_peak_bytes or 0)
    for strategy, timer, measured in learners:
        measured.state_bytes = dict(timer.peak_state or state_bytes(strategy, exclude=(timer,)))
    return [measured for _, _, measured in learners]


def process_peak_rss_mb() -> float | None:
    """The process's peak resident set (VmHWM) in MB; None where /proc is not there."""
    try:
        found = re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text())
    except OSError:
        return None
    return int(found.group(1)) / 1024 if found else None
