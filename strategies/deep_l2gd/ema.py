"""DeepL2GD-EMA: DeepL2GD projecting with a bias-corrected EMA of the Gram matrices (nl-math.md section 2).

Source: Behrouz et al., "Nested Learning", arXiv:2512.24695 (Eq 57/121) for the projection; the EMA
memory comes from the S000 article (P. Chatterjee, "Nested Learning in Practice", Listing 2).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .functional import ema_gram_update_
from .optimizer import DeepL2GD

__all__ = ["DeepL2GDEMA"]


class DeepL2GDEMA(DeepL2GD):
    """DeepL2GD-EMA (S000 Listing 2; nl-math.md section 2): project with an EMA of the per-window Grams.

        Gbar_k = beta Gbar_{k-1} + (1 - beta) G_k,  Ghat_k = Gbar_k / (1 - beta^k)  (bias correction)
        W <- W (I - a Ghat_k),  a = min(alpha, rho / lambda_max(Ghat_k)),  then the base step.

    k counts the layer's Gram updates (its due steps with data). The memory persists across
    experiences and is saved in the state_dict (``proj_ema``, stored in the bias-corrected form, see
    :func:`ema_gram_update_`). A window without data leaves memory and weight untouched. beta = 0 is
    DeepL2GD (same code path, bitwise). The memory is a full d x d Gram, so the low-rank path is only
    used for beta = 0.
    """

    def __init__(self, model: nn.Module, *args: Any, beta: float = 0.99, bias_correction: bool = True, **kwargs: Any):
        if not (isinstance(beta, (int, float)) and 0.0 <= beta < 1.0):
            raise ValueError(f"beta must be in [0, 1), got {beta!r}")
        self._ema_defaults = {"beta": float(beta), "bias_correction": bool(bias_correction)}
        super().__init__(model, *args, **kwargs)

    def _variant_defaults(self) -> dict[str, Any]:
        return dict(self._ema_defaults)

    def _lowrank_allowed(self, group: dict) -> bool:
        return group["beta"] == 0.0

    def _transform_stats(self, module: nn.Module, st: dict, group: dict, stats: dict) -> dict:
        beta = float(group["beta"])
        if beta == 0.0:
            return stats  # no memory: exactly DeepL2GD, whichever path the shapes chose
        if "x" in stats:  # lowrank forced by the caller: the memory needs the full Gram anyway
            x = stats["x"]
            stats = {"gram": (x.T @ x) / stats["n"], "n": stats["n"], "aug": stats["aug"]}
        g = stats["gram"]
        ema = st.get("proj_ema")
        if ema is None or ema.shape != g.shape:
            ema = st["proj_ema"] = torch.zeros_like(g)
            st["proj_k"] = 0
        st["proj_k"] += 1
        ema_gram_update_(ema, g, beta, st["proj_k"], group["bias_correction"])
        return {"gram": ema, "n": stats["n"], "aug": stats["aug"]}
