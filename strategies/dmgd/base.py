"""The step skeleton shared by the matrix optimizers of nlbench (DMGD, DeltaMomentum, Muon, and
nested_adam's NestedAdam and M3, which import it from here).

* one optimizer-wide global step s = 1, 2, ... in ``self.state['global_step']`` (never reset at
  experience boundaries, nl-math.md Section 0), advanced once per ``step()``;
* the walk over parameters with a gradient: >= 2-D tensors (viewed as matrices) take the method's
  update, the others the AdamW fallback ``adam_update_`` (torch's single-tensor Adam/AdamW, bitwise);
* the argument checks every optimizer's ``add_param_group`` uses.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import Tensor

__all__ = ["GLOBAL_STEP_KEY", "GlobalStepMixin", "adam_update_", "adam_fallback", "as_matrix",
           "check_betas", "check_nonneg", "check_unit", "closure_loss", "grad_of", "validate_adam_fallback"]

GLOBAL_STEP_KEY = "global_step"


def adam_update_(p: Tensor, g: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, step: int, lr: float,
                 beta1: float, beta2: float, eps: float, weight_decay: float = 0.0) -> None:
    """In-place AdamW step (same operation order as torch's single-tensor Adam/AdamW, so a 1-D
    fallback parameter follows torch.optim.AdamW(foreach=False) bitwise). ``step`` counts this call."""
    if weight_decay != 0.0:
        p.mul_(1.0 - lr * weight_decay)
    exp_avg.lerp_(g, 1.0 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
    bc1 = 1.0 - beta1 ** step
    bc2_sqrt = (1.0 - beta2 ** step) ** 0.5
    denom = (exp_avg_sq.sqrt() / bc2_sqrt).add_(eps)
    p.addcdiv_(exp_avg, denom, value=-(lr / bc1))


def as_matrix(t: Tensor) -> Tensor:
    """View an N-D (N >= 2) tensor as (shape[0], prod(rest)) (conv kernels: (C_out, C_in*kh*kw))."""
    return t.reshape(t.shape[0], -1)


def check_nonneg(name: str, value: float) -> None:
    if (not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value)
            or value < 0):
        raise ValueError(f"Invalid {name}: {value!r} (must be a finite number >= 0)")


def check_unit(name: str, value: float, closed: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (
        0.0 <= value <= 1.0 if closed else 0.0 <= value < 1.0)
    if not ok:
        raise ValueError(f"Invalid {name}: {value!r} (must be in [0, 1{']' if closed else ')'})")


def check_betas(name: str, betas) -> None:
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"Invalid {name}: {betas!r} (need a pair)")
    for b in betas:
        check_unit(name, b)


class GlobalStepMixin:
    """One optimizer-wide step counter in ``self.state['global_step']`` (spec Section 0: s = 1, 2, ...,
    never reset at experience boundaries). Living in ``self.state`` puts it in state_dict()."""

    state: dict

    @property
    def global_step(self) -> int:
        return int(self.state.get(GLOBAL_STEP_KEY, 0))

    def _advance_global_step(self) -> int:
        s = self.global_step + 1
        self.state[GLOBAL_STEP_KEY] = s
        return s

    def _matrix_grads(self, to_adam: Callable[[Tensor, dict], bool] = lambda p, group: p.ndim < 2):
        """Advance the global step, then yield (p, grad, state, group) for every parameter with a
        gradient that takes this optimizer's matrix update; the others (`to_adam`) get the Adam
        fallback here."""
        self._advance_global_step()
        for group in self.param_groups:
            for p in group["params"]:
                g = grad_of(p)
                if g is None:
                    continue
                state = self.state[p]
                if to_adam(p, group):
                    adam_fallback(p, g, state, group)
                    continue
                yield p, g, state, group


def closure_loss(closure: Optional[Callable[[], float]]) -> Optional[float]:
    """The closure's loss, evaluated with grad enabled (torch's ``Optimizer.step`` contract)."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def adam_fallback(p: Tensor, g: Tensor, state: dict, group: dict) -> None:
    """AdamW step for a parameter without matrix structure (the group's ``adam_*`` settings; its
    state is created on first use)."""
    if "exp_avg" not in state:
        state["step"] = 0
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    state["step"] += 1
    b1, b2 = group["adam_betas"]
    adam_update_(p, g, state["exp_avg"], state["exp_avg_sq"], state["step"], group["adam_lr"], b1, b2,
                 group["adam_eps"], group["adam_weight_decay"])


def validate_adam_fallback(group: dict) -> None:
    """Check the group's ``adam_*`` settings of the fallback."""
    check_nonneg("adam_lr", group["adam_lr"])
    check_betas("adam_betas", group["adam_betas"])
    check_nonneg("adam_eps", group["adam_eps"])
    check_nonneg("adam_weight_decay", group["adam_weight_decay"])


def grad_of(p: Tensor) -> Optional[Tensor]:
    """``p.grad`` (None when ``p`` got no gradient); sparse gradients are refused."""
    if p.grad is None:
        return None
    if p.grad.is_sparse:
        raise RuntimeError("sparse gradients are not supported")
    return p.grad


def check_orthogonalized_group(g: dict) -> None:
    """The options that Muon and M3 share: Newton-Schulz steps, weight decay, which parameters go
    through Newton-Schulz (`use_muon`) and the Adam fallback for the others. ValueError when invalid."""
    if not isinstance(g["ns_steps"], int) or isinstance(g["ns_steps"], bool) or g["ns_steps"] < 1:
        raise ValueError(f"Invalid ns_steps: {g['ns_steps']!r} (int >= 1)")
    check_nonneg("weight_decay", g["weight_decay"])
    if not isinstance(g["use_muon"], bool):
        raise ValueError(f"Invalid use_muon: {g['use_muon']!r}")
    validate_adam_fallback(g)
