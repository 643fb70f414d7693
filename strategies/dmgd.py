"""Deep Momentum Gradient Descent (DMGD), Delta Momentum and the Muon baseline.

Sources
-------
* [NL-arXiv] Behrouz, Razaviyayn, Zhong, Mirrokni, "Nested Learning: The Illusion of Deep Learning
  Architectures", arXiv:2512.24695, Sections 4.2-4.4 (Eq 33-52) and App. B; NeurIPS 2025 Eq 17-24.
* [Muon] K. Jordan et al., "Muon: An optimizer for hidden layers in neural networks" (2024);
  quintic Newton-Schulz coefficients (3.4445, -4.7750, 2.0315).
* nlbench math spec ``/work/shared/design/nl-math.md`` section 7 (the layout of the momentum MLP,
  the objectives and the defaults are nlbench decisions, spec Section 11 row 18).

Update rules (descent form; U = gradient of a 2-D weight W in R^{d_out x d_in}; conv kernels are
viewed as (C_out, C_in*kh*kw); 1-D parameters use an Adam fallback):

* DeepMomentumGD (spec 7.2)::

      m_phi(U) = B + act(U Wb^T) Wa^T                       (row-wise residual MLP, phi = (B, Wa, Wb))
      phi     <- alpha * phi - zeta * grad_phi l(phi; U, V)  (one inner GD step per outer step;
                 by default the shared Wa, Wb use the row-mean gradient, see mlp_reduction)
      W       <- W + lr * sigma_out(m_phi_new(U))             (sigma_out: identity | NS_5 * Muon scale)

  with l = <m_phi(U), U>_F ("dot") or 1/2 ||m_phi(U) - V||_F^2 ("l2"), V = -P(U),
  P in {identity, adam (U / (sqrt(hhat)+1e-8)), ns (NS_5(U))}.

* DeltaMomentum (spec 7.2, NL Eq 48-49)::

      Uhat = U / (||U||_F + 1e-12);  M <- M (alpha I - zeta_p Uhat^T Uhat) - zeta U;  W <- W + M

* Muon (spec 7.2)::

      B <- mu B + g;  W <- W - lr * sqrt(max(1, d_out/d_in)) * NS_5(B)    (Nesterov: NS_5(g + mu B))
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Optional

import torch
from torch import Tensor
from torch.optim import Optimizer

__all__ = [
    "NS5_COEFFS",
    "newton_schulz5",
    "polar_cubic",
    "muon_scale",
    "memory_forward",
    "memory_grads",
    "value_target",
    "dmgd_inner_step_",
    "delta_momentum_update",
    "adam_update_",
    "DeepMomentumGD",
    "DeltaMomentum",
    "Muon",
]

NS5_COEFFS = (3.4445, -4.7750, 2.0315)

_GLOBAL_STEP_KEY = "global_step"


# --------------------------------------------------------------------------------------------------
# pure functions
# --------------------------------------------------------------------------------------------------


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


def memory_forward(B: Tensor, Wa: Optional[Tensor], Wb: Optional[Tensor], U: Tensor,
                   act: Callable[[Tensor], Tensor] = torch.tanh) -> tuple[Tensor, Optional[Tensor]]:
    """m_phi(U) = B + act(U Wb^T) Wa^T (spec 7.2). Returns (m, T = act(U Wb^T)); T is None when the
    memory is linear (no MLP part, ``hidden=0``)."""
    if Wa is None or Wb is None:
        return B, None
    T = act(U @ Wb.T)
    return torch.addmm(B, T, Wa.T), T


def memory_grads(B: Tensor, Wa: Optional[Tensor], Wb: Optional[Tensor], U: Tensor,
                 objective: str, V: Optional[Tensor] = None,
                 ) -> tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
    """Closed-form grad_phi of the inner objective for the tanh memory (checked against autograd).

    dot: l = <m_phi(U), U>_F          -> dl/dm = U
    l2:  l = 1/2 ||m_phi(U) - V||_F^2 -> dl/dm = m_phi(U) - V
    then dl/dB = dl/dm, dl/dWa = (dl/dm)^T T, dl/dWb = ((dl/dm) Wa * (1 - T^2))^T U.
    """
    m, T = memory_forward(B, Wa, Wb, U)
    if objective == "dot":
        R = U
    elif objective == "l2":
        if V is None:
            raise ValueError("objective 'l2' needs the value target V")
        R = m - V
    else:
        raise ValueError(f"unknown objective {objective!r}")
    if T is None:
        return R, None, None
    gWa = R.T @ T
    dZ = (R @ Wa) * (1.0 - T * T)
    gWb = dZ.T @ U
    return R, gWa, gWb


def value_target(U: Tensor, precond: str, sq: Optional[Tensor] = None, count: int = 0,
                 beta2: float = 0.999, eps: float = 1e-8) -> Tensor:
    """V = -P(U) for the l2 objective: identity -> -U; adam -> -U / (sqrt(hhat) + eps) with
    hhat = sq / (1 - beta2^count) (``sq`` already holds the EMA including U); ns -> -NS_5(U)."""
    if precond == "identity":
        return -U
    if precond == "adam":
        if sq is None or count < 1:
            raise ValueError("precond 'adam' needs the squared-gradient EMA and count >= 1")
        hhat = sq / (1.0 - beta2 ** count)
        return -(U / (hhat.sqrt() + eps))
    if precond == "ns":
        return -newton_schulz5(U)
    raise ValueError(f"unknown precond {precond!r}")


def dmgd_inner_step_(phi: list[Optional[Tensor]], grads: list[Optional[Tensor]], alpha: float,
                     zeta: float) -> None:
    """In place phi <- alpha * phi - zeta * grad (NL Eq 50: retention alpha, inner step zeta)."""
    for w, g in zip(phi, grads):
        if w is None:
            continue
        if alpha != 1.0:
            w.mul_(alpha)
        w.add_(g, alpha=-zeta)


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


def _as_matrix(t: Tensor) -> Tensor:
    """View an N-D (N >= 2) tensor as (shape[0], prod(rest)) (conv kernels: (C_out, C_in*kh*kw))."""
    return t.reshape(t.shape[0], -1)


# --------------------------------------------------------------------------------------------------
# shared optimizer plumbing
# --------------------------------------------------------------------------------------------------


def _check_nonneg(name: str, value: float) -> None:
    if (not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value)
            or value < 0):
        raise ValueError(f"Invalid {name}: {value!r} (must be a finite number >= 0)")


def _check_unit(name: str, value: float, closed: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (
        0.0 <= value <= 1.0 if closed else 0.0 <= value < 1.0)
    if not ok:
        raise ValueError(f"Invalid {name}: {value!r} (must be in [0, 1{']' if closed else ')'})")


def _check_betas(name: str, betas) -> None:
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"Invalid {name}: {betas!r} (need a pair)")
    for b in betas:
        _check_unit(name, b)


class _GlobalStepMixin:
    """One optimizer-wide step counter in ``self.state['global_step']`` (spec Section 0: s = 1, 2, ...,
    never reset at experience boundaries). Living in ``self.state`` puts it in state_dict()."""

    state: dict

    @property
    def global_step(self) -> int:
        return int(self.state.get(_GLOBAL_STEP_KEY, 0))

    def _advance_global_step(self) -> int:
        s = self.global_step + 1
        self.state[_GLOBAL_STEP_KEY] = s
        return s

    def _matrix_grads(self, to_adam: Callable[[Tensor, dict], bool] = lambda p, group: p.ndim < 2):
        """Advance the global step, then yield (p, grad, state, group) for every parameter with a
        gradient that takes this optimizer's matrix update; the others (`to_adam`) get the Adam
        fallback here."""
        self._advance_global_step()
        for group in self.param_groups:
            for p in group["params"]:
                g = _grad_of(p)
                if g is None:
                    continue
                state = self.state[p]
                if to_adam(p, group):
                    _adam_fallback(p, g, state, group)
                    continue
                yield p, g, state, group


def _closure_loss(closure: Optional[Callable[[], float]]) -> Optional[float]:
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def _adam_fallback(p: Tensor, g: Tensor, state: dict, group: dict) -> None:
    if "exp_avg" not in state:
        state["step"] = 0
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    state["step"] += 1
    b1, b2 = group["adam_betas"]
    adam_update_(p, g, state["exp_avg"], state["exp_avg_sq"], state["step"], group["adam_lr"], b1, b2,
                 group["adam_eps"], group["adam_weight_decay"])


def _validate_adam_fallback(group: dict) -> None:
    _check_nonneg("adam_lr", group["adam_lr"])
    _check_betas("adam_betas", group["adam_betas"])
    _check_nonneg("adam_eps", group["adam_eps"])
    _check_nonneg("adam_weight_decay", group["adam_weight_decay"])


def _grad_of(p: Tensor) -> Optional[Tensor]:
    if p.grad is None:
        return None
    if p.grad.is_sparse:
        raise RuntimeError("sparse gradients are not supported")
    return p.grad


# --------------------------------------------------------------------------------------------------
# DeepMomentumGD
# --------------------------------------------------------------------------------------------------


class DeepMomentumGD(_GlobalStepMixin, Optimizer):
    """Deep Momentum Gradient Descent (NL-arXiv Eq 50/52; nlbench layout of spec 7.2).

    For every parameter with ndim >= 2 (viewed as U in R^{d_out x d_in}) the momentum is a small
    memory m_phi(U) = B + tanh(U Wb^T) Wa^T, trained by one inner GD step per outer step::

        phi <- alpha * phi - zeta * grad_phi l(phi; U_s, V_s)
        W   <- W + lr * sigma_out(m_phi_new(U_s))

    ``objective='dot'``: l = <m(U), U> (the paper's value "1"); ``objective='l2'``: l = 1/2||m(U) - V||^2
    with V = -P(U), P in identity | adam | ns. sigma_out in identity | ns (NS_5 times Muon's shape
    scale). Reductions (spec 7.3): hidden=0, 'dot', identity, lr=1, zeta=sgd_lr, alpha=mu is heavy-ball
    SGD; hidden=0, 'l2', identity, alpha=1, zeta=1-beta is an EMA momentum; the heavy-ball config with
    sigma_out='ns', lr=muon_lr is Muon without Nesterov.

    Args:
        lr: eta_out, the outer step size (spec default: SGD-like scale 1e-2).
        alpha: retention of phi (1 = no decay). zeta: inner step size (0.1 => EMA 0.9 for the l2 case).
        objective: 'l2' (default) | 'dot'. precond: 'identity' (default) | 'adam' | 'ns' (only with l2).
        sigma_out: 'identity' (default) | 'ns'. hidden: MLP width h (0 = linear memory B only).
        precond_beta2: EMA factor of U^2 for precond='adam'.
        mlp_reduction: 'mean' (default) divides the inner gradients of the SHARED weights Wa, Wb by
            d_out, the number of gradient rows that share them; 'sum' is the spec's literal step
            (same zeta for B, Wa, Wb). Deviation from spec 7.2, see the comment in step().
        weight_decay: decoupled weight decay (W <- W (1 - lr*wd)) on the >= 2-D parameters.
        adam_lr, adam_betas, adam_eps, adam_weight_decay: the Adam(W) fallback for 1-D parameters
            (wd 0 by default, i.e. plain Adam).
        seed: Wb ~ N(0, 1/d_in) is drawn from a private generator seeded with (seed, parameter index),
            so building the optimizer never consumes the global RNG stream.

    The key-less slot B, the MLP weights and the step counters live in ``self.state[p]``; the global
    step in ``self.state['global_step']``.
    """

    _OBJECTIVES = ("dot", "l2")
    _PRECONDS = ("identity", "adam", "ns")
    _SIGMAS = ("identity", "ns")

    def __init__(self, params: Iterable, lr: float = 1e-2, alpha: float = 1.0, zeta: float = 0.1, *,
                 objective: str = "l2", precond: str = "identity", sigma_out: str = "identity",
                 hidden: int = 32, precond_beta2: float = 0.999, mlp_reduction: str = "mean",
                 weight_decay: float = 0.0,
                 adam_lr: float = 1e-3, adam_betas: tuple[float, float] = (0.9, 0.999),
                 adam_eps: float = 1e-8, adam_weight_decay: float = 0.0, seed: int = 0):
        if not isinstance(seed, int):
            raise ValueError(f"Invalid seed: {seed!r}")
        self.seed = seed
        defaults = dict(lr=lr, alpha=alpha, zeta=zeta, objective=objective, precond=precond,
                        sigma_out=sigma_out, hidden=hidden, precond_beta2=precond_beta2,
                        mlp_reduction=mlp_reduction,
                        weight_decay=weight_decay, adam_lr=adam_lr, adam_betas=tuple(adam_betas),
                        adam_eps=adam_eps, adam_weight_decay=adam_weight_decay)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        g = self.param_groups[-1]
        _check_nonneg("lr", g["lr"])
        _check_nonneg("alpha", g["alpha"])
        _check_nonneg("zeta", g["zeta"])
        if g["objective"] not in self._OBJECTIVES:
            raise ValueError(f"Invalid objective {g['objective']!r}; choose from {self._OBJECTIVES}")
        if g["precond"] not in self._PRECONDS:
            raise ValueError(f"Invalid precond {g['precond']!r}; choose from {self._PRECONDS}")
        if g["objective"] == "dot" and g["precond"] != "identity":
            raise ValueError("precond only applies to objective='l2' (the dot objective has value 1)")
        if g["sigma_out"] not in self._SIGMAS:
            raise ValueError(f"Invalid sigma_out {g['sigma_out']!r}; choose from {self._SIGMAS}")
        if not isinstance(g["hidden"], int) or isinstance(g["hidden"], bool) or g["hidden"] < 0:
            raise ValueError(f"Invalid hidden: {g['hidden']!r} (int >= 0)")
        _check_unit("precond_beta2", g["precond_beta2"])
        if g["mlp_reduction"] not in ("mean", "sum"):
            raise ValueError(f"Invalid mlp_reduction {g['mlp_reduction']!r}; choose 'mean' or 'sum'")
        _check_nonneg("weight_decay", g["weight_decay"])
        _validate_adam_fallback(g)

    def _param_index(self, p: Tensor) -> int:
        i = 0
        for group in self.param_groups:
            for q in group["params"]:
                if q is p:
                    return i
                i += 1
        return i

    def _init_state(self, p: Tensor, state: dict, group: dict) -> None:
        M = _as_matrix(p)
        d_out, d_in = M.shape
        state["step"] = 0
        state["B"] = torch.zeros_like(M, memory_format=torch.contiguous_format)
        h = group["hidden"]
        if h > 0:
            gen = torch.Generator(device="cpu").manual_seed(self.seed * 1_000_003 + self._param_index(p))
            Wb = torch.randn(h, d_in, generator=gen, dtype=torch.float32) / math.sqrt(d_in)
            state["Wb"] = Wb.to(device=p.device, dtype=p.dtype)
            state["Wa"] = torch.zeros(d_in, h, device=p.device, dtype=p.dtype)
        if group["objective"] == "l2" and group["precond"] == "adam":
            state["sq"] = torch.zeros_like(M, memory_format=torch.contiguous_format)

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None):
        loss = _closure_loss(closure)
        for p, g, state, group in self._matrix_grads():
            if "B" not in state:
                self._init_state(p, state, group)
            state["step"] += 1
            U = _as_matrix(g)
            B, Wa, Wb = state["B"], state.get("Wa"), state.get("Wb")
            V = None
            if group["objective"] == "l2":
                if group["precond"] == "adam":
                    b2 = group["precond_beta2"]
                    state["sq"].mul_(b2).addcmul_(U, U, value=1.0 - b2)
                V = value_target(U, group["precond"], state.get("sq"), state["step"],
                                 group["precond_beta2"])
            gB, gWa, gWb = memory_grads(B, Wa, Wb, U, group["objective"], V)
            if gWa is not None and group["mlp_reduction"] == "mean":
                # Deviation from spec 7.2 (one zeta for all of phi): each entry of B sees one
                # row's term, but Wa and Wb are shared by all d_out rows, so their curvature
                # grows with d_out. With O(1) values (precond adam/ns) and zeta = 0.1 the literal
                # step diverged to NaN within 20 steps on a 100-128-128-10 MLP; the row mean is
                # stable. B, and hence the reductions P7.1-P7.3, are unaffected.
                gWa = gWa / U.shape[0]
                gWb = gWb / U.shape[0]
            grads = (gB, gWa, gWb)
            dmgd_inner_step_([B, Wa, Wb], list(grads), group["alpha"], group["zeta"])
            out, _ = memory_forward(B, Wa, Wb, U)
            lr = group["lr"]
            if group["sigma_out"] == "ns":
                out = newton_schulz5(out) * muon_scale(*out.shape)
            if group["weight_decay"] != 0.0:
                p.mul_(1.0 - lr * group["weight_decay"])
            p.add_(out.reshape(p.shape), alpha=lr)
        return loss


# --------------------------------------------------------------------------------------------------
# DeltaMomentum
# --------------------------------------------------------------------------------------------------


class DeltaMomentum(_GlobalStepMixin, Optimizer):
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
        _check_nonneg("lr", g["lr"])
        _check_nonneg("alpha", g["alpha"])
        _check_nonneg("zeta_p", g["zeta_p"])
        _check_nonneg("weight_decay", g["weight_decay"])
        _validate_adam_fallback(g)

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None):
        loss = _closure_loss(closure)
        for p, g, state, group in self._matrix_grads():
            if "M" not in state:
                state["step"] = 0
                state["M"] = torch.zeros_like(_as_matrix(p), memory_format=torch.contiguous_format)
            state["step"] += 1
            M = delta_momentum_update(state["M"], _as_matrix(g), group["alpha"], group["lr"],
                                      group["zeta_p"])
            state["M"].copy_(M)
            if group["weight_decay"] != 0.0:
                p.mul_(1.0 - group["lr"] * group["weight_decay"])
            p.add_(M.reshape(p.shape))
        return loss


# --------------------------------------------------------------------------------------------------
# Muon baseline
# --------------------------------------------------------------------------------------------------


class Muon(_GlobalStepMixin, Optimizer):
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
        _check_nonneg("lr", g["lr"])
        _check_unit("momentum", g["momentum"])
        if not isinstance(g["nesterov"], bool):
            raise ValueError(f"Invalid nesterov: {g['nesterov']!r}")
        if g["nesterov"] and g["momentum"] == 0:
            raise ValueError("nesterov requires momentum > 0")
        if not isinstance(g["ns_steps"], int) or isinstance(g["ns_steps"], bool) or g["ns_steps"] < 1:
            raise ValueError(f"Invalid ns_steps: {g['ns_steps']!r} (int >= 1)")
        _check_nonneg("weight_decay", g["weight_decay"])
        if not isinstance(g["use_muon"], bool):
            raise ValueError(f"Invalid use_muon: {g['use_muon']!r}")
        _validate_adam_fallback(g)

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None):
        loss = _closure_loss(closure)
        for p, g, state, group in self._matrix_grads(lambda p, group: p.ndim < 2 or not group["use_muon"]):
            U = _as_matrix(g)
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


# --------------------------------------------------------------------------------------------------
# Strategy registration

from nlbench.core.registry import HParam, Parts, register_strategy, trainable  # noqa: E402


@register_strategy(
    "dmgd",
    description="Deep Momentum GD: momentum as a learned MLP memory of gradients (NL §7.2)",
    family="nested-learning",
    provides_optimizer=True,
    hparams=(
        HParam("lr", 1e-2, "float", "outer learning rate eta_out", low=0.0, high=10.0),
        HParam("alpha", 1.0, "float", "retention of the memory parameters", low=0.0, high=1.0),
        HParam("zeta", 0.1, "float", "inner learning rate of the memory", low=0.0, high=10.0),
        HParam("objective", "l2", "str", "the memory's inner objective", choices=("dot", "l2")),
        HParam("precond", "identity", "str", "value P regressed onto (l2 objective)", choices=("identity", "adam", "ns")),
        HParam("sigma_out", "identity", "str", "output nonlinearity (ns = Newton-Schulz, Muon-like)", choices=("identity", "ns")),
        HParam("hidden", 32, "int", "hidden width of the memory MLP (0 = linear memory)", low=0, high=4096),
    ),
)
def build_dmgd(ctx, hp):
    return Parts(
        optimizer=lambda model, params=None: DeepMomentumGD(
            trainable(model, params), lr=hp["lr"], alpha=hp["alpha"], zeta=hp["zeta"], objective=hp["objective"],
            precond=hp["precond"], sigma_out=hp["sigma_out"], hidden=hp["hidden"],
        )
    )


@register_strategy(
    "delta-momentum",
    description="Delta momentum: L2-regression momentum memory (NL Eq 48-49)",
    family="nested-learning",
    provides_optimizer=True,
    hparams=(
        HParam("lr", 1e-2, "float", "learning rate zeta", low=0.0, high=10.0),
        HParam("alpha", 0.9, "float", "momentum retention", low=0.0, high=1.0),
        HParam("zeta_p", 0.5, "float", "strength of the key projection", low=0.0, high=1.0),
    ),
)
def build_delta_momentum(ctx, hp):
    return Parts(
        optimizer=lambda model, params=None: DeltaMomentum(
            trainable(model, params), lr=hp["lr"], alpha=hp["alpha"], zeta_p=hp["zeta_p"]
        )
    )


@register_strategy(
    "muon",
    description="Muon: momentum orthogonalised by Newton-Schulz (Jordan et al. 2024; NL Eq 42-44)",
    family="nested-learning",
    provides_optimizer=True,
    hparams=(
        HParam("lr", 0.02, "float", "learning rate of matrix parameters", low=0.0, high=10.0),
        HParam("momentum", 0.95, "float", "momentum", low=0.0, high=0.999),
        HParam("nesterov", False, "bool", "Nesterov momentum"),
        HParam("adam_lr", 1e-3, "float", "Adam learning rate for vectors and the classifier head", low=0.0, high=10.0),
    ),
)
def build_muon(ctx, hp):
    def factory(model, params=None):
        params = trainable(model, params)
        # As in Muon's reference use: the classifier head goes to Adam, not Newton-Schulz.
        head = getattr(model, "classifier", None) or getattr(getattr(model, "backbone", None), "classifier", None)
        head_ids = {id(p) for p in head.parameters()} if isinstance(head, torch.nn.Module) else set()
        groups = [
            {"params": [p for p in params if id(p) not in head_ids]},
            {"params": [p for p in params if id(p) in head_ids], "use_muon": False},
        ]
        return Muon([g for g in groups if g["params"]], lr=hp["lr"], momentum=hp["momentum"],
                    nesterov=hp["nesterov"], adam_lr=hp["adam_lr"])

    return Parts(optimizer=factory)
