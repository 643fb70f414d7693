"""Nested Adam: Adam with its second moment on a slower clock; M3 (Multi-scale Momentum Muon).

Sources
-------
* [S002] LeSearch AI blog "Reproducing Nested Learning from Scratch" / github.com/aryateja2106/
  nested-learning (the "update_slow" second moment; reproduced only as ``variant='s002_literal'``).
* [NL-arXiv] Behrouz et al., arXiv:2512.24695: App. B after Eq 105 (Adam's m and v are two associative
  memories on the same level; putting v on a lower-frequency level is an NL "level" design, not an
  algorithm of the paper) and Section 7.2, Algorithm 1, Eq 75 (M3).
* nlbench math spec ``/work/shared/design/nl-math.md`` Section 8.3 (the NestedAdam definition used
  here) and 8.4 (M3 decisions).

NestedAdam update (spec 8.3), global step s, slow period Cv::

    every step:   m <- beta1 m + (1 - beta1) g ;  Q += g^2 ;  n += 1
    if s % Cv == 0:  v <- beta2v v + (1 - beta2v) Q / n ;  k_v += 1 ;  Q <- 0 ;  n <- 0
    mhat = m / (1 - beta1^t)
    vhat = v / (1 - beta2v^k_v)  if k_v >= 1  else  Q / n        (provisional running mean)
    W <- W (1 - lr wd) - lr mhat / (sqrt(vhat) + eps)

beta2v = beta2 (``beta2_mode='plain'``) or beta2^Cv (``'horizon'``, same averaging horizon in steps).
The slow level stores the MEAN OF SQUARES of the skipped gradients, not the square of their mean,
which would underestimate E[g^2] by Var/Cv.
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional

import torch
from torch import Tensor
from torch.optim import Optimizer

from .dmgd import (_GlobalStepMixin, _as_matrix, _check_betas, _check_nonneg, _closure_loss,
                   _check_unit, _grad_of, _validate_adam_fallback, newton_schulz5)

__all__ = [
    "is_due",
    "slow_beta2",
    "nested_adam_update_",
    "m3_update_",
    "NestedAdam",
    "M3",
]


def is_due(step: int, period: int) -> bool:
    """Spec Section 0 clock: a level with period C updates at s = C, 2C, ... (s 1-based)."""
    return step % period == 0


def slow_beta2(beta2: float, period: int, mode: str) -> float:
    """beta2 used by the slow level: beta2 ('plain') or beta2^period ('horizon')."""
    if mode == "plain":
        return beta2
    if mode == "horizon":
        return beta2 ** period
    raise ValueError(f"unknown beta2_mode {mode!r}")


def nested_adam_update_(p: Tensor, g: Tensor, state: dict, *, global_step: int, lr: float,
                        beta1: float, beta2: float, eps: float, weight_decay: float, v_period: int,
                        beta2_mode: str = "plain", variant: str = "nl") -> None:
    """One NestedAdam step on parameter ``p`` in place; ``state`` holds step, exp_avg, exp_avg_sq,
    sq_sum, sq_count, v_updates (created on first use).

    With v_period = 1 the operations are exactly those of torch's single-tensor Adam/AdamW
    (lerp_ for m, mul_/addcmul_ for v, sqrt(v)/sqrt(bc2) + eps, addcdiv_ with -lr/bc1), so the
    trajectory equals torch.optim.Adam(foreach=False) bitwise, not just to rounding.
    """
    if "exp_avg" not in state:
        state["step"] = 0
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["sq_sum"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["sq_count"] = 0
        state["v_updates"] = 0
    # Bias correction of m uses the parameter's own step count t, not the global s of the spec:
    # identical for parameters that get a gradient every step from s = 1, and still correct for a
    # parameter that joins mid-stream (e.g. a new classifier head in a later experience).
    state["step"] += 1
    t = state["step"]
    m, v, q = state["exp_avg"], state["exp_avg_sq"], state["sq_sum"]
    if weight_decay != 0.0:
        p.mul_(1.0 - lr * weight_decay)
    m.lerp_(g, 1.0 - beta1)
    due = is_due(global_step, v_period)
    bc1 = 1.0 - beta1 ** t
    if variant == "s002_literal":
        # S002: v sees only the gradient of due steps (the others are dropped) and is corrected
        # with the global step; v = 0 before the first due step makes those updates lr*mhat/eps.
        if due:
            v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
            state["v_updates"] += 1
        bc2_sqrt = (1.0 - beta2 ** global_step) ** 0.5
        denom = (v.sqrt() / bc2_sqrt).add_(eps)
        p.addcdiv_(m, denom, value=-(lr / bc1))
        return
    if variant != "nl":
        raise ValueError(f"unknown variant {variant!r}")
    b2v = slow_beta2(beta2, v_period, beta2_mode)
    n = state["sq_count"]
    if due:
        if n == 0:
            # Q/n is exactly g^2 here; addcmul_ keeps the Cv = 1 case bitwise equal to torch Adam.
            v.mul_(b2v).addcmul_(g, g, value=1.0 - b2v)
        else:
            q.addcmul_(g, g)
            v.mul_(b2v).add_(q, alpha=(1.0 - b2v) / (n + 1))
            q.zero_()
        state["sq_count"] = 0
        state["v_updates"] += 1
    else:
        q.addcmul_(g, g)
        state["sq_count"] = n + 1
    k_v = state["v_updates"]
    # Mean of squares of the gradients the slow memory has not folded in yet, this one included.
    unseen = g * g if due else q / state["sq_count"]
    if k_v >= 1 and v_period == 1:
        bc2_sqrt = (1.0 - b2v ** k_v) ** 0.5
        denom = (v.sqrt() / bc2_sqrt).add_(eps)
    elif k_v >= 1:
        # Deviation from nl-math.md §8.3 (stability guard): a coordinate whose gradient was ~0 for a
        # whole slow window (a dead ReLU unit coming alive, a class not seen yet) has vhat ~ 0 and
        # would step by lr * mhat / eps; Adam never does, because its v always absorbs the current
        # g^2. Taking max(vhat, unseen) restores that bound. It is a no-op under constant gradients
        # (P8.3), leaves v itself on its slow clock (P8.2), and Cv = 1 takes the branch above (P8.1).
        vhat = v / (1.0 - b2v ** k_v)
        denom = torch.maximum(vhat, unseen).sqrt_().add_(eps)
    else:
        denom = unseen.sqrt().add_(eps)
    p.addcdiv_(m, denom, value=-(lr / bc1))


class NestedAdam(_GlobalStepMixin, Optimizer):
    """Adam whose second moment v lives on a slower level (period ``v_period``), spec Section 8.3.

    m (fast level) updates every step. Squared gradients of the steps between two slow updates are
    accumulated in optimizer state (Avalanche zeroes .grad every iteration) and their mean enters v
    at s = Cv, 2Cv, ... (global step s, never reset). Before the first slow update vhat is the
    running mean of g^2 so early steps are Adam-scaled. With ``v_period=1`` this is exactly
    torch.optim.Adam (weight_decay 0) / torch.optim.AdamW (weight_decay > 0), bitwise.

    Args:
        lr, betas, eps: as torch.optim.Adam. weight_decay: decoupled (AdamW style), every step.
        v_period: Cv >= 1 (spec values 1, 10, 100). beta2_mode: 'plain' (beta2v = beta2, the
            first-listed spec option) | 'horizon' (beta2v = beta2^Cv).
        variant: 'nl' (spec 8.3, default) | 's002_literal' (seed 002 as written: intermediate g^2
            dropped, v corrected with the global step; only for reproducing that seed).
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, *, v_period: int = 10,
                 beta2_mode: str = "plain", variant: str = "nl"):
        defaults = dict(lr=lr, betas=tuple(betas) if isinstance(betas, (tuple, list)) else betas,
                        eps=eps, weight_decay=weight_decay, v_period=v_period,
                        beta2_mode=beta2_mode, variant=variant)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        g = self.param_groups[-1]
        _check_nonneg("lr", g["lr"])
        _check_betas("betas", g["betas"])
        _check_nonneg("eps", g["eps"])
        _check_nonneg("weight_decay", g["weight_decay"])
        vp = g["v_period"]
        if not isinstance(vp, int) or isinstance(vp, bool) or vp < 1:
            raise ValueError(f"Invalid v_period: {vp!r} (int >= 1)")
        if g["beta2_mode"] not in ("plain", "horizon"):
            raise ValueError(f"Invalid beta2_mode {g['beta2_mode']!r}; choose 'plain' or 'horizon'")
        if g["variant"] not in ("nl", "s002_literal"):
            raise ValueError(f"Invalid variant {g['variant']!r}; choose 'nl' or 's002_literal'")

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None):
        loss = _closure_loss(closure)
        s = self._advance_global_step()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                g = _grad_of(p)
                if g is None:
                    continue
                nested_adam_update_(p, g, self.state[p], global_step=s, lr=group["lr"], beta1=b1,
                                    beta2=b2, eps=group["eps"], weight_decay=group["weight_decay"],
                                    v_period=group["v_period"], beta2_mode=group["beta2_mode"],
                                    variant=group["variant"])
        return loss


# --------------------------------------------------------------------------------------------------
# M3
# --------------------------------------------------------------------------------------------------


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
    G = _as_matrix(g)
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


class M3(_GlobalStepMixin, Optimizer):
    """Multi-scale Momentum Muon (NL-arXiv Section 7.2, Algorithm 1, Eq 75; spec 8.4), see m3_update_.

    ``decay='ema'`` (nlbench default, as the aryateja/bachnguyennn reimplementations) or 'literal'
    (plain accumulations as printed). Parameters with ndim < 2 use the AdamW fallback (``adam_*``).
    Caution: without bias correction, sqrt(V) starts at sqrt(1-b2)|g|, so early updates are large
    relative to lr; keep lr small (the default 1e-4 is a guess, not a tuned value).
    """

    def __init__(self, params: Iterable, lr: float = 1e-4,
                 betas: tuple[float, float, float] = (0.9, 0.999, 0.9), alpha: float = 1.0,
                 eps: float = 1e-8, *, slow_period: int = 10, decay: str = "ema", ns_steps: int = 5,
                 weight_decay: float = 0.0, adam_lr: float = 1e-3,
                 adam_betas: tuple[float, float] = (0.9, 0.999), adam_eps: float = 1e-8,
                 adam_weight_decay: float = 0.0):
        defaults = dict(lr=lr, betas=tuple(betas) if isinstance(betas, (tuple, list)) else betas,
                        alpha=alpha, eps=eps, slow_period=slow_period, decay=decay, ns_steps=ns_steps,
                        weight_decay=weight_decay, adam_lr=adam_lr,
                        adam_betas=tuple(adam_betas), adam_eps=adam_eps,
                        adam_weight_decay=adam_weight_decay)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        g = self.param_groups[-1]
        _check_nonneg("lr", g["lr"])
        b = g["betas"]
        if not isinstance(b, tuple) or len(b) != 3:
            raise ValueError(f"Invalid betas: {b!r} (need (beta1, beta2, beta3))")
        for x in b:
            _check_unit("betas", x, closed=True)
        _check_nonneg("alpha", g["alpha"])
        _check_nonneg("eps", g["eps"])
        sp = g["slow_period"]
        if not isinstance(sp, int) or isinstance(sp, bool) or sp < 1:
            raise ValueError(f"Invalid slow_period: {sp!r} (int >= 1)")
        if g["decay"] not in ("ema", "literal"):
            raise ValueError(f"Invalid decay {g['decay']!r}; choose 'ema' or 'literal'")
        if not isinstance(g["ns_steps"], int) or isinstance(g["ns_steps"], bool) or g["ns_steps"] < 1:
            raise ValueError(f"Invalid ns_steps: {g['ns_steps']!r} (int >= 1)")
        _check_nonneg("weight_decay", g["weight_decay"])
        _validate_adam_fallback(g)

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None):
        loss = _closure_loss(closure)
        for p, g, state, group in self._matrix_grads():
            b1, b2, b3 = group["betas"]
            m3_update_(p, g, state, global_step=self.global_step, lr=group["lr"], beta1=b1, beta2=b2, beta3=b3,
                       alpha=group["alpha"], eps=group["eps"], slow_period=group["slow_period"],
                       decay=group["decay"], ns_steps=group["ns_steps"], weight_decay=group["weight_decay"])
        return loss


# --------------------------------------------------------------------------------------------------
# Strategy registration

from nlbench.core.registry import HParam, Parts, register_strategy, trainable  # noqa: E402


@register_strategy(
    "nested-adam",
    description="Adam whose second moment lives on a slower clock (NL §8)",
    family="nested-learning",
    provides_optimizer=True,
    hparams=(
        HParam("lr", 1e-3, "float", "learning rate", low=0.0, high=10.0),
        HParam("v_period", 10, "int", "period of the second-moment clock, in steps", low=1, high=1_000_000),
        HParam("beta2_mode", "plain", "str", "beta2 per slow update, or beta2^period (same horizon)", choices=("plain", "horizon")),
        HParam("weight_decay", 0.0, "float", "L2 weight decay", low=0.0, high=1.0),
    ),
)
def build(ctx, hp):
    return Parts(
        optimizer=lambda model, params=None: NestedAdam(
            trainable(model, params), lr=hp["lr"], v_period=hp["v_period"], beta2_mode=hp["beta2_mode"],
            weight_decay=hp["weight_decay"],
        )
    )
