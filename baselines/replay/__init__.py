"""Experience Replay (Chaudhry et al., 2019 "On Tiny Episodic Memories"), via Avalanche's ReplayPlugin.

Each minibatch of the current experience is concatenated with a minibatch of the same size drawn from
an experience-balanced buffer of `mem_size` past samples (Avalanche's default storage policy; the effective batch is twice the nominal one:
account for it when comparing time or learning rates).

The plugins, `DeviceReplay` (fast data path) and `BufferedReplay` (stock path), are in `plugins.py`;
this module only registers the strategy, so listing strategies needs no torch.
"""

from __future__ import annotations

from nlbench.core.registry import HParam, Parts, register_strategy


@register_strategy(
    "replay",
    description="experience replay with a rehearsal buffer (Avalanche ReplayPlugin)",
    hparams=(HParam("mem_size", 200, "int", "buffer size in samples", low=1, high=10_000_000),),
)
def build(ctx, hp):
    from .plugins import BufferedReplay, DeviceReplay

    return Parts(plugins=[DeviceReplay(hp["mem_size"]) if ctx.fast_path else BufferedReplay(mem_size=hp["mem_size"])])
