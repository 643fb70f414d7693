"""Dark Experience Replay++ (Buzzega et al., NeurIPS 2020), Avalanche's DER strategy.

Class- and domain-incremental only: Avalanche 0.6 computes the buffer's logits with `model(x)`, without
task labels, so a task-masked or multi-head model cannot be replayed faithfully.

Loss: CE(current) + alpha * ||f(x_m) - z_m||^2 on buffered samples with their stored logits z_m
+ beta * CE(y_m, f(x_m)) on the same buffer minibatch (beta = 0 gives plain DER). Class-balanced
reservoir buffer; logits are stored after training on the experience, from unaugmented inputs.

On the fast data path the buffer is `DeviceLogitBuffer` (device tensors, logits computed only for the
samples kept, `buffer.py`) and `DeviceDER` draws memory minibatches from it without a DataLoader
(`strategy.py`); on the stock path Avalanche's DER runs unchanged. This module only registers the
strategy, so listing strategies needs no torch.
"""

from __future__ import annotations

from nlbench.core.registry import HParam, Parts, register_strategy


@register_strategy(
    "der",
    description="DER++: replay of logits and labels (Avalanche DER)",
    hparams=(
        HParam("mem_size", 200, "int", "buffer size in samples", low=1, high=10_000_000),
        HParam("der_alpha", 0.1, "float", "weight of the logit-matching term", low=0.0, high=1e6),
        HParam("der_beta", 0.5, "float", "weight of the buffered-label CE term (0 = DER)", low=0.0, high=1e6),
    ),
    scenarios=("class", "domain"),
)
def build(ctx, hp):
    from avalanche.training import DER

    from .strategy import DeviceDER

    return Parts(template=DeviceDER if ctx.fast_path else DER,
                 template_kwargs={"mem_size": hp["mem_size"], "alpha": hp["der_alpha"], "beta": hp["der_beta"]})
