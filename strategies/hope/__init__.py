"""HOPE: a self-modifying associative memory (delta-rule inner updates, learned eta/alpha gates) followed
by a Continuum Memory System whose levels train on clocks: the strategy `hope`.

Source: A. Behrouz, M. Razaviyayn, P. Zhong, V. Mirrokni, "Nested Learning: The Illusion of Deep
Learning Architectures", arXiv:2512.24695 (NeurIPS 2025), §8.1-8.3 Eq 83-97 (self-referential Titans,
Hope). nlbench's definition: docs nl-math.md section 9. Per chunk, each memory box in {mem, k, v} writes

    W_box <- alpha_t W_box - eta_t (M_box(k_t) - sg(M_box(v_t))) k_t^T          (the delta rule)

and every Hope block is h <- h + W_o M_mem(q); h <- CMS(h), CMS level l stepped every C_l steps.

HOPE = self-modifying memory + CMS, so this strategy reuses the CMS strategy's pieces rather than
copying them: its clock hyperparameters (`nlbench.strategies.cms.hparams.CLOCK_HPARAMS`), its clocked
optimizer (`nlbench.strategies.cms.clocks`) and its backbone swap (`nlbench.strategies.cms.surgery`).
The modules are in `nlbench.models.hope`; `backbone.py` sizes them for a suite.

This module is the registration only and imports neither torch nor Avalanche; the builder does.
"""

from __future__ import annotations

from nlbench.core.registry import HParam, Parts, register_strategy

from ..cms.hparams import CLOCK_HPARAMS


# The hyperparameters of `hope`, shared with its controls (`hope-sync`, `hope-frozen`)
HOPE_HPARAMS = (
    *CLOCK_HPARAMS,
    HParam("chunk", 0, "int", "inner-loop chunk in tokens (0: 8 for sequences and 32x32 images, else 4)",
           low=0, high=4096),
    HParam("eta_max", 0.1, "float", "largest inner write rate eta", low=0.0, high=1.0),
    HParam("hope_dim", 0, "int", "model width d (0: the suite's default)", low=0, high=4096),
    HParam("hope_layers", 0, "int", "Hope blocks (0: the suite's default)", low=0, high=64),
    HParam("memory", "mlp", "str", "memory form: 2-layer residual MLP (Eq 89) or linear", choices=("mlp", "linear")),
    HParam("read", "token", "str", "o_t = M_{t-1}(q_t) per token (Eq 83) or from the chunk-start state",
           choices=("token", "chunk")),
    HParam("gates", "memory", "str", "eta/alpha from self-modified memories (Eq 83) or outer-learned linear gates",
           choices=("memory", "linear")),
    HParam("adaptive_q", False, "bool", "q from a self-modified memory (Eq 79) instead of the fixed W_q"),
    HParam("inner_momentum", 0.0, "float", "Titans momentum on the memory writes (0: none)", low=0.0, high=0.99),
    HParam("rank1_dgd", False, "bool", "Eq 88 literal: factor (alpha I - eta k k^T) on the MLP's first layer"),
)


@register_strategy(
    "hope",
    description=("HOPE: self-modifying memories (2-layer residual MLPs, per-token reads, self-generated eta/alpha) "
                 "+ CMS levels on clocks (HopeLM / HopeViT backbone)"),
    hparams=HOPE_HPARAMS,
    family="nested-learning",
    wraps_optimizer=True,
)
def build_hope(ctx, hp):
    from ..cms.clocks import clock_plugins, clock_wrapper
    from ..cms.surgery import replace_backbone
    from .backbone import hope_for_suite

    levels = len(hp["periods"])

    def transform(model):
        hope = hope_for_suite(ctx.suite, chunk=hp["chunk"], d_model=hp["hope_dim"], n_layers=hp["hope_layers"],
                              eta_max=hp["eta_max"], cms_levels=levels, memory=hp["memory"], read=hp["read"],
                              gates=hp["gates"], adaptive_q=hp["adaptive_q"], inner_momentum=hp["inner_momentum"],
                              rank1_dgd=hp["rank1_dgd"])
        return replace_backbone(model, hope)

    return Parts(plugins=clock_plugins(hp), optimizer_wrapper=clock_wrapper(hp), model_transform=transform)
