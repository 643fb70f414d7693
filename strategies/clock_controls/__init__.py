"""Controls for the clocked Nested Learning methods: the same network without the clock.

Source of the method they control: A. Behrouz, M. Razaviyayn, P. Zhong, V. Mirrokni, "Nested Learning:
The Illusion of Deep Learning Architectures", arXiv:2512.24695 (NeurIPS 2025), §7.1 Eq 70-71 (CMS:
level l updated every C_l steps with the sum of its window's gradients). A gain of `cms` over `adam` can
come from the clocks, or from the CMS architecture, or from the slow levels simply moving less. Each
control keeps everything but one of those:

- `cms-sync`, `clocked-adam-sync` ("same mean step, no clock"): the same network and the same level
  assignment (periods, wiring), but every level steps every step, level l with learning rate lr / C_l
  (`lr_scale=period`). For a scale-invariant base optimizer (Adam, the default) one update of a C-step
  window moves about as far as one plain step, so lr / C_l matches the clocked level's mean step. With
  `lr_scale=none` every level steps at the base lr (the architecture with every period 1).
- `hope-sync`, `hope-frozen`: the same for `hope` (its self-modifying memories are untouched; the
  controls act on the levels the clocked optimizer steps).
- `cms-frozen`: the same network with every level slower than the fastest frozen at its
  initialisation (period infinity): what the slow levels contribute by learning at all.

Update rule (sync): for every level l at every step s, theta_l <- Opt_l(theta_l, g_l) with
lr_l = lr / C_l; (frozen): theta_l fixed for C_l > min_l C_l, the fastest level as in `cms`.

This module is the registration only and imports neither torch nor Avalanche; `wrappers.py` holds the
optimizer wrappers, and the architecture is the controlled method's own (its builder's model transform).
"""

from __future__ import annotations

from nlbench.core.registry import HParam, Parts, register_strategy

from ..cms.hparams import CLOCK_HPARAMS
from ..hope import HOPE_HPARAMS

LR_SCALE = HParam("lr_scale", "period", "str", "level l's learning rate: lr / C_l (period) or lr (none)",
                  choices=("period", "none"))


def _controlled(name: str):
    """The builder of the method a control keeps the network of (imported lazily: it registers it)."""
    from .. import cms, hope

    return {"cms": cms.build_cms, "clocked-adam": cms.build_clocked, "hope": hope.build_hope}[name]


def _sync(base: str):
    def build(ctx, hp):
        from .wrappers import sync_wrapper

        parts = _controlled(base)(ctx, hp)
        return Parts(plugins=parts.plugins, optimizer_wrapper=sync_wrapper(hp), model_transform=parts.model_transform)

    return build


def _frozen(base: str):
    def build(ctx, hp):
        from .wrappers import frozen_wrapper

        parts = _controlled(base)(ctx, hp)
        return Parts(plugins=parts.plugins, optimizer_wrapper=frozen_wrapper(hp), model_transform=parts.model_transform)

    return build


register_strategy(
    "cms-sync",
    description="control for cms: the same CMS network, every level stepped every step with lr / period (no clock)",
    hparams=(*CLOCK_HPARAMS, LR_SCALE), family="control", wraps_optimizer=True,
)(_sync("cms"))

register_strategy(
    "cms-frozen",
    description="control for cms: the same CMS network with the slow levels frozen at initialisation",
    hparams=CLOCK_HPARAMS, family="control", wraps_optimizer=True,
)(_frozen("cms"))

register_strategy(
    "clocked-adam-sync",
    description="control for clocked-adam: the suite's backbone, every layer stepped every step with lr / its period",
    hparams=(*CLOCK_HPARAMS, LR_SCALE), family="control", wraps_optimizer=True,
)(_sync("clocked-adam"))

register_strategy(
    "hope-sync",
    description="control for hope: the same HOPE network, every CMS level stepped every step with lr / period (no clock)",
    hparams=(*HOPE_HPARAMS, LR_SCALE), family="control", wraps_optimizer=True,
)(_sync("hope"))

register_strategy(
    "hope-frozen",
    description="control for hope: the same HOPE network with the slow CMS levels frozen at initialisation",
    hparams=HOPE_HPARAMS, family="control", wraps_optimizer=True,
)(_frozen("hope"))
