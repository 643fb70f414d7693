"""Muon, the baseline DMGD reduces to (momentum orthogonalised by Newton-Schulz).

* [Muon] K. Jordan et al., "Muon: An optimizer for hidden layers in neural networks" (2024);
* [NL-arXiv] Behrouz et al., arXiv:2512.24695, Eq 42-44; nlbench math spec
  ``/work/shared/design/nl-math.md`` section 7.2.

Update rule (1-D parameters and ``use_muon=False`` groups use the Adam fallback of ``base``)::

    B <- mu B + g;  W <- W - lr * sqrt(max(1, d_out/d_in)) * NS_5(B)    (Nesterov: NS_5(g + mu B))
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional

import torch
from torch.optim import Optimizer

from .base import (GlobalStepMixin, as_matrix, check_nonneg, check_unit, closure_loss,
                   check_orthogonalized_group)
from .newton_schulz import muon_scale, newton_schulz5

__all__ = ["Muon", "muon_param_groups"]

_MATRIX_MODULES = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)


def muon_param_groups(model: torch.nn.Module, params: Iterable) -> list[dict]:
    """Split ``params`` the way Muon's authors use it: Newton-Schulz only for the weights of hidden
    layers, i.e. the ``weight`` of an ``nn.Linear`` or a dense ``nn.ConvNd`` (groups == 1) that is
    not part of a ``classifier`` module; embeddings, positional parameters, every other bare
    ``nn.Parameter`` (e.g. HOPE's memory initial states), depthwise conv kernels, norms, biases and
    the head go to the AdamW fallback (``use_muon=False``). Returns the non-empty groups, Muon first.
    """
    hidden: set[int] = set()
    for name, module in model.named_modules():
        if "classifier" in name.split("."):
            continue
        if isinstance(module, _MATRIX_MODULES) and getattr(module, "groups", 1) == 1:
            hidden.add(id(module.weight))
    params = list(params)
    groups = [{"params": [p for p in params if id(p) in hidden]},
              {"params": [p for p in params if id(p) not in hidden], "use_muon": False}]
    return [g for g in groups if g["params"]]


class Muon(GlobalStepMixin, Optimizer):
    """Muon (Jordan et al. 2024; spec 7.2), heavy-ball form::

        B <- mu B + g ;  X = g + mu B if nesterov else B
        W <- W (1 - lr*wd) - lr * sqrt(max(1, d_out/d_in)) * NS_5(X)

    Parameters with ndim >= 2 are orthogonalised (conv kernels viewed as (C_out, C_in*kh*kw), as in
    the reference implementation and as DeepMomentumGD does, so the P7.3 reduction holds for convs too).
    Parameters with ndim < 2 (biases, norm gains) fall back to AdamW (decoupled weight decay
    ``adam_weight_decay``, default 0 = plain Adam). A group may set ``use_muon=False`` to send all its
    parameters to the AdamW fallback (the Muon authors recommend this for embeddings/classifier heads).

    The sum form B = mu B + g (spec) differs from the reference's EMA form (1 - mu) only by a scale,
    which NS_5 removes up to its 1e-7 normalisation epsilon.
    """

    def __init__(self, params: Iterable, lr: float = 0.02, momentum: float = 0.95, *,
                 nesterov: bool = False, ns_steps: int = 5, weight_decay: float = 0.0,
                 use_muon: bool = True, adam_lr: float = 1e-3,
                 adam_betas: tuple[float, float] = (0.9, 0.999), adam_eps: float = 1e-8,
                 adam_weight_decay: float = 0.0):
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps,
                        weight_decay=weight_decay, use_muon=use_muon, adam_lr=adam_lr,
                        adam_betas=tuple(adam_betas), adam_eps=adam_eps,
                        adam_weight_decay=adam_weight_decay)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        g = self.param_groups[-1]
        check_nonneg("lr", g["lr"])
        check_unit("momentum", g["momentum"])
        if not isinstance(g["nesterov"], bool):
            raise ValueError(f"Invalid nesterov: {g['nesterov']!r}")
        if g["nesterov"] and g["momentum"] == 0:
            raise ValueError("nesterov requires momentum > 0")
        check_orthogonalized_group(g)

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None):
        loss = closure_loss(closure)
        for p, g, state, group in self._matrix_grads(lambda p, group: p.ndim < 2 or not group["use_muon"]):
            U = as_matrix(g)
            if "momentum_buffer" not in state:
                state["step"] = 0
                state["momentum_buffer"] = torch.zeros_like(U, memory_format=torch.contiguous_format)
            state["step"] += 1
            buf = state["momentum_buffer"]
            mu = group["momentum"]
            buf.mul_(mu).add_(U)
            X = U.add(buf, alpha=mu) if group["nesterov"] else buf
            O = newton_schulz5(X, steps=group["ns_steps"])
            lr = group["lr"]
            if group["weight_decay"] != 0.0:
                p.mul_(1.0 - lr * group["weight_decay"])
            p.add_(O.reshape(p.shape), alpha=-lr * muon_scale(*U.shape))
        return loss
