"""HOPE: a self-modifying associative memory (delta-rule inner updates, learned eta/alpha gates) followed
by a Continuum Memory System, as a sequence model (HopeLM) and as an image backbone (HopeViT).

Source: A. Behrouz, M. Razaviyayn, P. Zhong, V. Mirrokni, "Nested Learning: The Illusion of Deep
Learning Architectures", arXiv:2512.24695 (NeurIPS 2025), §8.1-8.3 Eq 83-97 (self-referential Titans,
Hope), on Titans (Behrouz, Zhong, Mirrokni, arXiv:2501.00663) §3. nlbench's definition: docs
nl-math.md section 9 (decisions in 9.2 and in the table of section 11, rows 8-11).

Memory read/write, per head (head width d_h), for one sequence; every memory is LINEAR and residual,
M_box(u) = u + W_box u (Eq 89 with an identity activation), box in {mem, k, v}:

    z_t     = CausalDepthwiseConv_4(LN(h_t))                       (window 4, causal)
    q_t     = normalize(W_q z_t)        fixed projection (the only non-adaptive one, nl-math.md 11 #8)
    k_t     = normalize(M_k(z_t)),  v_t = normalize(M_v(z_t))       adaptive projections (Eq 83/86)
    eta_t   = eta_max * sigmoid(w_eta . z_t + b_eta)                learned gates, one scalar per head
    alpha_t = sigmoid(w_alpha . z_t + b_alpha),  b_alpha = 4 at init (alpha ~ 0.98; "retain", 11 #11)
    vhat_box,t = sg(M_box(v_t))                                     each memory generates its own value (Eq 84/87)
    read:   o_t = M_mem(q_t)                                        before any write of its chunk
    write:  W_box <- alpha_t W_box - eta_t (M_box(k_t) - vhat_box,t) k_t^T
            i.e. W <- W (alpha I - eta k k^T) + eta (vhat - k) k^T: the delta rule on the map u -> u + W u,
            with retention alpha acting on the learned part W (the identity path is never forgotten)

The write is the delta rule (nl-math.md 9.2 decision: Eq 92 with the sign fixed; Eq 93 double-counts).
Values are L2-normalised like keys and queries (our choice; the paper normalises q and k only): a memory's
self-generated target M_box(v) grows with ||v|| ||W_box||, and with unnormalised values that feedback
diverged (NaN in the first forward of the 32x32 HopeViT: 8 chunks x 4 blocks). With ||v|| = 1 a write on
W is W (alpha I + eta (v - k) k^T) + eta (v - k) k^T, whose non-trivial eigenvalue alpha + eta (v.k - 1)
is at most alpha < 1.
With alpha = eta = 1 and ||k|| = 1 one write gives M_box(k) = vhat exactly and leaves M_box(u) unchanged
for u orthogonal to k (P9.2). Chunked (Eq 90): inside a chunk of `chunk` tokens, keys, values, targets
and reads use the chunk-start state, and the chunk's writes are the sequential retention-plus-GD steps
with gradients frozen at that state:

    W_{c+1} = a_C W_c - sum_t (a_C / a_t) eta_t (M_c(k_t) - vhat_t) k_t^T,   a_t = prod_{s<=t in chunk} alpha_s

(chunk = 1 is the token-by-token delta rule). The fast state starts from the meta-learned W_box,0 (an
nn.Parameter) at every forward, so it is reset per sequence / image and runs identically in train and
eval (nl-math.md 9.3); outer training differentiates through the unrolled writes (`write_grad=True`).

Hope block (Eq 94-97):  h <- h + W_o o ;  h <- CMS(h)   (CMSSequential, K levels, hidden 2d, on clock
levels 0..K-1; everything else is on level 0). Deviations, all nl-math.md options or decisions:
eta/alpha gates are outer-learned linear maps (the paper's M_eta, M_alpha are memories; here they are
not self-modified); linear rather than 2-layer MLP memories; no inner momentum (Table 6 option, 11 #10).

HopeViT (nl-math.md 9.4, nlbench's own construction): P x P patches -> Linear + learned positions, a
readout token appended last (zero content + its own position), Hope blocks, logits from LN(h[:, -1]).
The patch count is a multiple of the chunk so the readout token sits alone in the last chunk and reads
the memory written from every patch.

The strategy that builds these for a suite and puts the CMS levels on clocks is `nlbench.strategies.hope`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nlbench.models.cms import CMSSequential

__all__ = [
    "HopeBlock",
    "HopeConfig",
    "HopeLM",
    "HopeLMConfig",
    "HopeViT",
    "HopeViTConfig",
    "SelfModifyingMemory",
    "chunked_delta_update",
    "delta_rule_write",
]

N_MEMORIES = 3  # fast memories per head: mem, k, v (index order of the state tensor)


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
    """The writes of one chunk, with every gradient taken at the chunk-start state W.

    W: (B, S, H, d, d) the fast weights of S memories; k: (B, n, H, d) unit keys (shared by the S
    memories); vhat: (B, S, n, H, d) targets; eta, log_alpha: (B, n, H) gates. The memory map is
    u + W u (`residual=True`) or W u. Returns
        a_n W - sum_t (a_n / a_t) eta_t (M(k_t) - vhat_t) k_t^T,   a_t = prod_{s<=t} alpha_s,
    i.e. n sequential steps W <- alpha_t W - eta_t grad_W 1/2 ||M(k_t) - vhat_t||^2 with the gradients
    frozen at W (Titans-style chunking, nl-math.md 9.2 / Eq 90).
    """
    pred = torch.einsum("bshij,bnhj->bsnhi", W, k)  # (B, S, n, H, d)
    if residual:
        pred = pred + k.unsqueeze(1)
    err = pred - vhat
    total = log_alpha.sum(dim=1, keepdim=True)  # (B, 1, H): log a_n
    after = total - log_alpha.cumsum(dim=1)  # (B, n, H): log (a_n / a_t)
    weight = eta * torch.exp(after)  # (B, n, H)
    grad = torch.einsum("bsnhi,bnh,bnhj->bshij", err, weight, k)  # (B, S, H, d, d)
    return torch.exp(total).squeeze(1)[:, None, :, None, None] * W - grad


# ==================================================================================================
# Modules


@dataclass(frozen=True)
class HopeConfig:
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    chunk: int = 8  # tokens per chunk of the inner loop (reads and targets use the chunk-start state)
    conv_window: int = 4
    eta_max: float = 0.1
    alpha_bias: float = 4.0  # b_alpha at init: alpha = sigmoid(4) ~ 0.982
    self_modify: bool = True  # k and v memories adaptive and every memory writes its own value
    write_grad: bool = True  # differentiate through the inner writes
    cms_levels: int = 3
    cms_mult: int = 2  # CMS hidden width = cms_mult * d_model

    def __post_init__(self) -> None:
        if min(self.d_model, self.n_heads, self.n_layers, self.chunk, self.conv_window, self.cms_levels, self.cms_mult) < 1:
            raise ValueError(f"HopeConfig needs positive sizes, got {self}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        if not 0.0 <= self.eta_max <= 1.0:
            raise ValueError(f"eta_max must be in [0, 1] (the write is then a contraction), got {self.eta_max}")


class SelfModifyingMemory(nn.Module):
    """The self-modifying memory of a Hope block: (B, L, d) -> (B, L, d) (see the module docstring)."""

    def __init__(self, config: HopeConfig) -> None:
        super().__init__()
        d, h = config.d_model, config.n_heads
        self.config = config
        self.n_heads, self.head_dim = h, d // h
        self.conv = nn.Conv1d(d, d, config.conv_window, groups=d)  # depthwise; left-padded in forward
        self.q = nn.Linear(d, d, bias=False)
        self.eta = nn.Linear(d, h)
        self.alpha = nn.Linear(d, h)
        nn.init.zeros_(self.eta.weight)
        nn.init.zeros_(self.eta.bias)
        nn.init.zeros_(self.alpha.weight)
        nn.init.constant_(self.alpha.bias, config.alpha_bias)
        # Meta-learned initial states W_box,0 (residual parts) of the mem, k and v memories.
        init = torch.zeros(N_MEMORIES, h, self.head_dim, self.head_dim)
        nn.init.normal_(init[1:], std=1.0 / math.sqrt(self.head_dim))
        self.init_state = nn.Parameter(init)
        self.writes = True  # False: a static network that reads W_box,0 everywhere (P9.1 reference)

    def gates(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """eta (B, L, H) in [0, eta_max] and log alpha (B, L, H) (alpha in (0, 1))."""
        return self.config.eta_max * torch.sigmoid(self.eta(z)), F.logsigmoid(self.alpha(z))

    def forward(self, z: Tensor) -> Tensor:
        b, n, d = z.shape
        h, dh, c = self.n_heads, self.head_dim, self.config.chunk
        z = self.conv(F.pad(z.transpose(1, 2), (self.config.conv_window - 1, 0))).transpose(1, 2)  # causal, (B, L, d)
        u = z.view(b, n, h, dh)
        q = F.normalize(self.q(z).view(b, n, h, dh), dim=-1)
        eta, log_alpha = self.gates(z)
        W = self.init_state.unsqueeze(0).expand(b, -1, -1, -1, -1)  # (B, 3, H, dh, dh)
        outs = []
        for start in range(0, n, c):
            stop = min(start + c, n)
            uc, qc = u[:, start:stop], q[:, start:stop]
            if self.config.self_modify:
                k = F.normalize(uc + torch.einsum("bhij,bnhj->bnhi", W[:, 1], uc), dim=-1)
                v = F.normalize(uc + torch.einsum("bhij,bnhj->bnhi", W[:, 2], uc), dim=-1)
            else:  # only the mem memory is fast; k and v come from the (outer-learned) initial states
                k = F.normalize(uc + torch.einsum("hij,bnhj->bnhi", self.init_state[1], uc), dim=-1)
                v = F.normalize(uc + torch.einsum("hij,bnhj->bnhi", self.init_state[2], uc), dim=-1)
            outs.append(qc + torch.einsum("bhij,bnhj->bnhi", W[:, 0], qc))  # read before the chunk's writes
            if not self.writes or stop == n:
                continue
            if self.config.self_modify:
                vhat = (v.unsqueeze(1) + torch.einsum("bshij,bnhj->bsnhi", W, v)).detach()  # (B, 3, n, H, dh)
            else:
                vhat = torch.zeros_like(v).unsqueeze(1).expand(-1, N_MEMORIES, -1, -1, -1).clone()
                vhat[:, 0] = v.detach()  # plain Titans target for mem; k, v memories keep their state
            new = chunked_delta_update(W, k, vhat, eta[:, start:stop], log_alpha[:, start:stop])
            if not self.config.self_modify:
                new = torch.cat([new[:, :1], W[:, 1:]], dim=1)
            W = new if self.config.write_grad else new.detach()
        return torch.cat(outs, dim=1).reshape(b, n, d)


class HopeBlock(nn.Module):
    """h <- h + W_o Memory(LN(h)); h <- CMS(h) (K pre-LN residual MLP levels)."""

    def __init__(self, config: HopeConfig) -> None:
        super().__init__()
        d = config.d_model
        self.norm = nn.LayerNorm(d)
        self.memory = SelfModifyingMemory(config)
        self.o = nn.Linear(d, d)
        self.cms = CMSSequential(d, config.cms_mult * d, config.cms_levels)

    def forward(self, h: Tensor) -> Tensor:
        h = h + self.o(self.memory(self.norm(h)))
        return self.cms(h)


@dataclass(frozen=True)
class HopeLMConfig(HopeConfig):
    vocab_size: int = 32
    max_len: int = 32


class HopeLM(nn.Module):
    """(B, L) tokens -> (B, L, V) next-token logits: embeddings + positions, Hope blocks, LN, `classifier`."""

    def __init__(self, config: HopeLMConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.embed = nn.Embedding(config.vocab_size, d)
        self.pos = nn.Parameter(torch.zeros(config.max_len, d))
        nn.init.normal_(self.embed.weight, std=0.02)
        nn.init.normal_(self.pos, std=0.02)
        self.blocks = nn.ModuleList([HopeBlock(config) for _ in range(config.n_layers)])
        self.ln_f = nn.LayerNorm(d)
        self.classifier = nn.Linear(d, config.vocab_size)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 2:
            raise ValueError(f"HopeLM expects (B, L) token ids, got shape {tuple(x.shape)}")
        n = x.shape[1]
        if n > self.config.max_len:
            raise ValueError(f"sequence length {n} exceeds max_len={self.config.max_len}")
        h = self.embed(x.long()) + self.pos[:n]  # (B, L, d)
        for block in self.blocks:
            h = block(h)
        return self.classifier(self.ln_f(h))  # (B, L, V)


@dataclass(frozen=True)
class HopeViTConfig(HopeConfig):
    in_channels: int = 3
    image_size: int = 32
    n_classes: int = 10
    patch: int = 0  # 0: 4 for 32x32 images (64 patches, nl-math.md 9.4), else image_size // 4 (16 patches)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.patch_size < 1 or self.image_size % self.patch_size:
            raise ValueError(f"patch={self.patch_size} must divide image_size={self.image_size}")

    @property
    def patch_size(self) -> int:
        if self.patch:
            return self.patch
        return 4 if self.image_size == 32 else max(1, self.image_size // 4)

    @property
    def n_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


class HopeViT(nn.Module):
    """(B, C, S, S) (or (B, S, S)) images -> (B, n_classes): patches + readout token through Hope blocks."""

    def __init__(self, config: HopeViTConfig) -> None:
        super().__init__()
        self.config = config
        d, p = config.d_model, config.patch_size
        self.patch_embed = nn.Linear(config.in_channels * p * p, d)
        self.pos = nn.Parameter(torch.zeros(config.n_patches + 1, d))  # the readout token's position is last
        nn.init.normal_(self.pos, std=0.02)
        self.blocks = nn.ModuleList([HopeBlock(config) for _ in range(config.n_layers)])
        self.ln_f = nn.LayerNorm(d)
        self.classifier = nn.Linear(d, config.n_classes)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(1)
        p = self.config.patch_size
        patches = F.unfold(x, kernel_size=p, stride=p).transpose(1, 2)  # (B, N, C*p*p), raster order
        h = self.patch_embed(patches)  # (B, N, d)
        h = torch.cat([h, h.new_zeros(h.shape[0], 1, h.shape[2])], dim=1) + self.pos  # (B, N+1, d)
        for block in self.blocks:
            h = block(h)
        return self.classifier(self.ln_f(h[:, -1]))  # (B, n_classes)
