"""Experience Replay (Chaudhry et al., 2019 "On Tiny Episodic Memories"), via Avalanche's ReplayPlugin.

Each minibatch of the current experience is concatenated with a minibatch drawn from an
experience-balanced buffer of `mem_size` past samples (Avalanche's default storage policy), and one
SGD step is taken on the mean loss of the joint batch. The memory minibatch has `mem_batch` samples,
or as many as the current minibatch when `mem_batch` is 0 (the default: the effective batch is then
twice the nominal one; account for it when comparing time or learning rates). Mammoth's ER
(Buzzega et al. 2020) replays a separate `minibatch_size`, e.g. 128 memory samples beside 10 new ones
on Seq-FMNIST; `mem_batch` is Avalanche's `batch_size_mem`.

The plugins, `DeviceReplay` (fast data path) and `BufferedReplay` (stock path), are in `plugins.py`;
this module only registers the strategy, so listing strategies needs no torch.
"""

from __future__ import annotations

from nlbench.core.registry import HParam, Parts, register_strategy


@register_strategy(
    "replay",
    description="experience replay with a rehearsal buffer (Avalanche ReplayPlugin)",
    hparams=(
        HParam("mem_size", 200, "int", "buffer size in samples", low=1, high=10_000_000),
        HParam("mem_batch", 0, "int", "memory samples per training minibatch (0: as many as the current minibatch)",
               low=0, high=1_000_000),
    ),
)
def build(ctx, hp):
    from .plugins import BufferedReplay, DeviceReplay

    # A spec stores mem_batch only when it is set (nlbench.core.spec), so runs made before it existed keep their ids.
    mem_batch = int(hp.get("mem_batch", 0))
    if ctx.fast_path:
        return Parts(plugins=[DeviceReplay(hp["mem_size"], mem_batch)])
    return Parts(plugins=[BufferedReplay(mem_size=hp["mem_size"], batch_size_mem=mem_batch or None)])
