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


def _control(base: str, kind: str):
    """The builder of control `kind` ("sync" or "frozen") of `base`: its network and plugins, its
    optimizer wrapped without the clock (`wrappers.sync_wrapper` / `wrappers.frozen_wrapper`)."""
    def build(ctx, hp):
        from . import wrappers

        parts = _controlled(base)(ctx, hp)
        wrap = {"sync": wrappers.sync_wrapper, "frozen": wrappers.frozen_wrapper}[kind]
        return Parts(plugins=parts.plugins, optimizer_wrapper=wrap(hp), model_transform=parts.model_transform)

    return build


# (controlled method, kind, the method's hyperparameters, description); the control is "<method>-<kind>",
# the name the report's Verdicts pair it by. Sync controls also take LR_SCALE.
CONTROLS = (
    ("cms", "sync", CLOCK_HPARAMS,
     "control for cms: the same CMS network, every level stepped every step with lr / period (no clock)"),
    ("cms", "frozen", CLOCK_HPARAMS,
     "control for cms: the same CMS network with the slow levels frozen at initialisation"),
    ("clocked-adam", "sync", CLOCK_HPARAMS,
     "control for clocked-adam: the suite's backbone, every layer stepped every step with lr / its period"),
    ("hope", "sync", HOPE_HPARAMS,
     "control for hope: the same HOPE network, every CMS level stepped every step with lr / period (no clock)"),
    ("hope", "frozen", HOPE_HPARAMS,
     "control for hope: the same HOPE network with the slow CMS levels frozen at initialisation"),
)

for _base, _kind, _hparams, _description in CONTROLS:
    register_strategy(
        f"{_base}-{_kind}", description=_description,
        hparams=(*_hparams, LR_SCALE) if _kind == "sync" else _hparams, family="control", wraps_optimizer=True,
    )(_control(_base, _kind))
