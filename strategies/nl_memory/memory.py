"""The multi-timescale gradient memory and one parameter's update (port of seed S001, Kareem Farid's
Keras ``NestedLearningOptimizer``, github.com/Kareemfarid/nested-learning-optimizer).

Not an algorithm of the Nested Learning paper (arXiv:2512.24695): the seed's author borrows NL
vocabulary (continuum memory, associative retrieval, levels). The equations follow the nlbench math
spec ``/work/shared/design/nl-math.md`` Section 6, read from the seed's optimizer source.

Update rule per parameter theta at global step s (s = 1 on the first ``step()`` call), raw gradient g::

    every step:  S <- 0.94 S + 0.06 g ; Mm <- 0.994 Mm + 0.006 g ; Lg <- 0.9999 Lg + 0.0001 g
    interval c from the owning module's depth; due(s) = c <= 1 or s < warmup_steps or s % c == 0
    not due:     A += g ; n += 1                                      (nothing else changes)
    due:         e = (A + g) / (n + 1)  (e = g if n = 0) ; A <- 0 ; n <- 0
                 w = softmax(<e, mem_j> / sqrt(numel))  ('attention') | fixed | softmax(b) ('adaptive')
                 h = (1 - mix) e + mix (w_s S + w_m Mm + w_l Lg)
                 v <- beta2 v + (1 - beta2) h^2  (AMSGrad: running max)
                 theta <- theta - lr_s * h / (sqrt(v / bc) + eps)
                 kf_compat=True:  bc = 1 - beta2^(s+1), mix = 0.5, no first moment, c in [1, M+1]
                 kf_compat=False: bc = 1 - beta2^k (k = own update count), mix free, optional
                                  first moment mhat = EMA_beta1(h)/(1 - beta1^k), c in [1, M]

lr_s is the group lr, or the per-epoch sawtooth (warm-up, hold, decay) when steps_per_epoch is set.
The memories, blend and update below are pure functions of the parameter's state; the interval c
comes from ``schedule`` and the state from the optimizer in ``optimizer``.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from .schedule import should_update

__all__ = ["BLENDS", "update_memories_", "blend_weights", "adaptive_logit_delta", "effective_gradient",
           "low_rank", "multi_timescale_update_"]

BLENDS = ("fixed", "adaptive", "attention")


def update_memories_(memory: Tensor, g: Tensor, decays: tuple[float, float, float]) -> None:
    """In place mem_j <- d_j mem_j + (1 - d_j) g for the stacked (short, medium, long) memory of
    shape (3, *g.shape). Runs every step, due or not: the memories see every raw gradient."""
    for j, d in enumerate(decays):
        memory[j].mul_(d).add_(g, alpha=1.0 - d)


def blend_weights(mode: str, e: Tensor, memory: Tensor,
                  fixed: tuple[float, float, float] = (0.1, 0.3, 0.6),
                  logits: Optional[Tensor] = None) -> Tensor:
    """Weights (w_s, w_m, w_l) as a length-3 tensor.

    fixed: the given triple (not renormalised, as in the seed); adaptive: softmax(logits);
    attention: softmax(<vec e, vec mem_j> / sqrt(numel + 1e-8)), e the query.
    """
    if mode == "fixed":
        return torch.tensor(fixed, dtype=memory.dtype, device=memory.device)
    if mode == "adaptive":
        if logits is None:
            raise ValueError("adaptive blend needs logits")
        return torch.softmax(logits, dim=0)
    if mode == "attention":
        scores = memory.reshape(3, -1) @ e.reshape(-1)
        return torch.softmax(scores / math.sqrt(e.numel() + 1e-8), dim=0)
    raise ValueError(f"unknown blend mode {mode!r}; choose from {BLENDS}")


def adaptive_logit_delta(e: Tensor, memory: Tensor) -> Tensor:
    """[<e,S>, <e,Mm>, <e,Lg>] / (||e|| + 1e-8): the seed's (unnormalised in the memories) alignment
    signal; the caller adds adaptive_lr times this to the logits after each applied update."""
    ev = e.reshape(-1)
    return (memory.reshape(3, -1) @ ev) / (torch.linalg.vector_norm(ev) + 1e-8)


def effective_gradient(e: Tensor, memory: Tensor, w: Tensor, mix: float = 0.5) -> Tensor:
    """h = (1 - mix) e + mix (w_s S + w_m Mm + w_l Lg)."""
    retrieved = (w.to(memory.dtype) @ memory.reshape(3, -1)).reshape(e.shape)
    return e * (1.0 - mix) + retrieved * mix


def low_rank(g: Tensor, rank: Optional[int]) -> Tensor:
    """Rank-r SVD truncation of g viewed as (shape[0], -1) (the seed's optional gradient compression
    of what the memories store); identity for rank None or tensors with ndim < 2."""
    if rank is None or g.ndim < 2:
        return g
    G = g.reshape(g.shape[0], -1)
    r = min(rank, *G.shape)
    U, S, Vh = torch.linalg.svd(G, full_matrices=False)
    return ((U[:, :r] * S[:r]) @ Vh[:r]).reshape(g.shape)


def multi_timescale_update_(p: Tensor, g: Tensor, state: dict, group: dict, s: int, lr: float,
                            kf_compat: bool) -> None:
    """One step of parameter ``p`` in place at global step ``s`` with step size ``lr`` (the update rule
    in the module docstring). ``state`` was created by the optimizer (memory, exp_avg_sq and, by the
    group's settings, acc/acc_count, max_exp_avg_sq, blend_logits, exp_avg)."""
    memory = state["memory"]
    update_memories_(memory, low_rank(g, group["compression_rank"]), group["decays"])
    accumulate = "acc" in state
    if not should_update(s, state["interval"], group["warmup_steps"]):
        if accumulate:
            state["acc"].add_(g)
            state["acc_count"] += 1
        return
    if accumulate and state["acc_count"] > 0:
        e = state["acc"].add_(g).div_(state["acc_count"] + 1)  # mean including the current g
    else:
        e = g
    mode = group["blend_mode"]
    w = blend_weights(mode, e, memory, group["fixed_weights"], state.get("blend_logits"))
    h = effective_gradient(e, memory, w, group["mix"])
    state["updates"] += 1
    k = state["updates"]
    b2 = group["beta2"]
    v = state["exp_avg_sq"]
    v.mul_(b2).addcmul_(h, h, value=1.0 - b2)
    if "max_exp_avg_sq" in state:
        torch.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
        v = state["max_exp_avg_sq"]
    # The seed corrects with the GLOBAL step + 1 (its counter is already incremented), whatever
    # the parameter's interval; the fixed version uses the number of updates v has actually seen.
    bc = 1.0 - b2 ** (s + 1) if kf_compat else 1.0 - b2 ** k
    num = h
    if "exp_avg" in state:
        b1 = group["beta1"]
        state["exp_avg"].mul_(b1).add_(h, alpha=1.0 - b1)
        num = state["exp_avg"] / (1.0 - b1 ** k)
    denom = (v / bc).sqrt_().add_(group["eps"])
    p.addcdiv_(num, denom, value=-lr)
    if mode == "adaptive":
        # After the update, as the seed does: this step used softmax of the old logits.
        state["blend_logits"].add_(adaptive_logit_delta(e, memory), alpha=group["adaptive_lr"])
    if accumulate:
        state["acc"].zero_()
        state["acc_count"] = 0
