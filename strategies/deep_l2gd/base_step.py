"""The base step of DeepL2GD: plain SGD, Adam or AdamW after the projection (nl-math.md 1.2: project,
then step), numerically identical to torch.optim because it calls torch's own functionals.

    W <- base_step(W, g)      with g = W.grad taken at the PRE-projection W

BaseStepMixin is one of the parts DeepL2GD (optimizer.py) is assembled from; its state (momentum
buffers, exp_avg, exp_avg_sq, step) sits in self.state[p] next to the projection statistics.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor
from torch.optim.adam import adam as _adam_functional
from torch.optim.sgd import sgd as _sgd_functional

try:  # same dtype torch.optim.Adam uses for its CPU "step" scalar (so state_dicts are interchangeable)
    from torch.optim.optimizer import _get_scalar_dtype
except ImportError:  # pragma: no cover - older torch
    def _get_scalar_dtype() -> torch.dtype:
        return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32

__all__ = ["BaseStepMixin"]


class BaseStepMixin:
    """``base_step`` of :class:`DeepL2GD`: the torch.optim SGD/Adam/AdamW update of every parameter."""

    @torch.no_grad()
    def base_step(self, params: Iterable[Tensor] | None = None) -> None:
        """The base optimizer step alone (torch.optim.SGD/Adam/AdamW math, via torch's functionals).

        ``params`` restricts it to a subset (a clock wrapper steps only the due parameters; the
        others get no update of any kind, state included)."""
        only = None if params is None else {id(p) for p in params}
        for group in self.param_groups:
            ps = [p for p in group["params"] if p.grad is not None and (only is None or id(p) in only)]
            if not ps:
                continue
            if group["base"] == "sgd":
                self._sgd_step(group, ps)
            else:
                self._adam_step(group, ps)

    def _sgd_step(self, group: dict, params: list[Tensor]) -> None:
        grads = [p.grad for p in params]
        has_sparse = any(g.is_sparse for g in grads)
        bufs = [self.state[p].get("momentum_buffer") for p in params] if group["momentum"] != 0 else []
        _sgd_functional(
            params, grads, bufs, has_sparse_grad=has_sparse, foreach=group["foreach"], fused=None,
            grad_scale=getattr(self, "grad_scale", None), found_inf=getattr(self, "found_inf", None),
            weight_decay=group["weight_decay"], momentum=group["momentum"], lr=group["lr"],
            dampening=group["dampening"], nesterov=group["nesterov"], maximize=False,
        )
        if group["momentum"] != 0:
            for p, b in zip(params, bufs):
                self.state[p]["momentum_buffer"] = b

    def _adam_step(self, group: dict, params: list[Tensor]) -> None:
        grads, exp_avgs, exp_avg_sqs, max_sqs, steps = [], [], [], [], []
        has_complex = False
        for p in params:
            if p.grad.is_sparse:
                raise RuntimeError("DeepL2GD with an Adam base does not support sparse gradients")
            has_complex |= torch.is_complex(p)
            grads.append(p.grad)
            st = self.state[p]
            if "exp_avg" not in st:  # lazy init; the state may already hold projection statistics
                st["step"] = torch.tensor(0.0, dtype=_get_scalar_dtype(), device="cpu")
                st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if group["amsgrad"] and "max_exp_avg_sq" not in st:
                st["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            exp_avgs.append(st["exp_avg"])
            exp_avg_sqs.append(st["exp_avg_sq"])
            if group["amsgrad"]:
                max_sqs.append(st["max_exp_avg_sq"])
            steps.append(st["step"])
        beta1, beta2 = group["betas"]
        _adam_functional(
            params, grads, exp_avgs, exp_avg_sqs, max_sqs, steps,
            foreach=group["foreach"], capturable=False, differentiable=False, fused=None,
            grad_scale=getattr(self, "grad_scale", None), found_inf=getattr(self, "found_inf", None),
            has_complex=has_complex, decoupled_weight_decay=group["base"] == "adamw",
            amsgrad=group["amsgrad"], beta1=beta1, beta2=beta2, lr=group["lr"],
            weight_decay=group["weight_decay"], eps=group["eps"], maximize=False,
        )
