"""Deep Momentum Gradient Descent (DMGD): momentum as a small MLP memory of the gradients.

Sources
-------
* [NL-arXiv] Behrouz, Razaviyayn, Zhong, Mirrokni, "Nested Learning: The Illusion of Deep Learning
  Architectures", arXiv:2512.24695, Sections 4.2-4.4 (Eq 33-52) and App. B; NeurIPS 2025 Eq 17-24.
* nlbench math spec ``/work/shared/design/nl-math.md`` section 7 (the layout of the momentum MLP,
  the objectives and the defaults are nlbench decisions, spec Section 11 row 18).

Update rule (descent form; U = gradient of a 2-D weight W in R^{d_out x d_in}; conv kernels are
viewed as (C_out, C_in*kh*kw); 1-D parameters use the Adam fallback of ``base``), spec 7.2::

    m_phi(U) = B + act(U Wb^T) Wa^T                       (row-wise residual MLP, phi = (B, Wa, Wb))
    phi     <- alpha * phi - zeta * grad_phi l(phi; U, V)  (one inner GD step per outer step;
               by default the shared Wa, Wb use the row-mean gradient, see mlp_reduction)
    W       <- W + lr * sigma_out(m_phi_new(U))             (sigma_out: identity | NS_5 * Muon scale)

with l = <m_phi(U), U>_F ("dot") or 1/2 ||m_phi(U) - V||_F^2 ("l2"), V = -P(U),
P in {identity, adam (U / (sqrt(hhat)+1e-8)), ns (NS_5(U))}.

Reads top-down: the memory and its closed-form inner gradient (pure functions), then the optimizer.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Optional

import torch
from torch import Tensor
from torch.optim import Optimizer

from .base import (GlobalStepMixin, as_matrix, check_nonneg, check_unit, closure_loss,
                   validate_adam_fallback)
from .newton_schulz import muon_scale, newton_schulz5

__all__ = ["memory_forward", "memory_grads", "memory_key", "value_target", "dmgd_inner_step_",
           "DeepMomentumGD"]


def memory_forward(B: Tensor, Wa: Optional[Tensor], Wb: Optional[Tensor], U: Tensor,
                   act: Callable[[Tensor], Tensor] = torch.tanh) -> tuple[Tensor, Optional[Tensor]]:
    """m_phi(U) = B + act(U Wb^T) Wa^T (spec 7.2). Returns (m, T = act(U Wb^T)); T is None when the
    memory is linear (no MLP part, ``hidden=0``)."""
    if Wa is None or Wb is None:
        return B, None
    T = act(U @ Wb.T)
    return torch.addmm(B, T, Wa.T), T


def memory_grads(B: Tensor, Wa: Optional[Tensor], Wb: Optional[Tensor], U: Tensor,
                 objective: str, V: Optional[Tensor] = None, key: Optional[Tensor] = None,
                 ) -> tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
    """Closed-form grad_phi of the inner objective for the tanh memory (checked against autograd).

    dot: l = <m_phi(U), U>_F          -> dl/dm = U
    l2:  l = 1/2 ||m_phi(U) - V||_F^2 -> dl/dm = m_phi(U) - V
    then dl/dB = dl/dm, dl/dWa = (dl/dm)^T T, dl/dWb = ((dl/dm) Wa * (1 - T^2))^T K, where the
    memory reads the key K = ``key`` (default U; see ``key_norm``) and the dot objective pairs m with U.
    """
    K = U if key is None else key
    m, T = memory_forward(B, Wa, Wb, K)
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
    gWb = dZ.T @ K
    return R, gWa, gWb


def memory_key(U: Tensor, key_norm: str) -> Tensor:
    """The key the MLP part reads: U ('none') or U / RMS(U) ('rms', scale-free like the normalised
    keys of NL Eq 48-49). With raw gradients tanh(U Wb^T) is at gradient scale, so the MLP part's
    inner step and output are second order in |U| and the memory is plain momentum in practice."""
    if key_norm == "none":
        return U
    if key_norm == "rms":
        return U / (U.pow(2).mean().sqrt() + 1e-12)
    raise ValueError(f"unknown key_norm {key_norm!r}")


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


class DeepMomentumGD(GlobalStepMixin, Optimizer):
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
        key_norm: 'none' (default here, the spec's m(U)) | 'rms': the MLP part reads U / RMS(U); the
            strategy ``dmgd`` uses 'rms' (see ``memory_key``). B, hence P7.1-P7.3, is unaffected.
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
                 key_norm: str = "none", weight_decay: float = 0.0,
                 adam_lr: float = 1e-3, adam_betas: tuple[float, float] = (0.9, 0.999),
                 adam_eps: float = 1e-8, adam_weight_decay: float = 0.0, seed: int = 0):
        if not isinstance(seed, int):
            raise ValueError(f"Invalid seed: {seed!r}")
        self.seed = seed
        defaults = dict(lr=lr, alpha=alpha, zeta=zeta, objective=objective, precond=precond,
                        sigma_out=sigma_out, hidden=hidden, precond_beta2=precond_beta2,
                        mlp_reduction=mlp_reduction, key_norm=key_norm,
                        weight_decay=weight_decay, adam_lr=adam_lr, adam_betas=tuple(adam_betas),
                        adam_eps=adam_eps, adam_weight_decay=adam_weight_decay)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        g = self.param_groups[-1]
        check_nonneg("lr", g["lr"])
        check_nonneg("alpha", g["alpha"])
        check_nonneg("zeta", g["zeta"])
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
        check_unit("precond_beta2", g["precond_beta2"])
        if g["mlp_reduction"] not in ("mean", "sum"):
            raise ValueError(f"Invalid mlp_reduction {g['mlp_reduction']!r}; choose 'mean' or 'sum'")
        if g["key_norm"] not in ("none", "rms"):
            raise ValueError(f"Invalid key_norm {g['key_norm']!r}; choose 'none' or 'rms'")
        check_nonneg("weight_decay", g["weight_decay"])
        validate_adam_fallback(g)

    def _param_index(self, p: Tensor) -> int:
        i = 0
        for group in self.param_groups:
            for q in group["params"]:
                if q is p:
                    return i
                i += 1
        return i

    def _init_state(self, p: Tensor, state: dict, group: dict) -> None:
        M = as_matrix(p)
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
        loss = closure_loss(closure)
        for p, g, state, group in self._matrix_grads():
            if "B" not in state:
                self._init_state(p, state, group)
            state["step"] += 1
            U = as_matrix(g)
            B, Wa, Wb = state["B"], state.get("Wa"), state.get("Wb")
            V = None
            if group["objective"] == "l2":
                if group["precond"] == "adam":
                    b2 = group["precond_beta2"]
                    state["sq"].mul_(b2).addcmul_(U, U, value=1.0 - b2)
                V = value_target(U, group["precond"], state.get("sq"), state["step"],
                                 group["precond_beta2"])
            K = memory_key(U, group["key_norm"]) if Wa is not None else U
            gB, gWa, gWb = memory_grads(B, Wa, Wb, U, group["objective"], V, key=K)
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
            out, _ = memory_forward(B, Wa, Wb, K)
            lr = group["lr"]
            if group["sigma_out"] == "ns":
                out = newton_schulz5(out) * muon_scale(*out.shape)
            if group["weight_decay"] != 0.0:
                p.mul_(1.0 - lr * group["weight_decay"])
            p.add_(out.reshape(p.shape), alpha=lr)
        return loss
