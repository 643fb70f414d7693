"""HOPE's self-modifying memory, chunk-parallel form: the forward `SelfModifyingMemory` runs.

Source: A. Behrouz, M. Razaviyayn, P. Zhong, V. Mirrokni, "Nested Learning", arXiv:2512.24695, §8.1-8.2
Eq 83-93 (chunked training, Eq 90); nl-math.md section 9.2. Same update rules as `hope_memory` (whose
token-by-token-equivalent `forward_reference` it must equal to float tolerance, tests/test_hope_chunked.py):

    S <- mu S - eta_t grad_phi 1/2 ||M_phi(k_t) - vhat_t||^2 ;  phi <- alpha_t phi + S,
    gradients at the chunk-start state, so inside a chunk W_t = A_t W_0 + c_t S_0 - sum_{s<=t} K[t,s] eta_s a_s b_s^T.

Inside a chunk every token is processed at once (the closed form above, as batched matrix products);
only the chunk-start state crosses chunks. That recurrence cannot be parallelised further: the keys,
values and gates of a chunk are the outputs of the self-modified memories at its start.

Layout (why it is fast on CPU): everything is a batch of B*H small matrices with tokens as ROWS (x W^T;
MKL's batched products are 2-3x faster with the 8-token dimension outside than inside). The
first-layer weights (W2 in Eq 89's M(u) = u + W1 silu(W2 u); W for the linear memory) of every box
(mem, k, v (, q)) and the two gate rows are stacked into ONE matrix P (B*H, S*d + 2, d), so a single
product x P^T gives every box's pre-activation and both gate logits for inputs the boxes share (u, k, v),
and a single product updates all of them at the chunk end (they share the key k). The second layers
W1 are a (B*H*S, d, d) batch. The targets sg(M(v)) are computed outside the autograd graph.

At the default options (`hope_chunk_grad.supported`) the loop below is replaced by `ChunkLoop`, the same
maths as one autograd node with a hand-written backward, which takes W1 box-major, (S*B*H, d, d);
every other option set runs this autograd form.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from nlbench.models.hope_chunk_grad import ChunkLoop, supported

__all__ = ["chunked_forward"]


def _coefficients(log_alpha: Tensor, mu: float, lower: Tensor) -> tuple[Tensor, ...]:
    """Per chunk (log_alpha: (N, n)): A (N, n), c (N, n), K (N, n, n) of the module docstring of
    `hope_memory` (same formulas as its `chunk_coefficients`)."""
    cum = log_alpha.cumsum(dim=1)
    D = torch.exp((cum.unsqueeze(-1) - cum.unsqueeze(-2)).masked_fill(~lower, float("-inf")))
    if mu == 0.0:
        return torch.exp(cum), None, D
    n = log_alpha.shape[1]
    idx = torch.arange(n, device=log_alpha.device)
    E = torch.where(lower, mu ** (idx.unsqueeze(1) - idx.unsqueeze(0)).clamp(min=0).to(D.dtype), 0.0)
    return torch.exp(cum), D @ (mu ** (idx + 1).to(D.dtype)), D @ E


def _shift(x: Tensor, first: float) -> Tensor:
    """Row t <- row t-1 along dim 1 (the state BEFORE token t's write), `first` in row 0."""
    return torch.cat([torch.full_like(x[:, :1], first), x[:, :-1]], dim=1)


def _causal_depthwise_conv(conv, z: Tensor) -> Tensor:
    """`conv` (depthwise Conv1d, window W) on z (B, L, D) left-padded by W-1: the same sum as
    conv(pad(z^T))^T, written as W shifted multiply-adds (3x cheaper than Conv1d's CPU kernels here)."""
    W, L = conv.kernel_size[0], z.shape[1]
    w = conv.weight.squeeze(1).t()  # (W, D)
    zp = F.pad(z, (0, 0, W - 1, 0))
    out = torch.addcmul(conv.bias, zp[:, W - 1:], w[W - 1]) if conv.bias is not None else zp[:, W - 1:] * w[W - 1]
    for j in range(W - 1):
        out = torch.addcmul(out, zp[:, j:j + L], w[j])
    return out


def chunked_forward(memory, z: Tensor) -> Tensor:
    """The memory's forward, (B, L, D) -> (B, L, D); `memory` is a `SelfModifyingMemory`."""
    cfg = memory.config
    b, L, D = z.shape
    h, d, c, mu = memory.n_heads, memory.head_dim, cfg.chunk, cfg.inner_momentum
    mlp, gmem, S = cfg.memory == "mlp", cfg.gates == "memory", memory.n_memories
    N, R = b * h, S * d  # batch of small matrices; rows of P for the boxes (the gate rows follow)
    z = _causal_depthwise_conv(memory.conv, z)

    def rows(x: Tensor) -> Tensor:  # (B, L, H*d) -> (B*H, L, d)
        return x.reshape(b, L, h, -1).transpose(1, 2).reshape(N, L, -1)

    def boxes(x: Tensor) -> Tensor:  # (B*H, n, R (+2)) -> (B*H, S, n, d), a view
        return x[..., :R].unflatten(-1, (S, d)).transpose(1, 2)

    def second(x: Tensor) -> Tensor:  # (B*H, S, n, d) pre-activations -> W1 silu(.) per box, same shape
        return torch.bmm(F.silu(x).reshape(N * S, -1, d), W1.transpose(1, 2)).view(N, S, -1, d)

    split = [None] * L
    u_all = rows(z)
    us = u_all.split(c, dim=1)
    q_all = None if cfg.adaptive_q else F.normalize(rows(memory.q(z)), dim=-1)
    qs = split if cfg.adaptive_q else q_all.split(c, dim=1)
    etas = las = split
    if not gmem:  # outer-learned gates depend on z only: every chunk's at once
        etas = rows(cfg.eta_max * torch.sigmoid(memory.eta(z))).squeeze(-1).split(c, dim=1)
        las = rows(F.logsigmoid(memory.alpha(z))).squeeze(-1).split(c, dim=1)
    # Initial fast state (meta-learned, shared by the batch): P = [first layers of every box ; gate rows], W1.
    inits = memory.initial_weights()  # (S, H, d, d) each
    P = [inits[-1].transpose(0, 1).reshape(h, R, d)] + ([memory.init_gates.transpose(0, 1).reshape(h, 2, d)] if gmem else [])
    P = torch.cat(P, dim=1).expand(b, -1, -1, -1).reshape(N, -1, d)
    fast = supported(memory)
    if not mlp:
        W1 = None
    elif fast:  # box-major (S*N, d, d), the layout ChunkLoop runs in
        W1 = inits[0].unsqueeze(1).expand(-1, b, -1, -1, -1).reshape(S * N, d, d)
    else:
        W1 = inits[0].transpose(0, 1).expand(b, -1, -1, -1, -1).reshape(N * S, d, d)
    MP = MW = None
    if mu > 0:
        MP, MW = torch.zeros_like(P), (torch.zeros_like(W1) if mlp else None)
    bias = memory.gate_bias.t().repeat(b, 1).unsqueeze(1) if gmem else None  # (B*H, 1, 2)
    if fast:  # the default options: one autograd node with a hand-written backward
        out = ChunkLoop.apply(u_all, q_all, P, W1, bias, c, cfg.eta_max, S)
        return out.view(b, h, L, d).transpose(1, 2).reshape(b, L, D)
    lowers, outs = {}, []
    for i, (uc, q, eta, log_alpha) in enumerate(zip(us, qs, etas, las)):
        n, last = uc.shape[1], (i + 1) * c >= L
        if n not in lowers:
            lowers[n] = torch.ones(n, n, dtype=torch.bool, device=z.device).tril()
        # k, v (, q) and the gates from the chunk-start state (if not self_modify, k, v, q keep the initial one)
        H0 = torch.bmm(uc, P.transpose(1, 2))  # (B*H, n, R (+2))
        mapped = uc.unsqueeze(1) + (second(boxes(H0)) if mlp else boxes(H0))
        kv = F.normalize(mapped[:, 1:3], dim=-1)
        k, v = kv[:, 0], kv[:, 1]
        if cfg.adaptive_q:
            q = F.normalize(mapped[:, 3], dim=-1)
        if gmem:
            logits = H0[..., R:] + bias
            eta, log_alpha = cfg.eta_max * torch.sigmoid(logits[..., 0]), F.logsigmoid(logits[..., 1])
        if not memory.writes:  # the static network (P9.1): no write ever changes the state
            eta, log_alpha = torch.zeros_like(eta), torch.zeros_like(log_alpha)
        hq = torch.bmm(q, P[:, :d].transpose(1, 2))  # the mem memory's first layer on q at the chunk start
        W1_mem = W1.view(N, S, d, d)[:, 0] if mlp else None
        if cfg.read == "chunk":
            outs.append(q + (torch.bmm(F.silu(hq), W1_mem.transpose(1, 2)) if mlp else hq))
            if last:  # nothing left to write
                break
        # Targets vhat_box = sg(M_box(v)) of every box at once, outside the graph.
        with torch.no_grad():
            Hv = torch.bmm(v, P.transpose(1, 2))
            vhat = v.unsqueeze(1) + ((second(boxes(Hv)) if mlp else boxes(Hv)) if cfg.self_modify else 0.0)
        # Predictions M_box(k) and the per-token gradient factors (a_t, b_t) of every box at once.
        HK = torch.bmm(k, P.transpose(1, 2))
        zk = boxes(HK)
        if mlp:
            s_k = F.silu(zk).reshape(N * S, n, d)
            err = (k.unsqueeze(1) + torch.bmm(s_k, W1.transpose(1, 2)).view(N, S, n, d) - vhat).view(N * S, n, d)
            # silu'(z) = sigmoid(z) (1 + z (1 - sigmoid(z))) = silu(z) + sigmoid(z) (1 - silu(z))
            delta = torch.bmm(err, W1) * torch.addcmul(s_k, torch.sigmoid(zk).reshape(N * S, n, d), 1.0 - s_k)
            if cfg.rank1_dgd:  # Eq 88 literal: the factor (alpha I - eta k k^T) on W2 adds W2 k to its gradient
                delta = delta + zk.reshape(N * S, n, d)
        else:
            err = (k.unsqueeze(1) + zk - vhat).reshape(N * S, n, d)
            delta = err
        A, cco, K = _coefficients(log_alpha, mu, lowers[n])
        if cfg.read == "token":  # o_t = M_mem,t-1(q_t): row t-1 of the closed form
            A_r, c_r = _shift(A, 1.0).unsqueeze(-1), (None if cco is None else _shift(cco, 0.0).unsqueeze(-1))
            Kq = _shift(K, 0.0) * eta.unsqueeze(1)  # (B*H, t, s): K[t-1, s] eta_s

            def state_times(base: Tensor, a: Tensor, b_: Tensor, x: Tensor, mom: Tensor | None) -> Tensor:
                out = A_r * base - torch.bmm(Kq * torch.bmm(x, b_.transpose(1, 2)), a)
                return out if mom is None else out + c_r * torch.bmm(x, mom.transpose(1, 2))

            hq = state_times(hq, delta.view(N, S, n, d)[:, 0], k, q, None if MP is None else MP[:, :d])
            if mlp:
                xq = F.silu(hq)
                hq = state_times(torch.bmm(xq, W1_mem.transpose(1, 2)), err.view(N, S, n, d)[:, 0],
                                 s_k.view(N, S, n, d)[:, 0], xq, None if MW is None else MW.view(N, S, d, d)[:, 0])
            outs.append(q + hq)
            if last:
                break
        # Chunk end: W_n = A_n W_0 + c_n S_0 - sum_s K[n, s] eta_s a_s b_s^T, every box (and gate) at once.
        aP = delta.view(N, S, n, d).transpose(1, 2).reshape(N, n, R)
        if gmem:  # the gate memories regress M_g(k) onto sg(M_g(v)) (the bias cancels)
            aP = torch.cat([aP, HK[..., R:] - Hv[..., R:]], dim=-1)
        w = (K[:, -1] * eta).unsqueeze(-1)  # (B*H, n, 1): K[n, s] eta_s
        A_n = A[:, -1, None, None]
        newP = A_n * P - torch.bmm((aP * w).transpose(1, 2), k)
        if mlp:
            newW = (A_n.unsqueeze(1) * W1.view(N, S, d, d)).view(N * S, d, d) - torch.bmm(
                (err.view(N, S, n, d) * w.unsqueeze(1)).view(N * S, n, d).transpose(1, 2), s_k)
        if MP is not None:
            c_n = cco[:, -1, None, None]
            decay = (eta * mu ** torch.arange(n - 1, -1, -1, device=z.device, dtype=z.dtype)).unsqueeze(-1)  # eta_s mu^(n-1-s)
            newP = newP + c_n * MP
            newMP = (mu ** n) * MP - torch.bmm((aP * decay).transpose(1, 2), k)
            if mlp:
                newW = newW + c_n.repeat_interleave(S, 0) * MW
                newMW = (mu ** n) * MW - torch.bmm((err.view(N, S, n, d) * decay.unsqueeze(1)).view(N * S, n, d).transpose(1, 2), s_k)
        if not cfg.self_modify:  # only the mem memory writes; k, v (, q) and the gates keep their state
            newP = torch.cat([newP[:, :d], P[:, d:]], dim=1)
            newW = torch.cat([newW.view(N, S, d, d)[:, :1], W1.view(N, S, d, d)[:, 1:]], 1).view(N * S, d, d) if mlp else None
            if MP is not None:
                newMP = torch.cat([newMP[:, :d], MP[:, d:]], dim=1)
                newMW = torch.cat([newMW.view(N, S, d, d)[:, :1], MW.view(N, S, d, d)[:, 1:]], 1).view(N * S, d, d) if mlp else None
        P, W1 = newP, (newW if mlp else None)
        if MP is not None:
            MP, MW = newMP, (newMW if mlp else None)
        if not cfg.write_grad:
            P, W1 = P.detach(), (W1.detach() if mlp else None)
            MP, MW = (MP.detach() if MP is not None else None), (MW.detach() if MW is not None else None)
    return torch.cat(outs, dim=1).view(b, h, L, d).transpose(1, 2).reshape(b, L, D)
