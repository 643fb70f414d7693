"""Experience Replay (Chaudhry et al., 2019 "On Tiny Episodic Memories"), via Avalanche's ReplayPlugin.

Each minibatch of the current experience is concatenated with a minibatch of the same size drawn from
a class-balanced buffer of `mem_size` past samples (so the effective batch is twice the nominal one:
account for it when comparing time or learning rates).
"""

from __future__ import annotations

from avalanche.training.plugins import ReplayPlugin

from nlbench.registry import HParam, Parts, register_strategy


class BufferedReplay(ReplayPlugin):
    """Avalanche's ReplayPlugin, updating its buffer through `post_adapt`, which is exactly what the
    deprecated `storage_policy.update` does in 0.6; that wrapper re-arms a DeprecationWarning filter
    on every call and prints the warning once per experience."""

    def after_training_exp(self, strategy, **kwargs):
        self.storage_policy.post_adapt(strategy, strategy.experience)


@register_strategy(
    "replay",
    description="experience replay with a rehearsal buffer (Avalanche ReplayPlugin)",
    hparams=(HParam("mem_size", 200, "int", "buffer size in samples", low=1, high=10_000_000),),
)
def build(ctx, hp):
    return Parts(plugins=[BufferedReplay(mem_size=hp["mem_size"])])
