"""A parameter-matched control for `cms`: the suite's plain MLP, widened until it has as many parameters
as the CMS network that `cms` would build in its place, trained with the shared default optimizer (Adam).

Why: on permuted-fmnist the CMS network of `cms` (stem, `levels` residual blocks of the MLP's width, final
LayerNorm, head: nlbench.models.cms, nl-math.md 4.2) has 1,283,610 parameters against the plain 2x400
MLP's 478,410. "cms beats adam" then mixes two causes, the bigger network and the clocks. `cms` against
`adam-matched` (same size, no clocks, no residual blocks) isolates the network's share of size; `cms`
against `cms-sync` isolates the clocks' share.

The matched network keeps everything of the suite's MLP (depth, ReLU, dropout, init, input scaling) and
changes only the hidden width: one width w for every hidden layer, the one whose parameter count is
closest to the CMS network's. Counted is the network as it stands at the end of the stream: with one head
per task (`--head multi`), the shared body plus one head per experience for both networks; otherwise the
whole network. The update rule is plain Adam on the current experience's loss, as for `adam`.
"""

from __future__ import annotations

from nlbench.core.registry import HParam, Parts, register_strategy

# The backbones built as nlbench.models.MLP (nlbench.core.backbones), the only ones `cms` turns into a CMSMLP.
MLP_BACKBONES = ("mlp", "mlp-2x256")
# cms's default clock periods (1, 8, 64) give it 3 levels; tests/test_adam_matched.py keeps the two in step.
DEFAULT_LEVELS = 3


def network_size(backbone, heads: int = 1) -> int:
    """Parameters of `backbone` with `heads` copies of its `classifier` (one per task under a multi-head)."""
    head = sum(p.numel() for p in backbone.classifier.parameters())
    return sum(p.numel() for p in backbone.parameters()) + (heads - 1) * head


def cms_size(config, levels: int, heads: int = 1) -> int:
    """Parameters of the CMS network `cms` builds for an MLP of `config` (built on the meta device: no memory)."""
    import torch

    from nlbench.models.cms import CMSMLP, cms_mlp_config

    with torch.device("meta"):
        return network_size(CMSMLP(cms_mlp_config(config, levels)), heads)


def matched_config(config, target: int, heads: int = 1):
    """`config` with every hidden layer of the one width whose network size is closest to `target`.

    The size grows strictly with the width, so a bisection on sizes of real (meta-device) MLPs finds the
    smallest width at or above `target`; it or the width below it is the closest."""
    import dataclasses

    import torch

    from nlbench.errors import UserError
    from nlbench.models.mlp import MLP

    if not config.hidden:
        raise UserError("adam-matched needs an MLP with at least one hidden layer: its width is what it matches")

    def sized(width: int):
        return dataclasses.replace(config, hidden=(width,) * len(config.hidden))

    def size(width: int) -> int:
        with torch.device("meta"):
            return network_size(MLP(sized(width)), heads)

    low, high = 1, max(1, target)  # size(target) > target: every hidden unit brings more than one weight
    while low < high:
        mid = (low + high) // 2
        if size(mid) < target:
            low = mid + 1
        else:
            high = mid
    best = min((w for w in (low - 1, low) if w >= 1), key=lambda w: abs(size(w) - target))
    return sized(best)


@register_strategy(
    "adam-matched",
    description="parameter-matched control for cms: the suite's plain MLP (same depth, ReLU), its hidden width "
                "chosen so that it has as many parameters as the cms network of `levels` blocks; default "
                "optimizer (Adam); MLP backbones only",
    hparams=(HParam("levels", DEFAULT_LEVELS, "int", "CMS levels of the cms network to match (cms: one per clock period)",
                    low=1, high=64),),
    backbones=MLP_BACKBONES,
)
def build(ctx, hp):
    from nlbench.errors import UserError
    from nlbench.models.heads import MultiHeadNet, replace_backbone, unwrap_backbone
    from nlbench.models.mlp import MLP

    def transform(model):
        backbone = unwrap_backbone(model)
        if not isinstance(backbone, MLP):  # spec resolution rejects other backbones; this guards compositions
            raise UserError(f"adam-matched needs an MLP backbone, got {type(backbone).__name__}")
        heads = ctx.suite.n_experiences if isinstance(model, MultiHeadNet) else 1
        target = cms_size(backbone.config, hp["levels"], heads)
        matched = MLP(matched_config(backbone.config, target, heads))
        return replace_backbone(model, matched)  # the runner moves it to the device

    return Parts(model_transform=transform)
