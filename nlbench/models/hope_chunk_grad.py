"""HOPE's chunk loop as one autograd node with a hand-written backward (the default memory options).

Source: A. Behrouz, M. Razaviyayn, P. Zhong, V. Mirrokni, "Nested Learning", arXiv:2512.24695, §8.1-8.2
Eq 83-93; nl-math.md section 9.2. Same maths as `hope_chunked` (and `SelfModifyingMemory.forward_reference`),
for MLP memories M(u) = u + W1 silu(W2 u), per-token reads (Eq 83), gates from self-modified memories,
no inner momentum, self-modification and differentiated writes on. Per chunk, from the chunk-start state
(P: every box's first layer W2 stacked with the two gate rows; W1: the boxes' second layers):

    k, v = normalize(M_k(u)), normalize(M_v(u)) ;  eta = eta_max sigmoid(g_eta . u + b), log alpha = logsigmoid(g_alpha . u + b)
    per box: err = M(k) - sg(M(v)), delta = (err W1) silu'(W2 k)       (the write's gradient factors)
    read  y_t = q_t + A_{t-1} M_0(q_t) - sum_{s<t} D[t-1,s] eta_s (...)  (o_t = M_mem,t-1(q_t), closed form)
    end   W2' = A_n W2 - sum_s D[n,s] eta_s delta_s k_s^T ,  W1' = A_n W1 - sum_s D[n,s] eta_s err_s silu(W2 k_s)^T

Why: autograd over that loop records ~700 tiny nodes per layer; here the forward runs without a graph,
keeps what the backward needs, and the backward walks the chunks in reverse with the chain rule
written out. Products that share an operand are stacked into one (q against mem's first layer and the
keys; x against mem's second layer and the s_t), the last chunk (no write follows) computes only the
mem box's factors, and elementwise work runs on contiguous blocks.

Cost model (CPU, B*H = 256 matrices of 8-16 x 16 x 16-50): every op streams its operands through L2/L3,
so time goes with ops and bytes touched, not FLOPs. Hence: the second layers W1 and every per-box block
are box-major (box, B*H, ...), so the boxes a product needs (k and v on u; mem and k in the backward)
are one contiguous batch, with no gather copy; gradients accumulate in place (`baddbmm_` into slices of
gW) instead of through concatenated operands; products under 400 multiply-adds per matrix (the gate
rows: 2 x 8 x 16) are avoided, since ATen runs them in a naive batched loop ~10x slower than MKL.
The targets sg(M(v)) are constants of the backward, as in the paper. Checked
against the autograd form by float64 equality, and per chunk by `torch.autograd.gradcheck` with the
targets held fixed (tests/test_hope_chunk_grad.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ChunkLoop", "supported"]


def supported(memory) -> bool:
    """Whether `memory`'s options are the ones `ChunkLoop` implements (else the autograd form runs);
    an attribute `hand_written_backward = False` on the module forces the autograd form (benchmarks)."""
    cfg = memory.config
    return (getattr(memory, "hand_written_backward", True) and cfg.memory == "mlp" and cfg.read == "token"
            and cfg.gates == "memory" and not cfg.adaptive_q
            and cfg.inner_momentum == 0.0 and not cfg.rank1_dgd and cfg.self_modify and cfg.write_grad
            and memory.writes)


def _chunk(u: Tensor, q: Tensor, P: Tensor, W1: Tensor, bias: Tensor, eta_max: float, S: int, last: bool,
           targets: tuple[Tensor, Tensor] | None = None):
    """One chunk's forward (no graph): its reads and (unless last) the next state; `saved` for the backward.
    `targets` (sg(M_box(v)) (S, N, n, d), sg(M_gates(v)) (N, n, 2)) overrides the computed ones (tests: the
    backward treats them as constants, so finite differences must hold them fixed).
    Per-box tensors are box-major, (box, N, tokens, d), like W1 (S*N, d, d): a leading run of boxes (k and v;
    mem and k, the ones that carry a gradient) is then one contiguous (boxes*N, ...) batch for `bmm`, where
    an N-major layout needed a gather copy for every such product. Elementwise work runs on contiguous
    blocks: strided 16-wide rows cost 3-10x more."""
    N, n, d = u.shape
    R = S * d
    Pt = P.transpose(1, 2)
    W1b = W1.view(S, N, d, d)
    H0 = torch.bmm(u, Pt)  # (N, n, R + 2): every box's first layer and both gate logits on u
    # k and v boxes on u (the v box is only a target: no gradient flows through it); the mem box is unused
    z0 = H0[..., d:3 * d].unflatten(-1, (2, d)).permute(2, 0, 1, 3).contiguous()  # (2, N, n, d)
    sig0 = torch.sigmoid(z0)
    s0 = z0.mul_(sig0)
    m = torch.bmm(s0.view(2 * N, n, d), W1[N:3 * N].transpose(1, 2)).view(2, N, n, d).add_(u)
    inv = torch.linalg.vector_norm(m, dim=-1, keepdim=True).clamp_min_(1e-12).reciprocal_()  # F.normalize's 1 / max(|m|, eps)
    kv = m.mul_(inv)  # (2, N, n, d): keys then values
    k, v = kv[0], kv[1]
    sig_g = torch.sigmoid(H0[..., R:] + bias)  # (N, n, 2)
    eta = eta_max * sig_g[..., 0]
    la = F.logsigmoid(H0[..., R + 1] + bias[..., 1])  # not log(sigmoid): that underflows for alpha -> 0
    # Every box on k (predictions) and on v (targets, sg). The last chunk writes nothing: only the mem
    # box's factors (its reads) are needed there.
    Sx = 1 if last else S
    Rx = Sx * d
    Ptx = Pt if not last else Pt[..., :Rx]
    HK, HV = torch.bmm(k, Ptx), torch.bmm(v, Ptx)  # two products: k and v are separate blocks here
    Z = torch.empty(Sx, N, 2 * n, d, dtype=u.dtype, device=u.device)  # per box: k rows, then v rows
    Z[:, :, :n] = HK[..., :Rx].unflatten(-1, (Sx, d)).permute(2, 0, 1, 3)
    Z[:, :, n:] = HV[..., :Rx].unflatten(-1, (Sx, d)).permute(2, 0, 1, 3)
    sigZ = torch.sigmoid(Z)
    sall = Z * sigZ
    W1x = W1[:Sx * N]
    O = torch.bmm(sall.view(Sx * N, 2 * n, d), W1x.transpose(1, 2)).view(Sx, N, 2 * n, d)
    s, zk, sigk = sall[:, :, :n], Z[:, :, :n], sigZ[:, :, :n]
    if targets is None:
        targets = (O[:, :, n:].add_(v), None if last else HV[..., R:])
    err = (O[:, :, :n] + k).sub_(targets[0])  # M(k) - sg(M(v)), (Sx, N, n, d)
    t = sigk - sigk * sigk
    dsk = torch.addcmul(sigk, zk, t)  # silu'
    r = torch.bmm(err.view(Sx * N, n, d), W1x).view(Sx, N, n, d)
    delta = r * dsk
    # Coefficients: D[t, s] = A_t / A_s (s <= t), Q[t, s] = D[t, s] eta_s; reads use row t-1, the end row n-1.
    cum = la.cumsum(dim=1)
    A = torch.exp(cum)
    D = torch.exp((cum.unsqueeze(-1) - cum.unsqueeze(-2)).masked_fill_(_upper(n, u.device), float("-inf")))
    Q = D * eta.unsqueeze(1)
    Kq = F.pad(Q[:, :-1], (0, 0, 1, 0))
    A_r = F.pad(A[:, :-1], (1, 0), value=1.0).unsqueeze(-1)
    # Read o_t = M_mem,t-1(q_t), two layers.
    a1, a2, b2 = delta[0], err[0], s[0]
    C1 = torch.cat([P[:, :d], k], dim=1)  # q's two products in one: mem's first layer and the keys
    hG1 = torch.bmm(q, C1.transpose(1, 2))
    hq, G1 = hG1[..., :d], hG1[..., d:]
    M1 = Kq * G1
    h1 = torch.baddbmm(A_r * hq, M1, a1, alpha=-1.0)
    sig1 = torch.sigmoid(h1)
    x = h1 * sig1
    C2 = torch.cat([W1b[0], b2], dim=1)  # likewise for x: mem's second layer and the s_t
    yG2 = torch.bmm(x, C2.transpose(1, 2))
    y, G2 = yG2[..., :d], yG2[..., d:]
    M2 = Kq * G2
    out = torch.baddbmm(torch.addcmul(q, A_r, y), M2, a2, alpha=-1.0)
    saved = dict(u=u, q=q, P=P, W1=W1, sig0=sig0[0], s0=s0[0], inv=inv[0], k=k, sig_g=sig_g, C1=C1, C2=C2,
                 eta=eta, s=s, dsk=dsk, t=t, zk=zk, r=r, err=err, delta=delta, A=A, D=D, Q=Q, Kq=Kq, A_r=A_r, hq=hq,
                 G1=G1, M1=M1, h1=h1, sig1=sig1, x=x, y=y, G2=G2, M2=M2, targets=targets)
    if last:
        return out, None, None, saved
    ge = HK[..., R:] - targets[1]  # gate memories: M_g(k) - sg(M_g(v))
    aP = torch.cat([delta.permute(1, 2, 0, 3).reshape(N, n, R), ge], dim=-1)
    w = Q[:, -1]  # (N, n): D[n, s] eta_s
    A_n = A[:, -1, None, None]
    newP = torch.baddbmm(A_n * P, (aP * w.unsqueeze(-1)).transpose(1, 2), k, alpha=-1.0)
    V = (err * w.unsqueeze(-1)).view(S * N, n, d)
    newW = torch.baddbmm((W1b * A_n).view(S * N, d, d), V.transpose(1, 2), s.reshape(S * N, n, d), alpha=-1.0)
    saved.update(aP=aP, w=w)
    return out, newP, newW, saved


_UPPER: dict = {}


def _upper(n: int, device) -> Tensor:
    """The strictly upper (n, n) mask, built once per (n, device): D is 0 above the diagonal."""
    key = (n, str(device))
    if key not in _UPPER:
        _UPPER[key] = torch.ones(n, n, dtype=torch.bool, device=device).triu(1)
    return _UPPER[key]


def _chunk_backward(sv: dict, gout: Tensor, gPn: Tensor | None, gWn: Tensor | None, eta_max: float, S: int):
    """Gradients of one chunk: (g_u, g_q, g_P, g_W1, g_bias) from those of its reads and of its end state."""
    u, q, P, W1, k = sv["u"], sv["q"], sv["P"], sv["W1"], sv["k"]
    N, n, d = u.shape
    R = S * d
    err, s, delta = sv["err"], sv["s"], sv["delta"]
    A, Kq, A_r = sv["A"], sv["Kq"], sv["A_r"]
    if gPn is not None:  # chunk end: P' = A_n P - (aP w)^T k, W1' = A_n W1 - (err w)^T s
        A_n = A[:, -1, None, None]
        w, aP = sv["w"], sv["aP"]
        gWb = gWn.view(S, N, d * d)
        gA_n = torch.linalg.vecdot(gPn.view(N, -1), P.view(N, -1)) + torch.linalg.vecdot(gWb, W1.view(S, N, -1)).sum(0)
        gP = A_n * gPn
        gW = (gWn.view(S, N, d, d) * A_n).view(S * N, d, d)
        g_aP = torch.bmm(k, gPn.transpose(1, 2)).mul_(-w.unsqueeze(-1))  # (N, n, R + 2)
        Y = torch.bmm(aP, gPn)
        g_k = Y * -w.unsqueeze(-1)
        gWg = gWn[:2 * N]  # the v box's rows are 0 (see below)
        Ye = torch.bmm(err[:2].reshape(2 * N, n, d), gWg).view(2, N, n, d)
        g_s = Ye * -w.unsqueeze(-1)
        g_err = torch.bmm(s[:2].reshape(2 * N, n, d), gWg.transpose(1, 2)).view(2, N, n, d).mul_(-w.unsqueeze(-1))
        g_w = -(k * Y).sum(-1) - (s[:2] * Ye).sum((0, 3))
        g_delta = g_aP[..., :2 * d].unflatten(-1, (2, d)).permute(2, 0, 1, 3).contiguous()
        g_gate = g_aP[..., R:]
    else:
        gA_n = g_w = g_gate = None
        gP, gW = torch.zeros_like(P), torch.zeros_like(W1)
        g_k = torch.zeros_like(k)
        g_s, g_err, g_delta = torch.zeros_like(err), torch.zeros_like(err), torch.zeros_like(err)
    # The read (two layers, see `_chunk`).
    x, hq, G1, G2, M1, M2 = sv["x"], sv["hq"], sv["G1"], sv["G2"], sv["M1"], sv["M2"]
    g_Ar = (gout * sv["y"]).sum(-1)
    g_y = A_r * gout
    g_M2 = -torch.bmm(gout, err[0].transpose(1, 2))
    g_err[0].baddbmm_(M2.transpose(1, 2), gout, alpha=-1.0)
    g_Kq = g_M2 * G2
    g_yG2 = torch.cat([g_y, g_M2 * Kq], dim=-1)
    g_x = torch.bmm(g_yG2, sv["C2"])
    gC2 = torch.bmm(g_yG2.transpose(1, 2), x)
    gW[:N] += gC2[:, :d]
    g_s[0] += gC2[:, d:]
    sig1 = sv["sig1"]
    g_h1 = g_x * torch.addcmul(sig1, x, 1.0 - sig1)  # silu'(h1) = sig + silu (1 - sig)
    g_Ar = g_Ar + (g_h1 * hq).sum(-1)
    g_hq = A_r * g_h1
    g_M1 = -torch.bmm(g_h1, delta[0].transpose(1, 2))
    g_delta[0].baddbmm_(M1.transpose(1, 2), g_h1, alpha=-1.0)
    g_Kq = g_Kq + g_M1 * G1
    g_hG1 = torch.cat([g_hq, g_M1 * Kq], dim=-1)
    g_q = torch.baddbmm(gout, g_hG1, sv["C1"])
    gC1 = torch.bmm(g_hG1.transpose(1, 2), q)
    gP[:, :d] += gC1[:, :d]
    g_k = g_k + gC1[:, d:]
    # Coefficients: Q's rows 1.. feed the reads (shifted), its last row the end; likewise A.
    g_Q = g_Kq[:, 1:] if g_w is None else torch.cat([g_Kq[:, 1:], g_w.unsqueeze(1)], dim=1)
    g_A = g_Ar[:, 1:] if gA_n is None else torch.cat([g_Ar[:, 1:], gA_n.unsqueeze(1)], dim=1)
    m = g_Q.shape[1]  # n - 1 rows without a chunk end, n with one
    D, Q = sv["D"][:, :m], sv["Q"][:, :m]
    g_eta = (g_Q * D).sum(1)
    T = g_Q * Q
    g_cum = -T.sum(1)
    g_cum[:, :m] += T.sum(2) + g_A * A[:, :m]
    g_la = g_cum.flip(1).cumsum(1).flip(1)
    # Per-box write factors: err = M(k) - vhat, delta = (err W1) silu'(zk), s = silu(zk), zk = W2 k, for
    # the boxes that carry a gradient: mem and k (only mem in the last chunk), the first Sg of the box-major
    # blocks. The v box's state only ever makes v, which enters through the stop-gradient targets alone:
    # its gradient is exactly 0.
    Sg = g_delta.shape[0]
    Rg, W1g = Sg * d, W1[:Sg * N]
    errg, sg, dsk = err[:Sg].view(Sg * N, n, d), s[:Sg].reshape(Sg * N, n, d), sv["dsk"][:Sg]
    g_r = (g_delta * dsk).view(Sg * N, n, d)
    g_err = torch.baddbmm(g_err.view(Sg * N, n, d), g_r, W1g.transpose(1, 2))
    # the weight gradient of both factors, accumulated in place (no concatenated operands)
    gW[:Sg * N].baddbmm_(errg.transpose(1, 2), g_r).baddbmm_(g_err.transpose(1, 2), sg)
    g_k = g_k + g_err.view(Sg, N, n, d).sum(0)
    g_s = torch.baddbmm(g_s.view(Sg * N, n, d), g_err, W1g).view(Sg, N, n, d)
    d2sk = sv["t"][:Sg] * (2.0 + sv["zk"][:Sg] - 2.0 * s[:Sg])  # silu''
    g_zk = torch.addcmul(g_delta * sv["r"][:Sg] * d2sk, g_s, dsk)
    # Columns of HK that carry a gradient: the Sg boxes' (box-major -> N-major, written straight into one
    # block) and, with a chunk end, the two gate columns after them: one product for P's rows.
    g_HK = torch.empty(N, n, Rg + (0 if g_gate is None else 2), dtype=u.dtype, device=u.device)
    g_HK[..., :Rg].view(N, n, Sg, d).copy_(g_zk.permute(1, 2, 0, 3))
    g_k = torch.baddbmm(g_k, g_HK[..., :Rg], P[:, :Rg])
    if g_gate is not None:  # gates on k: 2 x 8 x 16 products take ATen's naive batched kernel (10x slower)
        g_HK[..., Rg:] = g_gate
        g_k.addcmul_(g_gate[..., :1], P[:, R:R + 1]).addcmul_(g_gate[..., 1:], P[:, R + 1:])
    gPG = torch.bmm(g_HK.transpose(1, 2), k)
    gP[:, :Rg] += gPG[:, :Rg]
    if g_gate is not None:
        gP[:, R:] += gPG[:, Rg:]
    # Gates, key normalisation, the k box's map on u, and u's first-layer products.
    sig_g = sv["sig_g"]
    g_gl = torch.stack([g_eta * sv["eta"], g_la], dim=-1).mul_(1.0 - sig_g)
    g_bias = g_gl.sum(1, keepdim=True)
    g_m = torch.addcmul(g_k, k, (k * g_k).sum(-1, keepdim=True), value=-1.0).mul_(sv["inv"])
    sig0, s0 = sv["sig0"], sv["s0"]
    g_H0 = torch.empty(N, n, d + 2, dtype=u.dtype, device=u.device)  # H0's columns d:2d and R: (the k box, gates)
    g_z0 = torch.mul(torch.bmm(g_m, W1[N:2 * N]), torch.addcmul(sig0, s0, 1.0 - sig0), out=g_H0[..., :d])
    g_H0[..., d:] = g_gl
    gW[N:2 * N].baddbmm_(g_m.transpose(1, 2), s0)
    g_u = torch.baddbmm(g_m, g_z0, P[:, d:2 * d]).addcmul_(g_gl[..., :1], P[:, R:R + 1]).addcmul_(g_gl[..., 1:], P[:, R + 1:])
    gPk = torch.bmm(g_H0.transpose(1, 2), u)
    gP[:, d:2 * d] += gPk[:, :d]
    gP[:, R:] += gPk[:, d:]
    return g_u, g_q, gP, gW, g_bias


class ChunkLoop(torch.autograd.Function):
    """(u, q, P0, W1_0, bias) -> reads (N, L, d); N = batch x heads, rows = tokens (see `hope_chunked`).
    u: the conv'd input per head; q: unit queries; P0 (N, S*d + 2, d); W1_0 (S*N, d, d), box-major; bias (N, 1, 2)."""

    @staticmethod
    def forward(ctx, u: Tensor, q: Tensor, P: Tensor, W1: Tensor, bias: Tensor, chunk: int, eta_max: float, S: int):
        # In the parameters' dtype, autocast off: the recurrence is not run in half precision.
        L, dtype = u.shape[1], P.dtype
        u, q, W1, bias = u.to(dtype), q.to(dtype), W1.to(dtype), bias.to(dtype)
        out = torch.empty_like(q)
        saved = []
        with torch.autocast(u.device.type, enabled=False):
            for start in range(0, L, chunk):
                stop = min(start + chunk, L)
                o, P, W1, sv = _chunk(u[:, start:stop], q[:, start:stop], P, W1, bias, eta_max, S, stop == L)
                out[:, start:stop] = o
                saved.append(sv)
        ctx.saved, ctx.chunk, ctx.eta_max, ctx.S = saved, chunk, eta_max, S
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gout: Tensor):
        saved, c = ctx.saved, ctx.chunk
        L = sum(sv["u"].shape[1] for sv in saved)
        gout = gout.to(saved[0]["u"].dtype)  # the engine casts each gradient back to its input's dtype
        g_u, g_q = torch.empty_like(gout), torch.empty_like(gout)
        gP = gW = None
        g_bias = 0.0
        with torch.autocast(gout.device.type, enabled=False):
            for i in range(len(saved) - 1, -1, -1):
                start, stop = i * c, min(i * c + c, L)
                gu_i, gq_i, gP, gW, gb = _chunk_backward(saved[i], gout[:, start:stop], gP, gW, ctx.eta_max, ctx.S)
                g_u[:, start:stop], g_q[:, start:stop] = gu_i, gq_i
                g_bias = g_bias + gb
        return g_u, g_q, gP, gW, g_bias, None, None, None
