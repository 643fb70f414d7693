"""HOPE: self-modifying associative memories followed by a Continuum Memory System, as a sequence model
(HopeLM) and as an image backbone (HopeViT).

Source: A. Behrouz, M. Razaviyayn, P. Zhong, V. Mirrokni, "Nested Learning: The Illusion of Deep
Learning Architectures", arXiv:2512.24695 (NeurIPS 2025), §8.1-8.3 Eq 83-97 (self-referential Titans,
Hope), on Titans (Behrouz, Zhong, Mirrokni, arXiv:2501.00663) §3. nlbench's definition: nl-math.md
section 9 (decisions in 9.2 and in the table of section 11, rows 8-11). The memory and its update rules
are in `nlbench.models.hope_memory`.

Memory read/write, per head (head width d_h), for one sequence; box in {mem, k, v (, q)}:

    z_t     = CausalDepthwiseConv_4(LN(h_t))                       (window 4, causal)
    M_box(u) = u + W1 silu(W2 u)   (memory="mlp", Eq 89, default) | u + W u (memory="linear")
    q_t     = normalize(W_q z_t)  fixed (default, nl-math.md 11 #8) | normalize(M_q(z_t)) (adaptive_q)
    k_t     = normalize(M_k(z_t)),  v_t = normalize(M_v(z_t))       adaptive projections (Eq 83/86)
    eta_t   = eta_max sigmoid(M_eta(z_t) + b_eta), alpha_t = sigmoid(M_alpha(z_t) + b_alpha)
              gates="memory" (default): M_eta, M_alpha are per-head linear memories R^dh -> R, written
              like the others with their own targets (Eq 83-88); gates="linear": outer-learned w . z_t
              (b_alpha = 4 at init: alpha ~ 0.98, "retain", 11 #11)
    vhat_box,t = sg(M_box(v_t))                                     each memory generates its own value (Eq 84/87)
    read:   o_t = M_mem,t-1(q_t)   (read="token", Eq 83, default) | the chunk-start state (read="chunk")
    write:  S <- mu S - eta_t grad 1/2 ||M_box(k_t) - vhat_box,t||^2 ;  phi_box <- alpha_t phi_box + S
            (mu = inner_momentum, default 0; linear: the delta rule W (alpha I - eta k k^T) - eta (k - vhat) k^T;
            rank1_dgd: Eq 88's factor (alpha I - eta k k^T) also on the MLP's W2)

Chunked (Eq 90): inside a chunk of `chunk` tokens, keys, values, gates and every inner gradient use the
chunk-start state; the writes are the sequential retention(+momentum)+GD steps with gradients frozen there.
The fast state starts from the meta-learned phi_box,0 (nn.Parameters) at every forward, so it is reset per
sequence / image and runs identically in train and eval (nl-math.md 9.3); outer training differentiates
through the unrolled writes (`write_grad=True`). Values are L2-normalised like keys and queries (our
choice; the paper normalises q and k only): with unnormalised values the self-generated targets diverged
(NaN in the first forward of the 32x32 HopeViT). With the linear memory, ||k|| = ||v|| = 1 and eta <= 1 a
write is a contraction; an MLP write is not for every eta (eta = 1 overflows a 256-token sequence), so
the defaults keep eta_max = 0.1.

Hope block (Eq 94-97):  h <- h + W_o o ;  h <- CMS(h)   (CMSSequential, K levels, hidden 2d, on clock
levels 0..K-1; everything else is on level 0).

What still differs from the paper:
* time unit of the CMS clocks: optimizer steps, not tokens (nl-math.md 4.3); the fast memories are reset
  per sequence / image, so across tasks only the CMS clocks and the optimizer can carry knowledge;
* one chunk size for every memory (the paper allows one for M_mem and another for the rest, Eq 90);
* values and (by default) q: values are normalised and q is a fixed projection (text after Eq 85);
  `adaptive_q` gives the adaptive M_q of Eq 79/85;
* the MLP memories' GD + retention is the spec's decision; Eq 88's literal (alpha I - eta k k^T) factor on
  W2 is `rank1_dgd` (off); for the linear memory the delta rule already contains it (Eq 93 double-counts);
* gate memories are linear (scalar output, no residual) with static outer-learned biases, and read the
  head's slice of z_t; the paper does not specify their form;
* momentum is an option (default 0): Table 6 ablates it, Eq 86-96 show none; the MLP activation is SiLU
  (Titans), hidden width d_h; the CMS blocks are nlbench's pre-LN residual MLPs.

HopeViT (nl-math.md 9.4, nlbench's own construction): P x P patches -> Linear + learned positions, a
readout token appended last (zero content + its own position), Hope blocks, logits from LN(h[:, -1]).
The patch count is a multiple of the chunk so the readout token sits alone in the last chunk.

The strategy that builds these for a suite and puts the CMS levels on clocks is `nlbench.strategies.hope`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nlbench.models.cms import CMSSequential
from nlbench.models.hope_memory import HopeConfig, SelfModifyingMemory, chunked_delta_update, delta_rule_write

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
