"""The Conv2d channel-covariance variant of DeepL2GD (nl-math.md section 3; a reconstruction, the
seed code is lost).

A (Cout, Cin, kh, kw) kernel is projected with the channel second moment Gc = Xc^T Xc / N of its
input (N = B*H*W), the conv analogue of W <- W (I - a G) (NL-arXiv Eq 57/121):

    mean_tap:  dKbar = -a Kbar Gc (Kbar = mean over taps), added to every tap ("shift") or applied as
               a per-slice ratio ("scale")
    per_tap:   K[:, :, i, j] <- K[:, :, i, j] (I - a Gc)
    exact:     K_flat <- K_flat (I - a Gp), Gp the Gram of the conv's own patches (ground truth)

The modes and the S000 preset are named in options.py (torch-free).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .options import CONV_APPLIES, CONV_MODES

__all__ = ["conv_channel_gram", "conv_channel_projection_", "conv_patch_gram", "conv_patches"]

_SCALE_EPS = 1e-8  # |Kbar| below this: a ratio would blow up, so mean_tap/scale falls back to shift


@torch.no_grad()
def conv_channel_gram(x: Tensor, centered: bool = False) -> Tensor:
    """Channel second moment ``Gc = Xc^T Xc / N`` of a (B, Cin, H, W) input, N = B*H*W (nl-math.md 3.1).

    ``centered=True`` returns the covariance Gc - mu mu^T.
    """
    if x.dim() == 3:
        x = x.unsqueeze(0)
    c = x.shape[1]
    xc = x.transpose(0, 1).reshape(c, -1)
    n = xc.shape[1]
    g = (xc @ xc.T) / n
    if centered:
        mu = xc.sum(1) / n
        g = g - torch.outer(mu, mu)
    return g


def conv_patches(x: Tensor, conv: nn.Conv2d) -> Tensor:
    """Rows = the (Cin*kh*kw) patches the conv multiplies with its flattened kernel."""
    if x.dim() == 3:
        x = x.unsqueeze(0)
    pad = getattr(conv, "_reversed_padding_repeated_twice", None)
    if pad is not None and any(pad):
        mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
        x = F.pad(x, pad, mode=mode)
    elif not isinstance(conv.padding, str) and any(conv.padding):  # pragma: no cover - very old torch
        x = F.pad(x, (conv.padding[1], conv.padding[1], conv.padding[0], conv.padding[0]))
    p = F.unfold(x, conv.kernel_size, dilation=conv.dilation, padding=0, stride=conv.stride)
    return p.transpose(1, 2).reshape(-1, p.shape[1])


@torch.no_grad()
def conv_patch_gram(x: Tensor, conv: nn.Conv2d, centered: bool = False) -> Tensor:
    """Patch Gram ``Gp = P^T P / N'`` over the conv's own (padded, strided) patches: ground truth of §3."""
    p = conv_patches(x, conv)
    g = (p.T @ p) / p.shape[0]
    if centered:
        mu = p.mean(0)
        g = g - torch.outer(mu, mu)
    return g


@torch.no_grad()
def conv_channel_projection_(
    weight: Tensor,
    gram: Tensor,
    alpha_eff: float,
    mode: str = "mean_tap",
    apply: str = "shift",
    preserve_magnitude: bool = False,
) -> Tensor:
    """In-place projection of a (Cout, Cin, kh, kw) kernel (nl-math.md 3.1).

    mean_tap: dKbar = -a Kbar Gc with Kbar = mean over taps; ``apply="shift"`` adds dKbar to every tap
    (the zero-mean spatial pattern is untouched), ``apply="scale"`` multiplies each slice K[o, c] by
    (Kbar + dKbar)[o, c] / Kbar[o, c] (shift where |Kbar| < 1e-8). per_tap: every tap K[:, :, i, j] <-
    K[:, :, i, j] (I - a Gc). exact: K_flat <- K_flat (I - a Gp) with the patch Gram Gp.
    ``preserve_magnitude`` rescales each output filter back to its old mean |K| (S000's "preserves
    average kernel magnitude"; it cancels the decay part, hence off by default).
    """
    if mode not in CONV_MODES:
        raise ValueError(f"conv mode must be one of {CONV_MODES}, got {mode!r}")
    if apply not in CONV_APPLIES:
        raise ValueError(f"conv apply must be one of {CONV_APPLIES}, got {apply!r}")
    if alpha_eff == 0.0:
        return weight
    old_mag = weight.abs().mean(dim=(1, 2, 3)) if preserve_magnitude else None
    if mode == "exact":
        flat = weight.reshape(weight.shape[0], -1)
        weight.copy_(torch.addmm(flat, flat, gram, alpha=-alpha_eff).view_as(weight))
    elif mode == "per_tap":
        taps = weight.permute(0, 2, 3, 1)  # (Cout, kh, kw, Cin): each tap is a Cout x Cin matrix
        weight.copy_((taps - alpha_eff * (taps @ gram)).permute(0, 3, 1, 2))
    else:
        kbar = weight.mean(dim=(2, 3))
        dk = (kbar @ gram).mul_(-alpha_eff)
        if apply == "shift":
            weight.add_(dk[:, :, None, None])
        else:
            safe = kbar.abs() >= _SCALE_EPS
            ratio = torch.where(safe, (kbar + dk) / torch.where(safe, kbar, torch.ones_like(kbar)), 1.0)
            shift = torch.where(safe, torch.zeros_like(dk), dk)
            weight.mul_(ratio[:, :, None, None]).add_(shift[:, :, None, None])
    if old_mag is not None:
        new_mag = weight.abs().mean(dim=(1, 2, 3))
        factor = torch.where(new_mag > 0, old_mag / torch.where(new_mag > 0, new_mag, 1.0), 1.0)
        weight.mul_(factor[:, None, None, None])
    return weight
