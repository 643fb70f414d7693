"""Multi-clock training and the Continuum Memory System (CMS): the strategies `cms` and `clocked-adam`.

Source: A. Behrouz, M. Razaviyayn, P. Zhong, V. Mirrokni, "Nested Learning: The Illusion of Deep
Learning Architectures", arXiv:2512.24695 (NeurIPS 2025), §7.1 Eq 70-71: block l of a chain of MLPs is
updated every C_l steps with the SUM of the gradients of its window,

    A_l += g_l ;  if s mod C_l == 0:  Opt_l.step(theta_l, A_l) ; A_l <- 0      (s never resets)

nlbench's definition is docs nl-math.md section 4 (and 5.1 for the clocked Transformer).

This module is the registration only and imports neither torch nor Avalanche; the builders import:
    hparams.py   CLOCK_HPARAMS and the clock constants (torch-free; `hope` declares them too)
    wiring.py    ClockLevel, wire_clocks: which parameter is on which clock level
    clocks.py    ClockedOptimizer (one base optimizer per level), ClockFlush, clock_wrapper, clock_plugins
    surgery.py   cms_variant, replace_backbone, unwrap_backbone (CMS modules: nlbench.models.cms)
"""

from __future__ import annotations

from nlbench.core.registry import Parts, register_strategy

from .hparams import CLOCK_HPARAMS


@register_strategy(
    "cms",
    description="Continuum Memory System: the suite's backbone as a chain of clocked MLP levels (NL §7.1)",
    hparams=CLOCK_HPARAMS,
    family="nested-learning",
    wraps_optimizer=True,
)
def build_cms(ctx, hp):
    from .clocks import clock_plugins, clock_wrapper
    from .surgery import cms_variant, replace_backbone, unwrap_backbone

    levels = len(hp["periods"])

    def transform(model):
        return replace_backbone(model, cms_variant(unwrap_backbone(model), levels))

    return Parts(plugins=clock_plugins(hp), optimizer_wrapper=clock_wrapper(hp), model_transform=transform)


@register_strategy(
    "clocked-adam",
    description="the suite's default backbone, unchanged, with multi-clock updates (one base optimizer per level)",
    hparams=CLOCK_HPARAMS,
    family="nested-learning",
    wraps_optimizer=True,
)
def build_clocked(ctx, hp):
    from .clocks import clock_plugins, clock_wrapper

    return Parts(plugins=clock_plugins(hp), optimizer_wrapper=clock_wrapper(hp))
