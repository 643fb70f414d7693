"""Registration of `nl-memory`: the multi-timescale gradient-memory optimizer (port of seed S001,
Kareem Farid's Keras ``NestedLearningOptimizer``; nlbench math spec ``/work/shared/design/nl-math.md``
Section 6). Not an algorithm of the Nested Learning paper, despite the vocabulary.

Registration only: importing this package needs neither torch nor numpy nor Avalanche; the builder
imports the optimizer module when a run is built. The package, read top-down:

* ``schedule``: depth -> update interval, the due test, the lr sawtooth (pure functions).
* ``memory``: the three memories, their blend, and one parameter's update (pure functions).
* ``checks``: argument checks of a parameter group.
* ``optimizer``: ``MultiTimescaleMemoryOpt`` (intervals per parameter, state, global step).
"""

from __future__ import annotations

from nlbench.core.registry import HParam, Parts, register_strategy, trainable


@register_strategy(
    "nl-memory",
    description="multi-timescale memory optimizer: 3-tier gradient memory, depth-clocked updates (S001, NL §6)",
    family="nested-learning",
    provides_optimizer=True,
    hparams=(
        HParam("lr", 1e-3, "float", "learning rate", low=0.0, high=10.0),
        HParam("max_interval", 6, "int", "largest depth-based update interval M", low=1, high=100_000),
        HParam("schedule_curve", "cosine", "str", "interval curve over depth", choices=("linear", "exponential", "cosine")),
        HParam("blend_mode", "attention", "str", "how the three memories are blended", choices=("fixed", "adaptive", "attention")),
        HParam("warmup_steps", 0, "int", "steps during which every variable updates", low=0, high=10_000_000),
        HParam("kf_compat", True, "bool", "reproduce the seed optimizer's quirks (see nl-math.md §6.3)"),
    ),
)
def build(ctx, hp):
    from .optimizer import MultiTimescaleMemoryOpt

    def factory(model, params=None):
        return MultiTimescaleMemoryOpt(
            trainable(model, params), lr=hp["lr"], model=model, kf_compat=hp["kf_compat"],
            blend_mode=hp["blend_mode"], max_interval=hp["max_interval"], schedule_curve=hp["schedule_curve"],
            warmup_steps=hp["warmup_steps"],
        )

    return Parts(optimizer=factory)
