"""M3, Multi-scale Momentum Muon: a fast Muon momentum and a slow one on a chunk clock.

* [NL-arXiv] Behrouz et al., arXiv:2512.24695, Section 7.2, Algorithm 1, Eq 75.
* nlbench math spec ``/work/shared/design/nl-math.md`` Section 8.4 (the decisions: EMA decay by
  default, no bias correction and no Muon shape scale, as printed).

Update rule: see ``m3_update_``. Registered as the strategy ``m3`` (``nlbench.strategies.m3``).

The step skeleton (global step, matrix view, Adam fallback for 1-D parameters, argument checks) and
NS_5 are imported from the dmgd package (``nlbench.strategies.dmgd.base`` and ``.newton_schulz``),
the one place they live; the slow clock ``is_due`` from NestedAdam's module.
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional

import torch
from torch import Tensor
from torch.optim import Optimizer

from ..dmgd.base import (GlobalStepMixin, as_matrix, check_nonneg, check_unit, closure_loss,
                         check_orthogonalized_group)
from ..dmgd.newton_schulz import newton_schulz5
from ..nested_adam.adam import is_due

__all__ = ["m3_update_", "M3"]


def m3_update_(p: Tensor, g: Tensor, state: dict, *, global_step: int, lr: float, beta1: float,
               beta2: float, beta3: float, alpha: float, eps: float, slow_period: int, decay: str,
               ns_steps: int = 5, weight_decay: float = 0.0) -> None:
    """One M3 step (NL-arXiv Algorithm 1 / Eq 75; spec 8.4) on a >= 2-D parameter, in place::

        fast (every step):  M1 <- b1 M1 + (1-b1) g ; V <- b2 V + (1-b2) g^2      (decay='ema')
                            M1 <- M1 + b1 g        ; V <- V + b2 g^2              (decay='literal')
        slow (s % f == 0):  M2 <- b3 M2 + (1-b3) C  |  M2 + b3 C,  C = sum of g over the chunk
                            (current step included);  O2 = NS_5(M2), used from this step on
        W <- W (1 - lr wd) - lr (NS_5(M1) + alpha O2) / (sqrt(V) + eps)

    As printed there is no bias correction of V and no Muon shape scale; both are kept out here.
    """
    G = as_matrix(g)
    if "M1" not in state:
        state["step"] = 0
        state["M1"] = torch.zeros_like(G, memory_format=torch.contiguous_format)
        state["V"] = torch.zeros_like(G, memory_format=torch.contiguous_format)
        state["M2"] = torch.zeros_like(G, memory_format=torch.contiguous_format)
        state["chunk"] = torch.zeros_like(G, memory_format=torch.contiguous_format)
        state["O2"] = torch.zeros_like(G, memory_format=torch.contiguous_format)
        state["slow_updates"] = 0
    state["step"] += 1
    M1, V, M2, C = state["M1"], state["V"], state["M2"], state["chunk"]
    C.add_(G)
    if decay == "ema":
        M1.lerp_(G, 1.0 - beta1)
        V.mul_(beta2).addcmul_(G, G, value=1.0 - beta2)
    elif decay == "literal":
        M1.add_(G, alpha=beta1)
        V.addcmul_(G, G, value=beta2)
    else:
        raise ValueError(f"unknown decay {decay!r}")
    if is_due(global_step, slow_period):
        if decay == "ema":
            M2.lerp_(C, 1.0 - beta3)
        else:
            M2.add_(C, alpha=beta3)
        C.zero_()
        state["O2"].copy_(newton_schulz5(M2, steps=ns_steps))
        state["slow_updates"] += 1
    num = newton_schulz5(M1, steps=ns_steps)
    if alpha != 0.0:
        num = num + alpha * state["O2"]
    if weight_decay != 0.0:
        p.mul_(1.0 - lr * weight_decay)
    p.addcdiv_(num.reshape(p.shape), (V.sqrt() + eps).reshape(p.shape), value=-lr)


class M3(GlobalStepMixin, Optimizer):
    """Multi-scale Momentum Muon (NL-arXiv Section 7.2, Algorithm 1, Eq 75; spec 8.4), see m3_update_.

    ``decay='ema'`` (nlbench default, as the aryateja/bachnguyennn reimplementations) or 'literal'
    (plain accumulations as printed). Parameters with ndim < 2, and groups with ``use_muon=False``
    (the strategy ``m3`` sends embeddings, positions and the head there, as Muon's practice), use the
    AdamW fallback (``adam_*``).
    Caution: NS_5's output is scale-free while sqrt(V) carries the gradient's scale, so a coordinate
    steps by about lr * O(1/sqrt(d)) / (|g| + eps): with eps 1e-8 a tiny-gradient coordinate takes a
    huge step (lr 1e-4: split-digits MLP loss 1e8 within 200 steps). The strategy ``m3`` therefore
    uses eps = 1e-3 (a floor on sqrt(V) in gradient units) with lr = 1e-4; this class keeps 1e-8.
    """

    def __init__(self, params: Iterable, lr: float = 1e-4,
                 betas: tuple[float, float, float] = (0.9, 0.999, 0.9), alpha: float = 1.0,
                 eps: float = 1e-8, *, slow_period: int = 10, decay: str = "ema", ns_steps: int = 5,
                 weight_decay: float = 0.0, use_muon: bool = True, adam_lr: float = 1e-3,
                 adam_betas: tuple[float, float] = (0.9, 0.999), adam_eps: float = 1e-8,
                 adam_weight_decay: float = 0.0):
        defaults = dict(lr=lr, betas=tuple(betas) if isinstance(betas, (tuple, list)) else betas,
                        alpha=alpha, eps=eps, slow_period=slow_period, decay=decay, ns_steps=ns_steps,
                        weight_decay=weight_decay, use_muon=use_muon, adam_lr=adam_lr,
                        adam_betas=tuple(adam_betas), adam_eps=adam_eps,
                        adam_weight_decay=adam_weight_decay)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        g = self.param_groups[-1]
        check_nonneg("lr", g["lr"])
        b = g["betas"]
        if not isinstance(b, tuple) or len(b) != 3:
            raise ValueError(f"Invalid betas: {b!r} (need (beta1, beta2, beta3))")
        for x in b:
            check_unit("betas", x, closed=True)
        check_nonneg("alpha", g["alpha"])
        check_nonneg("eps", g["eps"])
        sp = g["slow_period"]
        if not isinstance(sp, int) or isinstance(sp, bool) or sp < 1:
            raise ValueError(f"Invalid slow_period: {sp!r} (int >= 1)")
        if g["decay"] not in ("ema", "literal"):
            raise ValueError(f"Invalid decay {g['decay']!r}; choose 'ema' or 'literal'")
        check_orthogonalized_group(g)

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None):
        loss = closure_loss(closure)
        for p, g, state, group in self._matrix_grads(lambda p, group: p.ndim < 2 or not group["use_muon"]):
            b1, b2, b3 = group["betas"]
            m3_update_(p, g, state, global_step=self.global_step, lr=group["lr"], beta1=b1, beta2=b2, beta3=b3,
                       alpha=group["alpha"], eps=group["eps"], slow_period=group["slow_period"],
                       decay=group["decay"], ns_steps=group["ns_steps"], weight_decay=group["weight_decay"])
        return loss
