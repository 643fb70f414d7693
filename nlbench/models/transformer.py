"""The multi-clock tiny Transformer language model of nl-math.md section 5.1 (S000 Listing 4).

tokens x in {0..V-1}^L ; h0 = E[x] + P[0..L-1]                 (E: V x d, P: L x d, learned)
block (pre-LN, causal):  h = h + W_o MHA(LN1(h)) with W_q, W_k, W_v, W_o (d x d)
                         h = h + FFN(LN2(h)),  FFN: d -> 4d -> d, GELU
logits = classifier(LN_f(h))                                    (d -> V, untied from E)
defaults: V = 32, L = 32, d = 64, heads = 4, layers = 2

Clock wiring (S000 §5 "Figure 5", nl-math.md 5.1), declared with `clock_level` attributes that
`nlbench.strategies.cms.wiring.wire_clocks(model, periods)` reads: W_q, W_k, W_v, E, P, every LayerNorm and
the head on level 0 (C = 1), W_o on level 1 (C = 8), the FFN (both Linears and biases) on level 2
(C = 64). With `ffn="cms"` the FFN is a CMSSequential of K residual blocks on levels 0..K-1 (its
hidden widths split 4d between them) and W_o stays on level 1.

The head is a Linear called `classifier`, like every nlbench backbone. The model maps (B, L) token ids
to (B, L, V) next-token logits.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nlbench.models.cms import CMSSequential


FFN_KINDS = ("mlp", "cms")


@dataclass(frozen=True)
class TransformerConfig:
    vocab_size: int = 32  # V; also the number of output classes
    max_len: int = 32  # L, the longest sequence (learned positions)
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    ffn_mult: int = 4  # FFN hidden width = ffn_mult * d_model (split over the levels for ffn="cms")
    ffn: str = "mlp"  # "mlp" (one clocked FFN) or "cms" (a CMSSequential of cms_levels blocks)
    cms_levels: int = 3
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if min(self.vocab_size, self.max_len, self.d_model, self.n_heads, self.n_layers, self.ffn_mult, self.cms_levels) < 1:
            raise ValueError(f"TransformerConfig needs positive sizes, got {self}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        if self.ffn not in FFN_KINDS:
            raise ValueError(f"ffn must be one of {FFN_KINDS}, got {self.ffn!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def with_cms(self, levels: int) -> "TransformerConfig":
        return dataclasses.replace(self, ffn="cms", cms_levels=levels)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with separate d x d projections q, k, v (level 0) and o (level 1)."""

    def __init__(self, d: int, n_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.q = nn.Linear(d, d)
        self.k = nn.Linear(d, d)
        self.v = nn.Linear(d, d)
        self.o = nn.Linear(d, d)
        self.o.clock_level = 1
        self.dropout = dropout

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        h = self.n_heads

        def split(t: Tensor) -> Tensor:  # (B, L, d) -> (B, H, L, d/H)
            return t.view(b, n, h, d // h).transpose(1, 2)

        a = F.scaled_dot_product_attention(split(self.q(x)), split(self.k(x)), split(self.v(x)), is_causal=True,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.o(a.transpose(1, 2).reshape(b, n, d))  # (B, L, d)


class FeedForward(nn.Sequential):
    """d -> hidden -> d with GELU; the whole FFN is one clock level (level 2 by default)."""

    def __init__(self, d: int, hidden: int, level: int = 2, dropout: float = 0.0) -> None:
        layers: list[nn.Module] = [nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        super().__init__(*layers)
        self.clock_level = level


class TransformerBlock(nn.Module):
    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        d = config.d_model
        self.ln1 = nn.LayerNorm(d)
        self.attn = CausalSelfAttention(d, config.n_heads, config.dropout)
        self.cms = config.ffn == "cms"
        if self.cms:
            hidden = max(1, math.ceil(config.ffn_mult * d / config.cms_levels))
            self.ffn = CMSSequential(d, hidden, config.cms_levels, dropout=config.dropout)  # pre-LN residual blocks
        else:
            self.ln2 = nn.LayerNorm(d)
            self.ffn = FeedForward(d, config.ffn_mult * d, level=2, dropout=config.dropout)

    def forward(self, h: Tensor) -> Tensor:
        h = h + self.attn(self.ln1(h))
        if self.cms:
            return self.ffn(h)  # each CMS block is h + MLP(LN(h))
        return h + self.ffn(self.ln2(h))


class TinyTransformer(nn.Module):
    """(B, L) int tokens -> (B, L, V) logits; the pre-LN causal Transformer of nl-math.md 5.1."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.embed = nn.Embedding(config.vocab_size, d)
        self.pos = nn.Parameter(torch.zeros(config.max_len, d))
        self.blocks = nn.ModuleList([TransformerBlock(config) for _ in range(config.n_layers)])
        self.ln_f = nn.LayerNorm(d)
        self.classifier = nn.Linear(d, config.vocab_size)
        nn.init.normal_(self.embed.weight, std=0.02)
        nn.init.normal_(self.pos, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 2:
            raise ValueError(f"TinyTransformer expects (B, L) token ids, got shape {tuple(x.shape)}")
        n = x.shape[1]
        if n > self.config.max_len:
            raise ValueError(f"sequence length {n} exceeds max_len={self.config.max_len}")
        h = self.embed(x.long()) + self.pos[:n]  # (B, L, d)
        for block in self.blocks:
            h = block(h)  # (B, L, d)
        return self.classifier(self.ln_f(h))  # (B, L, V)
