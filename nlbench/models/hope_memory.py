"""HOPE's self-modifying memory: the inner-loop maths (pure functions) and the `SelfModifyingMemory` module.

Source: A. Behrouz, M. Razaviyayn, P. Zhong, V. Mirrokni, "Nested Learning: The Illusion of Deep
Learning Architectures", arXiv:2512.24695 (NeurIPS 2025), §8.1-8.2 Eq 83-93, on Titans (Behrouz, Zhong,
Mirrokni, arXiv:2501.00663) §3. nlbench's definition: nl-math.md section 9.2 (decisions in section 11,
rows 8-11). The module docstring of `nlbench.models.hope` states the model and what still differs
from the paper; here are the update rules.

Every memory box in {mem, k, v (, q)} is per head a residual map M(u) = u + W u ("linear") or
M(u) = u + W1 silu(W2 u) ("mlp", Eq 89), with fast weights phi. One write with key k, own target
vhat = sg(M(v)), rate eta and retention alpha (inner momentum mu, Titans S_t):

    S <- mu S - eta grad_phi 1/2 ||M_phi(k) - vhat||^2 ;  phi <- alpha phi + S        (mu = 0: GD + retention)

For the linear map this is the delta rule W <- W (alpha I - eta k k^T) - eta (k - vhat) k^T (Eq 92 with
the sign fixed); `rank1_dgd` adds Eq 88's factor (alpha I - eta k k^T) on the MLP's first layer W2.
Chunked (Eq 90): inside a chunk every gradient is taken at the chunk-start state, so each per-token
gradient is an outer product a_t b_t^T and the chunk's recurrence has the closed form

    W_t = A_t W_0 + c_t S_0 - sum_{s<=t} K[t,s] eta_s a_s b_s^T ,   A_t = prod_{r<=t} alpha_r,
    K = D E,  D[t,r] = A_t / A_r (r <= t),  E[r,s] = mu^(r-s) (s <= r),  c_t = sum_r D[t,r] mu^r,

which never materialises a per-token state: a read W_t x needs only b_s . x.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nlbench.models.hope_chunked import chunked_forward

__all__ = ["HopeConfig", "SelfModifyingMemory", "chunk_coefficients", "chunked_delta_update", "delta_rule_write",
           "factored_apply", "memory_map", "memory_write_factors"]


# ==================================================================================================
# Pure inner-loop maths


def delta_rule_write(M: Tensor, k: Tensor, vhat: Tensor, eta: Tensor | float, alpha: Tensor | float) -> Tensor:
    """One delta-rule write on a (non-residual) linear memory: M (alpha I - eta k k^T) + eta vhat k^T.

    M: (..., d_v, d_k); k: (..., d_k); vhat: (..., d_v); eta, alpha: scalars or (...) tensors.
    """
    eta = torch.as_tensor(eta, dtype=M.dtype, device=M.device)
    alpha = torch.as_tensor(alpha, dtype=M.dtype, device=M.device)
    err = (M @ k.unsqueeze(-1)).squeeze(-1) - vhat  # (..., d_v)
    return alpha[..., None, None] * M - eta[..., None, None] * err.unsqueeze(-1) * k.unsqueeze(-2)


def chunked_delta_update(W: Tensor, k: Tensor, vhat: Tensor, eta: Tensor, log_alpha: Tensor, residual: bool = True) -> Tensor:
    """The end state of one chunk of linear-memory writes, gradients at the chunk-start state W.

    W: (B, S, H, d, d); k: (B, n, H, d) unit keys; vhat: (B, S, n, H, d); eta, log_alpha: (B, n, H).
    Returns a_n W - sum_t (a_n / a_t) eta_t (M(k_t) - vhat_t) k_t^T (M(u) = u + W u, or W u).
    """
    pred = torch.einsum("bshij,bnhj->bsnhi", W, k)
    if residual:
        pred = pred + k.unsqueeze(1)
    A, _, K = chunk_coefficients(log_alpha, 0.0)
    b = k.unsqueeze(1).expand(-1, W.shape[1], -1, -1, -1)
    return chunk_end(W, None, A, None, K, eta, pred - vhat, b)[0]


def chunk_coefficients(log_alpha: Tensor, mu: float) -> tuple[Tensor, Tensor, Tensor]:
    """A (B, n, H): A_t = prod_{r<=t} alpha_r; c (B, n, H): weight of the carried momentum S_0 in W_t;
    K (B, H, n, n): weight of token s's write in W_t (see the module docstring)."""
    n = log_alpha.shape[1]
    cum = log_alpha.cumsum(dim=1).transpose(1, 2)  # (B, H, n)
    diff = cum.unsqueeze(-1) - cum.unsqueeze(-2)  # (B, H, t, r): log A_t / A_r
    lower = torch.ones(n, n, dtype=torch.bool, device=log_alpha.device).tril()
    D = torch.exp(diff.masked_fill(~lower, float("-inf")))
    if mu == 0.0:
        K, c = D, torch.zeros_like(cum)
    else:
        idx = torch.arange(n, device=log_alpha.device)
        E = torch.where(lower, mu ** (idx.unsqueeze(1) - idx.unsqueeze(0)).clamp(min=0).to(log_alpha.dtype), 0.0)
        K = D @ E.to(D.dtype)
        c = D @ (mu ** (idx + 1).to(D.dtype))
    return torch.exp(cum).transpose(1, 2), c.transpose(1, 2), K


def chunk_end(W0: Tensor, S0: Tensor | None, A: Tensor, c: Tensor | None, K: Tensor, eta: Tensor, a: Tensor,
              b: Tensor, mu: float = 0.0) -> tuple[Tensor, Tensor | None]:
    """End-of-chunk weights and momentum. W0, S0: (B, S, H, o, i); a: (B, S, n, H, o); b: (B, S, n, H, i)."""
    w = K[:, :, -1, :].transpose(1, 2) * eta  # (B, n, H): K[n, s] eta_s
    W = A[:, -1][:, None, :, None, None] * W0 - torch.einsum("bsnho,bnh,bsnhi->bshoi", a, w, b)
    if S0 is None:
        return W, None
    W = W + c[:, -1][:, None, :, None, None] * S0
    n = a.shape[2]
    decay = mu ** torch.arange(n - 1, -1, -1, device=a.device, dtype=a.dtype)  # mu^(n-s)
    S = (mu ** n) * S0 - torch.einsum("bsnho,bnh,bsnhi->bshoi", a, eta * decay[None, :, None], b)
    return W, S


def factored_apply(W0: Tensor, S0: Tensor | None, A: Tensor, c: Tensor | None, K: Tensor, eta: Tensor, a: Tensor,
                   b: Tensor, x: Tensor) -> Tensor:
    """W_t x_t for every token t of the chunk, with W_t the state given by row t of (A, c, K).
    W0, S0: (B, H, o, i); a: (B, n, H, o); b, x: (B, n, H, i). Returns (B, n, H, o)."""
    out = A.unsqueeze(-1) * torch.einsum("bhoi,bnhi->bnho", W0, x)
    if S0 is not None:
        out = out + c.unsqueeze(-1) * torch.einsum("bhoi,bnhi->bnho", S0, x)
    dots = torch.einsum("bshi,bthi->bhts", b, x)  # b_s . x_t
    return out - torch.einsum("bhts,bhts,bsh,bsho->btho", K, dots, eta, a)


def read_coefficients(A: Tensor, c: Tensor, K: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Row t gives the state BEFORE token t's write, M_{t-1} (Eq 83: y_t = M_mem,t-1(q_t))."""
    A_r = torch.cat([torch.ones_like(A[:, :1]), A[:, :-1]], dim=1)
    c_r = torch.cat([torch.zeros_like(c[:, :1]), c[:, :-1]], dim=1)
    K_r = torch.cat([torch.zeros_like(K[:, :, :1]), K[:, :, :-1]], dim=2)
    return A_r, c_r, K_r


def _silu_grad(z: Tensor) -> Tensor:
    s = torch.sigmoid(z)
    return s * (1.0 + z * (1.0 - s))


def memory_map(phi: tuple[Tensor, ...], u: Tensor) -> Tensor:
    """M(u) per memory and head. phi = (W,) linear: u + W u; (W1, W2) mlp: u + W1 silu(W2 u).
    Weights (B, S, H, o, i); u (B, n, H, d) shared by the S memories or (B, S, n, H, d)."""
    eq = "bshij,bnhj->bsnhi" if u.dim() == 4 else "bshij,bsnhj->bsnhi"
    base = u.unsqueeze(1) if u.dim() == 4 else u
    if len(phi) == 1:
        return base + torch.einsum(eq, phi[0], u)
    hidden = F.silu(torch.einsum(eq, phi[1], u))
    return base + torch.einsum("bshij,bsnhj->bsnhi", phi[0], hidden)


def memory_write_factors(phi: tuple[Tensor, ...], k: Tensor, vhat: Tensor, rank1_dgd: bool = False,
                         ) -> list[tuple[Tensor, Tensor]]:
    """Per-token gradients of 1/2 ||M_phi(k_t) - vhat_t||^2 at phi, as outer products (a_t, b_t), one per
    weight (closed form, checked against autograd). k: (B, n, H, d); vhat: (B, S, n, H, d)."""
    S = phi[0].shape[1]
    kk = k.unsqueeze(1).expand(-1, S, -1, -1, -1)
    if len(phi) == 1:
        return [(memory_map(phi, k) - vhat, kk)]
    W1, W2 = phi
    z = torch.einsum("bshij,bsnhj->bsnhi", W2, kk)
    s = F.silu(z)
    err = kk + torch.einsum("bshij,bsnhj->bsnhi", W1, s) - vhat
    delta = torch.einsum("bshji,bsnhj->bsnhi", W1, err) * _silu_grad(z)
    if rank1_dgd:  # Eq 88 literal: W2 <- W2 (alpha I - eta k k^T) - eta grad, i.e. a += W2 k = z
        delta = delta + z
    return [(err, s), (delta, kk)]


# ==================================================================================================
# The module


@dataclass(frozen=True)
class HopeConfig:
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    chunk: int = 8  # tokens per chunk of the inner loop (keys, values, gates, gradients at the chunk start)
    conv_window: int = 4
    eta_max: float = 0.1
    alpha_bias: float = 4.0  # b_alpha at init: alpha = sigmoid(4) ~ 0.982
    self_modify: bool = True  # k and v memories adaptive and every memory writes its own value
    write_grad: bool = True  # differentiate through the inner writes
    cms_levels: int = 3
    cms_mult: int = 2  # CMS hidden width = cms_mult * d_model
    memory: str = "mlp"  # "mlp": u + W1 silu(W2 u) (Eq 89, the paper's) | "linear": u + W u
    read: str = "token"  # "token": y_t = M_{t-1}(q_t) (Eq 83) | "chunk": every token reads the chunk start
    gates: str = "memory"  # "memory": eta, alpha from self-modified memories (Eq 83) | "linear": outer-learned
    adaptive_q: bool = False  # q from a self-modified memory M_q (Eq 79/85) instead of the fixed W_q
    inner_momentum: float = 0.0  # Titans' surprise momentum mu on every memory's write (0: none)
    rank1_dgd: bool = False  # Eq 88 literal factor (alpha I - eta k k^T) on the MLP's first layer

    def __post_init__(self) -> None:
        if min(self.d_model, self.n_heads, self.n_layers, self.chunk, self.conv_window, self.cms_levels, self.cms_mult) < 1:
            raise ValueError(f"HopeConfig needs positive sizes, got {self}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        if not 0.0 <= self.eta_max <= 1.0:
            raise ValueError(f"eta_max must be in [0, 1] (the write is then a contraction), got {self.eta_max}")
        for name, value, choices in (("memory", self.memory, ("mlp", "linear")), ("read", self.read, ("token", "chunk")),
                                     ("gates", self.gates, ("memory", "linear"))):
            if value not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {value!r}")
        if not 0.0 <= self.inner_momentum < 1.0:
            raise ValueError(f"inner_momentum must be in [0, 1), got {self.inner_momentum}")


class SelfModifyingMemory(nn.Module):
    """The self-modifying memory of a Hope block: (B, L, d) -> (B, L, d) (see the module docstring)."""

    def __init__(self, config: HopeConfig) -> None:
        super().__init__()
        d, h = config.d_model, config.n_heads
        dh = d // h
        self.config = config
        self.n_heads, self.head_dim = h, dh
        self.n_memories = 4 if config.adaptive_q else 3  # mem, k, v (, q)
        self.conv = nn.Conv1d(d, d, config.conv_window, groups=d)  # depthwise; left-padded in forward
        if not config.adaptive_q:
            self.q = nn.Linear(d, d, bias=False)
        if config.gates == "linear":
            self.eta, self.alpha = nn.Linear(d, h), nn.Linear(d, h)
            nn.init.zeros_(self.eta.weight)
            nn.init.zeros_(self.eta.bias)
            nn.init.zeros_(self.alpha.weight)
            nn.init.constant_(self.alpha.bias, config.alpha_bias)
        else:  # M_eta, M_alpha: per-head linear memories R^dh -> R (no residual), fast; static biases
            self.init_gates = nn.Parameter(torch.zeros(2, h, 1, dh))
            self.gate_bias = nn.Parameter(torch.tensor([0.0, config.alpha_bias]).repeat_interleave(h).view(2, h))
        # Meta-learned initial states M_box,0 (residual parts): mem starts at the identity map.
        S = self.n_memories
        if config.memory == "linear":
            init = torch.zeros(S, h, dh, dh)
            nn.init.normal_(init[1:], std=1.0 / math.sqrt(dh))
            self.init_state = nn.Parameter(init)
        else:
            w1, w2 = torch.zeros(S, h, dh, dh), torch.randn(S, h, dh, dh) / math.sqrt(dh)
            nn.init.normal_(w1[1:], std=1.0 / math.sqrt(dh))
            self.init_w1, self.init_w2 = nn.Parameter(w1), nn.Parameter(w2)
        self.writes = True  # False: a static network that reads M_box,0 everywhere (P9.1 reference)

    def initial_weights(self) -> tuple[Tensor, ...]:
        return (self.init_state,) if self.config.memory == "linear" else (self.init_w1, self.init_w2)

    def gates(self, z: Tensor, u: Tensor, G: Tensor | None) -> tuple[Tensor, Tensor]:
        """eta (B, n, H) in [0, eta_max] and log alpha (B, n, H), from the linear gates (full z) or from
        the chunk-start state G (B, 2, H, 1, dh) of the gate memories (head slice u)."""
        if G is None:
            return self.config.eta_max * torch.sigmoid(self.eta(z)), F.logsigmoid(self.alpha(z))
        logits = torch.einsum("bshoi,bnhi->bsnh", G, u) + self.gate_bias[None, :, None, :]
        return self.config.eta_max * torch.sigmoid(logits[:, 0]), F.logsigmoid(logits[:, 1])

    def forward(self, z: Tensor) -> Tensor:
        """The chunk-parallel form (`nlbench.models.hope_chunked`); equals `forward_reference` to float tolerance."""
        return chunked_forward(self, z)

    def forward_reference(self, z: Tensor) -> Tensor:
        """The chunk loop written box by box with the pure functions above: the reference the fast form is tested against."""
        cfg = self.config
        b, n, d = z.shape
        h, dh, c, mu = self.n_heads, self.head_dim, cfg.chunk, cfg.inner_momentum
        z = self.conv(F.pad(z.transpose(1, 2), (cfg.conv_window - 1, 0))).transpose(1, 2)  # causal, (B, L, d)
        u = z.view(b, n, h, dh)
        q_fixed = None if cfg.adaptive_q else F.normalize(self.q(z).view(b, n, h, dh), dim=-1)
        phi = [w.unsqueeze(0).expand(b, *w.shape) for w in self.initial_weights()]  # (B, S, H, o, i) each
        gate_memory = cfg.gates == "memory"
        G = self.init_gates.unsqueeze(0).expand(b, -1, -1, -1, -1) if gate_memory else None
        fast = phi + ([G] if gate_memory else [])
        mom = [torch.zeros_like(w) for w in fast] if mu > 0 else [None] * len(fast)
        outs = []
        for start in range(0, n, c):
            stop = min(start + c, n)
            uc, zc = u[:, start:stop], z[:, start:stop]
            static = tuple(phi) if cfg.self_modify else tuple(w.unsqueeze(0).expand(b, *w.shape) for w in self.initial_weights())
            mapped = memory_map(static, uc)  # (B, S, n, H, dh): M_box(u) for every box
            k, v = F.normalize(mapped[:, 1], dim=-1), F.normalize(mapped[:, 2], dim=-1)
            q = F.normalize(mapped[:, 3], dim=-1) if cfg.adaptive_q else q_fixed[:, start:stop]
            eta, log_alpha = self.gates(zc, uc, G)
            last = stop == n
            if not self.writes or (last and cfg.read == "chunk"):
                outs.append(memory_map(tuple(w[:, :1] for w in phi), q)[:, 0])
                continue
            if cfg.self_modify:
                vhat = memory_map(tuple(phi), v).detach()  # each memory generates its own target
            else:  # only mem is fast; its target is the plain Titans value
                vhat = v.detach().unsqueeze(1).expand(-1, phi[0].shape[1], -1, -1, -1)
            factors = memory_write_factors(tuple(phi), k, vhat, cfg.rank1_dgd and cfg.memory == "mlp")
            if gate_memory:
                # M_g(k) - sg(M_g(v)): each gate memory regresses onto its own output for v (the bias cancels)
                gerr = torch.einsum("bshoi,bnhi->bsnho", G, k) - torch.einsum("bshoi,bnhi->bsnho", G, v).detach()
                factors.append((gerr, k.unsqueeze(1).expand(-1, 2, -1, -1, -1)))
            A, cc, K = chunk_coefficients(log_alpha, mu)
            outs.append(self._read(phi, mom, factors, A, cc, K, eta, q))
            if last:
                continue
            new = [chunk_end(w, s, A, cc, K, eta, a, bb, mu) for w, s, (a, bb) in zip(fast, mom, factors)]
            if not cfg.self_modify:  # k, v (and gate) memories keep their meta-learned state
                new = [(torch.cat([w1[:, :1], w0[:, 1:]], 1), s1) for (w1, s1), w0 in zip(new[:len(phi)], phi)]
                new += [(G, mom[-1])] if gate_memory else []
            fast = [w if cfg.write_grad else w.detach() for w, _ in new]
            mom = [s if (s is None or cfg.write_grad) else s.detach() for _, s in new]
            phi, G = fast[:len(phi)], (fast[-1] if gate_memory else None)
        return torch.cat(outs, dim=1).reshape(b, n, d)

    def _read(self, phi, mom, factors, A, c, K, eta, q) -> Tensor:
        """o_t = M_mem(q_t): from the chunk-start state ('chunk') or from M_{t-1} ('token')."""
        if self.config.read == "chunk":
            return memory_map(tuple(w[:, :1] for w in phi), q)[:, 0]
        A, c, K = read_coefficients(A, c, K)

        def state_times(i: int, x: Tensor) -> Tensor:  # W_{t-1} x_t for weight i of the mem memory
            s = mom[i]
            return factored_apply(phi[i][:, 0], None if s is None else s[:, 0], A, c, K, eta,
                                  factors[i][0][:, 0], factors[i][1][:, 0], x)

        if len(phi) == 1:
            return q + state_times(0, q)
        return q + state_times(0, F.silu(state_times(1, q)))
