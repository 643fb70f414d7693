"""NestedAdam: Adam with its second moment on a slower clock.

Sources
-------
* [NL-arXiv] Behrouz et al., arXiv:2512.24695, App. B after Eq 105 (Adam's m and v are two associative
  memories on the same level; putting v on a lower-frequency level is an NL "level" design, not an
  algorithm of the paper).
* [S002] LeSearch AI blog "Reproducing Nested Learning from Scratch" / github.com/aryateja2106/
  nested-learning (the "update_slow" second moment; reproduced only as ``variant='s002_literal'``).
* nlbench math spec ``/work/shared/design/nl-math.md`` Section 8.3 (the definition used here).

Update rule (spec 8.3), global step s, slow period Cv::

    every step:   m <- beta1 m + (1 - beta1) g ;  Q += g^2 ;  n += 1
    if s % Cv == 0:  v <- beta2v v + (1 - beta2v) Q / n ;  k_v += 1 ;  Q <- 0 ;  n <- 0
    mhat = m / (1 - beta1^t)
    vhat = v / (1 - beta2v^k_v)  if k_v >= 1  else  Q / n        (provisional running mean)
    W <- W (1 - lr wd) - lr mhat / (sqrt(vhat) + eps)

beta2v = beta2 (``beta2_mode='plain'``) or beta2^Cv (``'horizon'``, same averaging horizon in steps).
The slow level stores the MEAN OF SQUARES of the skipped gradients, not the square of their mean,
which would underestimate E[g^2] by Var/Cv.

The step skeleton (global step, argument checks) is imported from ``nlbench.strategies.dmgd.base``,
the one place it lives.
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional

import torch
from torch import Tensor
from torch.optim import Optimizer

from ..dmgd.base import (GlobalStepMixin, check_betas, check_nonneg, closure_loss,
                                          grad_of)

__all__ = ["is_due", "slow_beta2", "nested_adam_update_", "NestedAdam"]


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


def slow_vhat(v: Tensor, b2v: float, k_v: int, warm: bool) -> Tensor:
    """The slow level's second-moment estimate: v / (1 - beta2v^k_v), k_v = number of SLOW updates
    (the slow clock's own count, never the global step); a warm-started v (initialised with g_1^2,
    an unbiased start) needs no correction."""
    return v if warm else v / (1.0 - b2v ** k_v)


def nested_adam_update_(p: Tensor, g: Tensor, state: dict, *, global_step: int, lr: float,
                        beta1: float, beta2: float, eps: float, weight_decay: float, v_period: int,
                        beta2_mode: str = "plain", variant: str = "nl", guard: bool = True,
                        warm_start: bool = False, diag: Optional[dict] = None) -> None:
    """One NestedAdam step on parameter ``p`` in place; ``state`` holds step, exp_avg, exp_avg_sq,
    sq_sum, sq_count, v_updates (created on first use).

    With v_period = 1 the operations are exactly those of torch's single-tensor Adam/AdamW
    (lerp_ for m, mul_/addcmul_ for v, sqrt(v)/sqrt(bc2) + eps, addcdiv_ with -lr/bc1), so the
    trajectory equals torch.optim.Adam(foreach=False) bitwise, not just to rounding.

    ``guard``: max(vhat, unseen) (see below); False is spec 8.3 as written. ``warm_start``: v <- g_1^2
    at the parameter's first step and no bias correction afterwards (no provisional phase).
    ``diag``: accumulators filled by ``_diagnose`` (how often the guard acts, step size vs Adam).
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
    warm = warm_start and v_period > 1
    if warm and t == 1:
        # Warm start: the slow memory begins at g_1^2 (as if it had always seen this gradient),
        # so there is no provisional phase and no bias correction to undo.
        sq = g * g
        v.copy_(torch.maximum(sq, sq.mean()))
        state["v_warm"] = True
    warm = warm and state.get("v_warm", False)
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
    vhat = None
    if k_v >= 1 and v_period == 1:
        bc2_sqrt = (1.0 - b2v ** k_v) ** 0.5
        denom = (v.sqrt() / bc2_sqrt).add_(eps)
    elif k_v >= 1 or warm:
        # Stability guard (deviation from nl-math.md §8.3, on by default): a coordinate whose
        # gradient was ~0 for a whole slow window (a dead ReLU unit coming alive, a class not seen
        # yet) has vhat ~ 0 and would step by lr * mhat / eps; Adam never does, because its v
        # always absorbs the current g^2. Taking max(vhat, unseen) restores that bound. It is a
        # no-op under constant gradients (P8.3), leaves v itself on its slow clock (P8.2), and
        # Cv = 1 takes the branch above (P8.1). Its cost, a smaller mean step than Adam's, is
        # measured by the diagnostics.
        vhat = slow_vhat(v, b2v, k_v, warm)
        denom = (torch.maximum(vhat, unseen) if guard else vhat).sqrt().add_(eps)
    else:
        denom = unseen.sqrt().add_(eps)
    if diag is not None:
        _diagnose(diag, state, g, m, denom, vhat, unseen, t, lr / bc1, beta2, eps)
    p.addcdiv_(m, denom, value=-(lr / bc1))


def _diagnose(diag: dict, state: dict, g: Tensor, m: Tensor, denom: Tensor, vhat: Optional[Tensor],
              unseen: Tensor, t: int, scale: float, beta2: float, eps: float) -> None:
    """Accumulate, on the parameter's device (no host sync per step): coordinate-steps where the
    guard can act and where unseen > vhat (it acts, or would act when off), and sum |step| of this
    optimizer and of Adam with the same first moment and its own every-step v (``adam_v``, a shadow
    buffer that never touches the parameter)."""
    if "adam_v" not in state:
        state["adam_v"] = torch.zeros_like(g, memory_format=torch.preserve_format)
    av = state["adam_v"]
    av.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
    adam_denom = (av / (1.0 - beta2 ** t)).sqrt_().add_(eps)
    acc = _accumulators(diag, g.device)
    acc[0] += (m.abs() / denom).sum(dtype=torch.float64) * scale
    acc[1] += (m.abs() / adam_denom).sum(dtype=torch.float64) * scale
    if vhat is not None:
        acc[2] += g.numel()
        acc[3] += (unseen > vhat).sum(dtype=torch.float64)


def _accumulators(diag: dict, device: torch.device) -> Tensor:
    key = str(device)
    if key not in diag:
        diag[key] = torch.zeros(4, dtype=torch.float64, device=device)
    return diag[key]


class NestedAdam(GlobalStepMixin, Optimizer):
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
        guard: True (default): the denominator uses max(vhat, mean g^2 since the last slow update),
            nlbench's stabiliser; False: spec 8.3 as written (vhat alone).
        warm_start: start v at g_1^2 (no provisional phase, no bias correction); with ``guard=False``
            this is the guard-free configuration to compare against (see the strategy's notes).
        diagnose: accumulate the diagnostics (one shadow Adam second moment per parameter).

    ``diagnostics()`` returns ``guard_rate`` (fraction of coordinate-steps, among those with a slow
    estimate, where mean g^2 since the last slow update exceeded vhat: where the guard acted, or would
    have acted when off) and ``step_ratio_to_adam`` (sum over steps and coordinates of |update|
    divided by the same sum for Adam with the same first moment and an every-step v): the two effects
    a nested-adam vs adam comparison mixes.
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, *, v_period: int = 10,
                 beta2_mode: str = "plain", variant: str = "nl", guard: bool = True,
                 warm_start: bool = False, diagnose: bool = True):
        defaults = dict(lr=lr, betas=tuple(betas) if isinstance(betas, (tuple, list)) else betas,
                        eps=eps, weight_decay=weight_decay, v_period=v_period,
                        beta2_mode=beta2_mode, variant=variant, guard=guard, warm_start=warm_start)
        self._diag: Optional[dict] = {} if diagnose else None
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        g = self.param_groups[-1]
        check_nonneg("lr", g["lr"])
        check_betas("betas", g["betas"])
        check_nonneg("eps", g["eps"])
        check_nonneg("weight_decay", g["weight_decay"])
        vp = g["v_period"]
        if not isinstance(vp, int) or isinstance(vp, bool) or vp < 1:
            raise ValueError(f"Invalid v_period: {vp!r} (int >= 1)")
        if g["beta2_mode"] not in ("plain", "horizon"):
            raise ValueError(f"Invalid beta2_mode {g['beta2_mode']!r}; choose 'plain' or 'horizon'")
        if g["variant"] not in ("nl", "s002_literal"):
            raise ValueError(f"Invalid variant {g['variant']!r}; choose 'nl' or 's002_literal'")
        for flag in ("guard", "warm_start"):
            if not isinstance(g[flag], bool):
                raise ValueError(f"Invalid {flag}: {g[flag]!r} (bool)")

    def diagnostics(self) -> dict:
        """JSON-able measurements over the optimizer's life (see the class docstring)."""
        if self._diag is None:
            return {}
        tot = sum((a.detach().cpu() for a in self._diag.values()), torch.zeros(4, dtype=torch.float64))
        step, adam, cells, acted = (float(x) for x in tot)
        return {
            "guard_rate": acted / cells if cells else 0.0,
            "guard_coordinate_steps": int(cells),
            "step_ratio_to_adam": step / adam if adam else 1.0,
            "global_step": self.global_step,
        }

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None):
        loss = closure_loss(closure)
        s = self._advance_global_step()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                g = grad_of(p)
                if g is None:
                    continue
                nested_adam_update_(p, g, self.state[p], global_step=s, lr=group["lr"], beta1=b1,
                                    beta2=b2, eps=group["eps"], weight_decay=group["weight_decay"],
                                    v_period=group["v_period"], beta2_mode=group["beta2_mode"],
                                    variant=group["variant"], guard=group["guard"],
                                    warm_start=group["warm_start"], diag=self._diag)
        return loss
