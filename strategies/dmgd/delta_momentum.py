"""Delta-rule momentum: a linear momentum memory trained with the L2 (delta) objective.

* [NL-arXiv] Behrouz et al., arXiv:2512.24695, Eq 48-49; nlbench math spec
  ``/work/shared/design/nl-math.md`` section 7.2.

Update rule (descent form; U = gradient of a >= 2-D weight viewed as a matrix; 1-D parameters use
the Adam fallback of ``base``)::

    Uhat = U / (||U||_F + 1e-12);  M <- M (alpha I - zeta_p Uhat^T Uhat) - zeta U;  W <- W + M
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional

import torch
from torch import Tensor
from torch.optim import Optimizer

from .base import GlobalStepMixin, as_matrix, check_nonneg, closure_loss, validate_adam_fallback

__all__ = ["delta_momentum_update", "DeltaMomentum"]


def delta_momentum_update(M: Tensor, U: Tensor, alpha: float, zeta: float, zeta_p: float) -> Tensor:
    """M (alpha I - zeta_p Uhat^T Uhat) - zeta U with Uhat = U / (||U||_F + 1e-12) (NL Eq 48-49).

    Uhat^T Uhat is never formed when d_out <= d_in: (M Uhat^T) Uhat costs 2 d_out^2 d_in instead.
    """
    out = M * alpha
    if zeta_p != 0.0:
        Uhat = U / (torch.linalg.matrix_norm(U) + 1e-12)
        if M.shape[0] <= M.shape[1]:
            out.sub_((M @ Uhat.T) @ Uhat, alpha=zeta_p)
        else:
            out.sub_(M @ (Uhat.T @ Uhat), alpha=zeta_p)
    out.add_(U, alpha=-zeta)
    return out


class DeltaMomentum(GlobalStepMixin, Optimizer):
    """Delta-rule momentum (NL-arXiv Eq 48-49; spec 7.2), linear memory M per >= 2-D parameter::

        Uhat = U / (||U||_F + 1e-12)
        M <- M (alpha I - zeta_p Uhat^T Uhat) - zeta U ;   W <- W + M

    The zeta_p term erases what M currently returns for the gradient's row space (the L2 / delta
    objective ||M U^T - P||^2) instead of decaying all directions alike; zeta_p = 0 is heavy-ball SGD
    with momentum alpha and lr zeta. Keys are normalised because the derivation assumes ||key|| = 1.

    Args:
        lr: zeta (the momentum's gradient step). alpha: retention (0.9). zeta_p: delta-rule step (0.5).
        weight_decay: decoupled (W <- W (1 - lr*wd)) on the >= 2-D parameters.
        adam_*: the Adam(W) fallback for 1-D parameters (no key structure to exploit there).
    """

    def __init__(self, params: Iterable, lr: float = 1e-2, alpha: float = 0.9, zeta_p: float = 0.5, *,
                 weight_decay: float = 0.0, adam_lr: float = 1e-3,
                 adam_betas: tuple[float, float] = (0.9, 0.999), adam_eps: float = 1e-8,
                 adam_weight_decay: float = 0.0):
        defaults = dict(lr=lr, alpha=alpha, zeta_p=zeta_p, weight_decay=weight_decay, adam_lr=adam_lr,
                        adam_betas=tuple(adam_betas), adam_eps=adam_eps,
                        adam_weight_decay=adam_weight_decay)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        g = self.param_groups[-1]
        check_nonneg("lr", g["lr"])
        check_nonneg("alpha", g["alpha"])
        check_nonneg("zeta_p", g["zeta_p"])
        check_nonneg("weight_decay", g["weight_decay"])
        validate_adam_fallback(g)

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None):
        loss = closure_loss(closure)
        for p, g, state, group in self._matrix_grads():
            if "M" not in state:
                state["step"] = 0
                state["M"] = torch.zeros_like(as_matrix(p), memory_format=torch.contiguous_format)
            state["step"] += 1
            M = delta_momentum_update(state["M"], as_matrix(g), group["alpha"], group["lr"],
                                      group["zeta_p"])
            state["M"].copy_(M)
            if group["weight_decay"] != 0.0:
                p.mul_(1.0 - group["lr"] * group["weight_decay"])
            p.add_(M.reshape(p.shape))
        return loss
