"""Newton-Schulz maps: Muon's quintic NS_5 (the approximate polar factor behind Muon, DMGD's
``sigma_out='ns'`` / ``precond='ns'`` and M3) and the exact cubic polar iteration.

* [Muon] K. Jordan et al., "Muon: An optimizer for hidden layers in neural networks" (2024);
  quintic coefficients (3.4445, -4.7750, 2.0315).
* [NL-arXiv] Behrouz et al., arXiv:2512.24695, Eq 43-44 (orthogonalisation as inner gradient descent).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["NS5_COEFFS", "newton_schulz5", "polar_cubic", "muon_scale"]

NS5_COEFFS = (3.4445, -4.7750, 2.0315)


def newton_schulz5(X: Tensor, steps: int = 5, eps: float = 1e-7,
                   coeffs: tuple[float, float, float] = NS5_COEFFS) -> Tensor:
    """Muon's quintic Newton-Schulz iteration NS_k(X) (approximate polar factor of a 2-D X).

    X <- X / (||X||_F + eps); transposed when d_out > d_in so the Gram matrix is the small one; then
    ``steps`` times: A = X X^T, X <- a X + (b A + c A A) X. The coefficients trade exactness for speed:
    singular values land in roughly [0.7, 1.2], not at 1 (spec P7.4). Computed in X's dtype (the
    reference runs it in bfloat16 on GPU; nlbench keeps float32 so the reductions in P7.3 are exact).
    """
    if X.ndim != 2:
        raise ValueError(f"newton_schulz5 expects a 2-D tensor, got shape {tuple(X.shape)}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    a, b, c = coeffs
    transposed = X.shape[0] > X.shape[1]
    Y = X.T if transposed else X
    Y = Y / (torch.linalg.matrix_norm(Y) + eps)
    for _ in range(steps):
        A = Y @ Y.T
        Bm = torch.addmm(A, A, A, beta=b, alpha=c)  # b A + c A A
        Y = torch.addmm(Y, Bm, Y, beta=a)  # a Y + Bm Y
    return Y.T if transposed else Y


def polar_cubic(X: Tensor, steps: int = 60) -> Tensor:
    """Cubic Newton-Schulz polar iteration O <- 1.5 O - 0.5 O O^T O from O_0 = X / ||X||_F.

    This is the map behind NL-arXiv Eq 43-44 (Muon's orthogonalisation read as inner gradient descent
    on ||O - g||^2 + ||O^T O - I||^2). Converges quadratically to U V^T (SVD X = U S V^T) once all
    singular values are in (0, sqrt(3)); the Frobenius normalisation guarantees that start.
    """
    if X.ndim != 2:
        raise ValueError(f"polar_cubic expects a 2-D tensor, got shape {tuple(X.shape)}")
    transposed = X.shape[0] > X.shape[1]
    O = X.T if transposed else X
    O = O / torch.linalg.matrix_norm(O)
    for _ in range(steps):
        O = 1.5 * O - 0.5 * (O @ O.T) @ O
    return O.T if transposed else O


def muon_scale(d_out: int, d_in: int) -> float:
    """Muon's shape factor sqrt(max(1, d_out/d_in)) (keeps the per-entry RMS of tall updates)."""
    return math.sqrt(max(1.0, d_out / d_in))
