"""Pure update math of DeepL2GD and DeepL2GD-EMA (NL-arXiv Eq 57/121; nl-math.md sections 1-2).

Source: A. Behrouz, M. Razaviyayn, P. Zhong, V. Mirrokni, "Nested Learning: The Illusion of Deep
Learning Architectures", arXiv:2512.24695 (NeurIPS 2025). No state and no hooks: every function maps
tensors to tensors (or updates one in place), so the tests check each rule on its own.

    W <- W (I - a G)                 gram_projection_      (G = mean Gram, d_in x d_in)
    W <- W - (a / N) (W X^T) X       lowrank_projection_   (the same when N < d_in, G never formed)
    G~ = [[G, mu], [mu^T, 1]]        augmented_gram        (the bias as a weight on a constant input)
    a = min(alpha, rho / lambda_max) guarded_alpha         (lambda_max: lambda_max_power_iteration)
    Ghat_k = EMA of the G_k          ema_gram_update_      (bias-corrected, section 2)
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "augmented_gram",
    "ema_gram_update_",
    "gram_projection_",
    "guarded_alpha",
    "lambda_max_power_iteration",
    "lowrank_projection_",
]


@torch.no_grad()
def gram_projection_(weight: Tensor, gram: Tensor, alpha_eff: float) -> Tensor:
    """In place ``W <- W (I - alpha_eff G)``; ``gram`` is the (mean) Gram, d_in x d_in."""
    if alpha_eff != 0.0:
        # addmm into a fresh tensor: the output may not alias an operand.
        weight.copy_(torch.addmm(weight, weight, gram, alpha=-alpha_eff))
    return weight


@torch.no_grad()
def lowrank_projection_(
    weight: Tensor,
    x: Tensor,
    alpha_eff: float,
    y: Tensor | None = None,
    count: int | None = None,
) -> Tensor:
    """In place ``W <- W - (alpha_eff / N) (W X^T) X`` without forming the d_in x d_in Gram.

    ``x`` is N x d_in (one input per row), ``y`` optionally the N x d_out product X W^T (the layer's
    output minus its bias, cached in the forward pass: it saves one of the two products). ``count``
    is the N of the mean (defaults to the number of rows).
    """
    if alpha_eff == 0.0:
        return weight
    n = x.shape[0] if count is None else count
    if y is None:
        y = x @ weight.T
    weight.addmm_(y.T, x, alpha=-alpha_eff / n)
    return weight


def augmented_gram(gram: Tensor, mean: Tensor) -> Tensor:
    """``G~ = [[G, mu], [mu^T, 1]]``, the Gram of x~ = [x; 1] (bias as a weight on a constant input)."""
    d = gram.shape[0]
    out = gram.new_empty(d + 1, d + 1)
    out[:d, :d] = gram
    out[:d, d] = mean
    out[d, :d] = mean
    out[d, d] = 1.0
    return out


def guarded_alpha(alpha: float, rho: float, lambda_max: float) -> float:
    """``min(alpha, rho / lambda_max)``: every eigen-direction shrink 1 - a*lambda stays in [1 - rho, 1].

    ``lambda_max <= 0`` (no energy in the inputs) leaves alpha unchanged; alpha = 0 stays 0.
    """
    if alpha == 0.0:
        return 0.0
    if not lambda_max > 0.0:
        return float(alpha)
    return float(min(alpha, rho / lambda_max))


def _power_init(d: int, like: Tensor) -> Tensor:
    # A private generator: the global RNG must not move, or dropout masks would differ from the base
    # optimizer's run (P1.1).
    gen = torch.Generator().manual_seed(0x5EED)
    v = torch.randn(d, generator=gen, dtype=torch.float64).to(dtype=like.dtype, device=like.device)
    return v / v.norm()


@torch.no_grad()
def lambda_max_power_iteration(
    gram: Tensor | None = None,
    *,
    x: Tensor | None = None,
    count: int | None = None,
    v: Tensor | None = None,
    iters: int = 10,
    exact_max_dim: int = 512,
) -> tuple[float, Tensor | None]:
    """Largest eigenvalue of a PSD Gram: exact ``eigvalsh`` when small, else warm-started power iteration.

    Give either ``gram`` (d x d) or ``x`` (N x d rows, G = X^T X / count, never formed: the exact case
    uses the N x N matrix X X^T / count when N < d, which has the same nonzero eigenvalues; the power
    iteration uses G v = X^T (X v) / count). ``v`` is the previous call's eigenvector estimate (warm
    start); the returned vector is the new estimate, or ``v`` unchanged when the exact path ran.
    Power iteration returns the Rayleigh quotient, a lower bound of lambda_max.
    """
    if (gram is None) == (x is None):
        raise ValueError("give exactly one of gram= or x=")
    if gram is not None:
        d = gram.shape[0]
        if d <= exact_max_dim:
            return float(torch.linalg.eigvalsh(gram)[-1]), v

        def matvec(u: Tensor) -> Tensor:
            return gram @ u

        like = gram
    else:
        n_rows, d = x.shape
        n = n_rows if count is None else count
        if min(n_rows, d) <= exact_max_dim:
            small = (x @ x.T) if n_rows < d else (x.T @ x)
            return float(torch.linalg.eigvalsh(small / n)[-1]), v

        def matvec(u: Tensor) -> Tensor:
            return x.T @ (x @ u) / n

        like = x
    if v is None or v.shape != (d,) or not torch.isfinite(v).all() or float(v.norm()) == 0.0:
        v = _power_init(d, like)
    else:
        v = v.to(dtype=like.dtype, device=like.device)
        v = v / v.norm()
    for _ in range(max(1, iters)):
        w = matvec(v)
        nrm = float(w.norm())
        if nrm == 0.0:
            return 0.0, v
        v = w / nrm
    lam = float(v @ matvec(v))
    return lam, v


@torch.no_grad()
def ema_gram_update_(ema: Tensor, gram: Tensor, beta: float, k: int, bias_correction: bool = True) -> Tensor:
    """One EMA step on the Gram memory, in place; ``k`` = number of updates including this one.

    With bias correction the buffer holds Ghat_k = Gbar_k / (1 - beta^k) directly, where
    Gbar_k = beta Gbar_{k-1} + (1 - beta) G_k, Gbar_0 = 0 (nl-math.md 2.1). Algebraically
    Ghat_k = Ghat_{k-1} + w_k (G_k - Ghat_{k-1}) with w_k = (1 - beta) / (1 - beta^k); we store this form
    because w_1 = 1 and lerp(., G, 1) == G exactly, so the first step (any beta) and beta = 0 reproduce
    DeepL2GD bitwise (P2.1), and a repeated batch keeps Ghat == G bitwise (P2.2). Gbar itself is
    Ghat * (1 - beta^k). Without bias correction the buffer is Gbar.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1 (number of updates including this one), got {k}")
    if bias_correction:
        w = (1.0 - beta) / (1.0 - beta**k)
    else:
        w = 1.0 - beta
    return ema.lerp_(gram, w)
