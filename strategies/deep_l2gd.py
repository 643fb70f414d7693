"""DeepL2GD: per-batch Gram projection of the weight update, then a plain SGD/Adam/AdamW step.

Source: A. Behrouz, M. Razaviyayn, P. Zhong, V. Mirrokni, "Nested Learning: The Illusion of Deep
Learning Architectures", arXiv:2512.24695 (NeurIPS 2025). Replacing the dot-product inner objective
of backprop by an L2 regression gives Delta Gradient Descent, W <- W (I - alpha x x^T) - beta delta x^T
(NL-arXiv Eq 57 / App. C Eq 121). The name "DeepL2GD", the decoupled strength alpha, the minibatch Gram
and the order "project, then base step" come from the S000 article (P. Chatterjee, "Nested Learning
in Practice"). nlbench's definition is docs nl-math.md section 1 (linear layers), section 2 (EMA of
Grams) and section 3 (Conv2d channel-covariance variant, a reconstruction: the seed code is lost).

Update rule for every participating layer, at every step where it is due (every step by default):

    G      = (sum over the forward calls since its last update of X^T X) / (number of rows N)
    a      = min(alpha, rho / lambda_max(G))                 (rho guard; lambda_max = 0 -> alpha)
    W     <- W (I - a G)                                      (projection, weight only)
    W     <- base_step(W, g)                                  (g = W.grad, taken at the PRE-projection W)

With SGD(lr=eta) this is W_{s+1} = W_s (I - alpha G_s) - eta g_s, i.e. one SGD step on
L + (alpha / (2 eta)) (1/N) sum_n ||W x_n||^2 (a data-dependent "output energy" decay).

What is cheap here (nl-math.md 1.3): when fewer rows than input features were seen since the last
update (N < d_in), W G = (Y - b)^T X / N is one weight-gradient-sized product of the layer's own cached
output and input; the d_in x d_in Gram is never formed and lambda_max comes from the N x N matrix
X X^T / N (same nonzero spectrum). Otherwise X^T X is accumulated in the forward hook.

Public objects:
    DeepL2GD(model, ...)            section 1 (+ section 3 with conv=True)
    DeepL2GDEMA(model, beta=0.99)   section 2
    pure helpers used by the tests: gram_projection_, lowrank_projection_, augmented_gram,
    guarded_alpha, lambda_max_power_iteration, ema_gram_update_, conv_channel_gram, conv_patch_gram,
    conv_channel_projection_, CONV_PRESETS.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.adam import adam as _adam_functional
from torch.optim.sgd import sgd as _sgd_functional

try:  # same dtype torch.optim.Adam uses for its CPU "step" scalar (so state_dicts are interchangeable)
    from torch.optim.optimizer import _get_scalar_dtype
except ImportError:  # pragma: no cover - older torch
    def _get_scalar_dtype() -> torch.dtype:
        return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32

__all__ = [
    "CONV_PRESETS",
    "DeepL2GD",
    "DeepL2GDEMA",
    "augmented_gram",
    "conv_channel_gram",
    "conv_channel_projection_",
    "conv_patch_gram",
    "ema_gram_update_",
    "find_head",
    "gram_projection_",
    "guarded_alpha",
    "lambda_max_power_iteration",
    "lowrank_projection_",
]

BASES = ("sgd", "adam", "adamw")
GRAM_NORMS = ("none", "trace")
CONV_MODES = ("mean_tap", "per_tap", "exact")
CONV_APPLIES = ("shift", "scale")
# S000's four surviving bullets read as: mean over taps, rescale the kernel, keep its mean magnitude.
# This is our guess at the seed's behaviour (nl-math.md 3.1, 11 #15), kept for fidelity runs only.
CONV_PRESETS: dict[str, dict[str, Any]] = {
    "s000_guess": {"conv_mode": "mean_tap", "conv_apply": "scale", "preserve_magnitude": True},
}
_SCALE_EPS = 1e-8  # |Kbar| below this: a ratio would blow up, so mean_tap/scale falls back to shift


# --------------------------------------------------------------------------------------------------
# Pure functions (tested directly)
# --------------------------------------------------------------------------------------------------


@torch.no_grad()
def gram_projection_(weight: Tensor, gram: Tensor, alpha_eff: float) -> Tensor:
    """In place ``W <- W (I - alpha_eff G)``; ``gram`` is the (mean) Gram, d_in x d_in."""
    if alpha_eff != 0.0:
        # addmm into a fresh tensor: the output may not alias an operand.
        weight.copy_(torch.addmm(weight, weight, gram, alpha=-alpha_eff))
    return weight


@torch.no_grad()
def lowrank_projection_(
    weight: Tensor,
    x: Tensor,
    alpha_eff: float,
    y: Tensor | None = None,
    count: int | None = None,
) -> Tensor:
    """In place ``W <- W - (alpha_eff / N) (W X^T) X`` without forming the d_in x d_in Gram.

    ``x`` is N x d_in (one input per row), ``y`` optionally the N x d_out product X W^T (the layer's
    output minus its bias, cached in the forward pass: it saves one of the two products). ``count``
    is the N of the mean (defaults to the number of rows).
    """
    if alpha_eff == 0.0:
        return weight
    n = x.shape[0] if count is None else count
    if y is None:
        y = x @ weight.T
    weight.addmm_(y.T, x, alpha=-alpha_eff / n)
    return weight


def augmented_gram(gram: Tensor, mean: Tensor) -> Tensor:
    """``G~ = [[G, mu], [mu^T, 1]]``, the Gram of x~ = [x; 1] (bias as a weight on a constant input)."""
    d = gram.shape[0]
    out = gram.new_empty(d + 1, d + 1)
    out[:d, :d] = gram
    out[:d, d] = mean
    out[d, :d] = mean
    out[d, d] = 1.0
    return out


def guarded_alpha(alpha: float, rho: float, lambda_max: float) -> float:
    """``min(alpha, rho / lambda_max)``: every eigen-direction shrink 1 - a*lambda stays in [1 - rho, 1].

    ``lambda_max <= 0`` (no energy in the inputs) leaves alpha unchanged; alpha = 0 stays 0.
    """
    if alpha == 0.0:
        return 0.0
    if not lambda_max > 0.0:
        return float(alpha)
    return float(min(alpha, rho / lambda_max))


def _power_init(d: int, like: Tensor) -> Tensor:
    # A private generator: the global RNG must not move, or dropout masks would differ from the base
    # optimizer's run (P1.1).
    gen = torch.Generator().manual_seed(0x5EED)
    v = torch.randn(d, generator=gen, dtype=torch.float64).to(dtype=like.dtype, device=like.device)
    return v / v.norm()


@torch.no_grad()
def lambda_max_power_iteration(
    gram: Tensor | None = None,
    *,
    x: Tensor | None = None,
    count: int | None = None,
    v: Tensor | None = None,
    iters: int = 10,
    exact_max_dim: int = 512,
) -> tuple[float, Tensor | None]:
    """Largest eigenvalue of a PSD Gram: exact ``eigvalsh`` when small, else warm-started power iteration.

    Give either ``gram`` (d x d) or ``x`` (N x d rows, G = X^T X / count, never formed: the exact case
    uses the N x N matrix X X^T / count when N < d, which has the same nonzero eigenvalues; the power
    iteration uses G v = X^T (X v) / count). ``v`` is the previous call's eigenvector estimate (warm
    start); the returned vector is the new estimate, or ``v`` unchanged when the exact path ran.
    Power iteration returns the Rayleigh quotient, a lower bound of lambda_max.
    """
    if (gram is None) == (x is None):
        raise ValueError("give exactly one of gram= or x=")
    if gram is not None:
        d = gram.shape[0]
        if d <= exact_max_dim:
            return float(torch.linalg.eigvalsh(gram)[-1]), v

        def matvec(u: Tensor) -> Tensor:
            return gram @ u

        like = gram
    else:
        n_rows, d = x.shape
        n = n_rows if count is None else count
        if min(n_rows, d) <= exact_max_dim:
            small = (x @ x.T) if n_rows < d else (x.T @ x)
            return float(torch.linalg.eigvalsh(small / n)[-1]), v

        def matvec(u: Tensor) -> Tensor:
            return x.T @ (x @ u) / n

        like = x
    if v is None or v.shape != (d,) or not torch.isfinite(v).all() or float(v.norm()) == 0.0:
        v = _power_init(d, like)
    else:
        v = v.to(dtype=like.dtype, device=like.device)
        v = v / v.norm()
    for _ in range(max(1, iters)):
        w = matvec(v)
        nrm = float(w.norm())
        if nrm == 0.0:
            return 0.0, v
        v = w / nrm
    lam = float(v @ matvec(v))
    return lam, v


@torch.no_grad()
def ema_gram_update_(ema: Tensor, gram: Tensor, beta: float, k: int, bias_correction: bool = True) -> Tensor:
    """One EMA step on the Gram memory, in place; ``k`` = number of updates including this one.

    With bias correction the buffer holds Ghat_k = Gbar_k / (1 - beta^k) directly, where
    Gbar_k = beta Gbar_{k-1} + (1 - beta) G_k, Gbar_0 = 0 (nl-math.md 2.1). Algebraically
    Ghat_k = Ghat_{k-1} + w_k (G_k - Ghat_{k-1}) with w_k = (1 - beta) / (1 - beta^k); we store this form
    because w_1 = 1 and lerp(., G, 1) == G exactly, so the first step (any beta) and beta = 0 reproduce
    DeepL2GD bitwise (P2.1), and a repeated batch keeps Ghat == G bitwise (P2.2). Gbar itself is
    Ghat * (1 - beta^k). Without bias correction the buffer is Gbar.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1 (number of updates including this one), got {k}")
    if bias_correction:
        w = (1.0 - beta) / (1.0 - beta**k)
    else:
        w = 1.0 - beta
    return ema.lerp_(gram, w)


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


def _conv_patches(x: Tensor, conv: nn.Conv2d) -> Tensor:
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
    p = _conv_patches(x, conv)
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


def find_head(model: nn.Module) -> list[nn.Linear]:
    """The classifier head: every nn.Linear inside a module named ``classifier`` if there is one (a
    multi-head classifier is all head), else the last nn.Linear in ``model.modules()`` order."""
    heads: list[nn.Linear] = []
    for name, mod in model.named_modules():
        if name.split(".")[-1] == "classifier":
            heads.extend(m for m in mod.modules() if isinstance(m, nn.Linear) and m not in heads)
    if heads:
        return heads
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1:]


# --------------------------------------------------------------------------------------------------
# Optimizer
# --------------------------------------------------------------------------------------------------

_LINEAR, _CONV = 0, 1
# Per-layer statistics live in self.state[layer.weight] next to the base optimizer's state, so the
# torch state_dict machinery saves, casts and restores them. Keys (ints/tensors/lists only: torch's
# load_state_dict would mangle strings):
#   proj_count  rows seen since the layer's last update          proj_x / proj_y  cached X and X W^T chunks
#   proj_gram   sum of X^T X (full path)                         proj_xsum        sum of rows (bias / centering)
#   proj_v      power-iteration vector (warm start)              proj_k, proj_ema EMA update count and Gram memory
_MISSING = object()


def _check_nonneg(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and value >= 0.0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


class DeepL2GD(torch.optim.Optimizer):
    """DeepL2GD (S000; NL-arXiv Eq 57/121): ``W <- W (I - a G)`` on every participating layer, then the
    base step (SGD, Adam or AdamW, numerically identical to torch.optim) on every parameter.

    Args:
        model: the nn.Module to train. All its parameters join the optimizer (one param group); the
            participating layers get forward hooks that record their inputs while
            ``module.training and torch.is_grad_enabled()``. Call :meth:`close` to remove them.
        lr: base learning rate.
        alpha: projection strength (nl-math.md 1.4: sweep 1e-5..1e-3).
        base: "sgd" | "adam" | "adamw" (AdamW's decoupled decay runs inside the base step, i.e. after
            the projection).
        rho: stability guard, a = min(alpha, rho / lambda_max(G)); rho in (0, 1].
        project_bias: also project the bias through the augmented Gram [[G, mu], [mu^T, 1]].
        gram_norm: "none" | "trace" (G <- G d / tr(G): alpha becomes the mean per-direction shrink).
        include_head: also project the classifier head (see :func:`find_head`).
        betas, eps, amsgrad: Adam/AdamW settings. weight_decay: coupled L2 for sgd/adam, decoupled for
            adamw (default 0.0 for every base, unlike torch.optim.AdamW's 1e-2).
        momentum, dampening, nesterov: SGD settings.
        layers: explicit participating layers (modules or their qualified names); overrides the
            default (all nn.Linear except the head, plus Conv2d with groups == 1 when ``conv``).
        params: optimise only these parameters of ``model`` (default: all of them). The default layer
            selection is then limited to layers whose weight is among them, which lets a clock
            wrapper run one DeepL2GD per level of a CMS (nl-math.md 4.2).
        conv: also project Conv2d layers (groups == 1) with the channel-covariance rule of §3.
        conv_mode: "mean_tap" (default) | "per_tap" | "exact" | "s000_guess" (preset: mean_tap, scale,
            preserve_magnitude=True).
        conv_apply: "shift" (default) | "scale", for mean_tap.
        preserve_magnitude: rescale each filter to its old mean |K| after the projection.
        conv_centered: use the centered channel covariance instead of the second moment.
        lowrank: "auto" (N < d_in -> cache X and X W^T, never form the Gram), True (always cache),
            False (always accumulate X^T X). Same result, different cost.
        trace_shortcut: skip the lambda_max computation when alpha * tr(G) <= rho (then the guard
            cannot bind, since lambda_max <= tr(G) for a PSD G): exact and free.
        exact_max_dim: lambda_max by eigvalsh when the smaller side of the eigen-problem is at most
            this; above it, power iteration (``power_iters`` cold, ``warm_power_iters`` warm-started).

    Clock seam (for a multi-timescale wrapper, nl-math.md 4.2): :meth:`step` =
    ``project_layers([m for m in layers if should_project(m)])`` then :meth:`base_step`. A wrapper can
    override :meth:`should_project`, or call ``project_layers(due_layers)`` and
    ``base_step(due_params)`` itself. Statistics accumulate until a layer is projected, so a slow
    layer is projected with the mean Gram of its whole window.
    """

    def __init__(
        self,
        model: nn.Module,
        lr: float = 1e-3,
        alpha: float = 1e-4,
        base: str = "sgd",
        rho: float = 0.5,
        project_bias: bool = False,
        gram_norm: str = "none",
        include_head: bool = False,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        *,
        dampening: float = 0.0,
        nesterov: bool = False,
        amsgrad: bool = False,
        layers: Iterable[nn.Module | str] | None = None,
        conv: bool = False,
        conv_mode: str = "mean_tap",
        conv_apply: str | None = None,
        preserve_magnitude: bool | None = None,
        conv_centered: bool = False,
        lowrank: bool | str = "auto",
        trace_shortcut: bool = True,
        exact_max_dim: int = 512,
        power_iters: int = 10,
        warm_power_iters: int = 2,
        foreach: bool | None = None,
        params: Iterable[nn.Parameter] | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"DeepL2GD takes the model (an nn.Module), got {type(model).__name__}")
        if conv_mode in CONV_PRESETS:
            preset = CONV_PRESETS[conv_mode]
            if conv_apply not in (None, preset["conv_apply"]) or preserve_magnitude not in (
                None,
                preset["preserve_magnitude"],
            ):
                raise ValueError(f"conv_mode={conv_mode!r} is a preset; do not also set conv_apply/preserve_magnitude")
            conv_mode, conv_apply, preserve_magnitude = (
                preset["conv_mode"],
                preset["conv_apply"],
                preset["preserve_magnitude"],
            )
        conv_apply = "shift" if conv_apply is None else conv_apply
        preserve_magnitude = False if preserve_magnitude is None else preserve_magnitude
        if lowrank not in ("auto", True, False):
            raise ValueError(f"lowrank must be 'auto', True or False, got {lowrank!r}")
        for name, val in (("exact_max_dim", exact_max_dim), ("power_iters", power_iters),
                          ("warm_power_iters", warm_power_iters)):
            if not isinstance(val, int) or val < (0 if name == "exact_max_dim" else 1):
                raise ValueError(f"{name} must be a positive int, got {val!r}")
        self.lowrank = lowrank
        self.trace_shortcut = bool(trace_shortcut)
        self.exact_max_dim = exact_max_dim
        self.power_iters = power_iters
        self.warm_power_iters = warm_power_iters
        self.conv = bool(conv)

        defaults = dict(
            lr=lr, alpha=alpha, base=base, rho=rho, project_bias=project_bias, gram_norm=gram_norm,
            betas=tuple(betas), eps=eps, weight_decay=weight_decay, momentum=momentum, dampening=dampening,
            nesterov=nesterov, amsgrad=amsgrad, foreach=foreach, conv_mode=conv_mode, conv_apply=conv_apply,
            preserve_magnitude=preserve_magnitude, conv_centered=conv_centered, **self._variant_defaults(),
        )
        self._validate_group(defaults)

        params = list(model.parameters()) if params is None else list(params)
        self.layers, self.layer_names = self._select_layers(model, layers, include_head)
        if layers is None:
            chosen = {id(p) for p in params}
            self.layers = [m for m in self.layers if id(m.weight) in chosen]
            self.layer_names = {m: n for m, n in self.layer_names.items() if id(m.weight) in chosen}
        self._kind = {m: (_CONV if isinstance(m, nn.Conv2d) else _LINEAR) for m in self.layers}
        self._by_name = {n: m for m, n in self.layer_names.items()}
        seen: set[int] = set()
        for m in self.layers:
            if id(m.weight) in seen:
                raise ValueError(f"layer {self.layer_names[m]!r} shares its weight with another participating layer")
            seen.add(id(m.weight))
        self._group_cache: dict[int, dict] | None = None
        super().__init__(params, defaults)
        optimised = {id(p) for p in params}
        for m in self.layers:
            if id(m.weight) not in optimised:
                raise ValueError(f"layer {self.layer_names[m]!r} is not part of the optimised parameters")

        # Y (= X W^T) cached in the hook is only valid for the W that produced it; W's version
        # counter tells if something changed W in place since (then Y is recomputed from X).
        self._y_version: dict[nn.Module, tuple[int, int] | None] = {}
        #: diagnostics: how each projection was computed (tests assert the low-rank path is taken).
        self.counters = {
            "lowrank": 0, "full": 0, "lambda_exact": 0, "lambda_power": 0, "lambda_skipped": 0, "nonfinite": 0,
        }
        #: last projection per layer name: alpha_eff, lambda_max (None when the trace shortcut held), rows.
        self.last_projection: dict[str, dict[str, Any]] = {}
        ref = weakref.ref(self)

        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            opt = ref()
            # Weak ref: a forgotten optimizer must not keep recording; deep-copied modules carry this
            # hook too, but are not in _kind and are ignored.
            if opt is not None and module in opt._kind and module.training and torch.is_grad_enabled():
                opt._record(module, args, output)

        self._handles = [m.register_forward_hook(hook) for m in self.layers]

    # ---------------------------------------------------------------- construction helpers

    def _validate_group(self, g: dict) -> None:
        _check_nonneg("lr", g["lr"])
        _check_nonneg("alpha", g["alpha"])
        rho = g["rho"]
        if not (isinstance(rho, (int, float)) and 0.0 < rho <= 1.0):
            raise ValueError(f"rho must be in (0, 1], got {rho!r}")
        if g["base"] not in BASES:
            raise ValueError(f"base must be one of {BASES}, got {g['base']!r}")
        if g["gram_norm"] not in GRAM_NORMS:
            raise ValueError(f"gram_norm must be one of {GRAM_NORMS}, got {g['gram_norm']!r}")
        betas = g["betas"]
        if len(betas) != 2 or not all(isinstance(b, (int, float)) and 0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
        _check_nonneg("eps", g["eps"])
        _check_nonneg("weight_decay", g["weight_decay"])
        _check_nonneg("momentum", g["momentum"])
        _check_nonneg("dampening", g["dampening"])
        if g["base"] != "sgd" and (g["momentum"] != 0 or g["nesterov"] or g["dampening"] != 0):
            raise ValueError("momentum/dampening/nesterov apply to base='sgd' only")
        if g["nesterov"] and (g["momentum"] <= 0 or g["dampening"] != 0):
            raise ValueError("nesterov requires momentum > 0 and zero dampening")
        if g["base"] == "sgd" and g["amsgrad"]:
            raise ValueError("amsgrad applies to base='adam'/'adamw' only")
        if g["conv_mode"] not in CONV_MODES:
            raise ValueError(f"conv_mode must be one of {CONV_MODES + tuple(CONV_PRESETS)}, got {g['conv_mode']!r}")
        if g["conv_apply"] not in CONV_APPLIES:
            raise ValueError(f"conv_apply must be one of {CONV_APPLIES}, got {g['conv_apply']!r}")
        if "beta" in g and not (isinstance(g["beta"], (int, float)) and 0.0 <= g["beta"] < 1.0):
            raise ValueError(f"beta must be in [0, 1), got {g['beta']!r}")

    def _select_layers(
        self, model: nn.Module, layers: Iterable[nn.Module | str] | None, include_head: bool
    ) -> tuple[list[nn.Module], dict[nn.Module, str]]:
        names = {m: n for n, m in model.named_modules()}
        if layers is None:
            head = [] if include_head else find_head(model)
            chosen = []
            for m in model.modules():
                if any(m is h for h in head) or getattr(m, "weight", None) is None:
                    continue
                if not m.weight.requires_grad:
                    continue
                if isinstance(m, nn.Linear) or (self.conv and isinstance(m, nn.Conv2d) and m.groups == 1):
                    chosen.append(m)
        else:
            by_name = dict(model.named_modules())
            chosen = []
            for item in layers:
                if isinstance(item, str):
                    if item not in by_name:
                        raise ValueError(f"no module named {item!r} in the model")
                    item = by_name[item]
                if item not in names:
                    raise ValueError(f"layer {item!r} is not a submodule of the model")
                if isinstance(item, nn.Conv2d):
                    if not self.conv:
                        raise ValueError(f"{names[item]!r} is a Conv2d: pass conv=True to project convolutions")
                    if item.groups != 1:
                        raise ValueError(
                            f"{names[item]!r} is a grouped/depthwise conv (groups={item.groups}): not supported"
                        )
                elif not isinstance(item, nn.Linear):
                    raise ValueError(f"{names[item]!r} is a {type(item).__name__}, not nn.Linear/nn.Conv2d")
                if not item.weight.requires_grad:
                    raise ValueError(f"{names[item]!r} is frozen (weight.requires_grad=False): it must not move")
                if item not in chosen:
                    chosen.append(item)
        return chosen, {m: names[m] for m in chosen}

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        self._group_cache = None
        try:
            self._validate_group(self.param_groups[-1])
        except ValueError:
            self.param_groups.pop()
            raise

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._group_cache = None
        self._y_version.clear()

    def _group_of(self, p: Tensor) -> dict:
        group = None if self._group_cache is None else self._group_cache.get(id(p))
        if group is None:
            # rebuilt lazily: load_state_dict/add_param_group invalidate it, and Avalanche's
            # reset/update_optimizer edit group["params"] in place (same group dicts, new params)
            self._group_cache = {id(q): g for g in self.param_groups for q in g["params"]}
            group = self._group_cache[id(p)]
        return group

    def close(self) -> None:
        """Remove the forward hooks (idempotent). Pending statistics stay in the state."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> DeepL2GD:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---------------------------------------------------------------- recording (forward hook)

    def _variant_defaults(self) -> dict[str, Any]:
        """Extra per-group hyperparameters of a subclass (the EMA's beta)."""
        return {}

    def _uses_lowrank(self, group: dict) -> bool:
        if self.lowrank == "auto":
            return self._lowrank_allowed(group)
        return bool(self.lowrank)

    def _lowrank_allowed(self, group: dict) -> bool:
        return True

    def _record(self, module: nn.Module, args: tuple, output: Any) -> None:
        if not args or not isinstance(args[0], Tensor):
            return
        w = module.weight
        group = self._group_of(w)
        st = self.state[w]
        x = args[0].detach()
        if self._kind[module] == _CONV:
            self._record_conv(module, group, st, x)
            return
        d_in = w.shape[1]
        x = x.reshape(-1, d_in)
        if x.dtype != w.dtype:
            x = x.to(w.dtype)
        n = x.shape[0]
        if n == 0:
            return
        count = st.get("proj_count", 0)
        aug = bool(group["project_bias"]) and module.bias is not None
        gram = st.get("proj_gram")
        if gram is None and self._uses_lowrank(group) and (self.lowrank is True or count + n < d_in):
            y = output.detach().reshape(-1, w.shape[0]) if isinstance(output, Tensor) else None
            if y is None or y.dtype != w.dtype:
                yb = None  # e.g. autocast output: recompute X W^T in the weight's dtype at step time
            elif module.bias is not None and not aug:
                yb = y - module.bias.detach()  # a new tensor, safe from later in-place ops (ReLU(inplace))
            else:
                yb = y.clone()
            bias_v = module.bias._version if (aug and module.bias is not None) else -1
            ver = (w._version, bias_v)
            if count == 0:
                self._y_version[module] = ver
            elif self._y_version.get(module, ver) != ver:
                self._y_version[module] = None  # chunks made by different W: recompute at step time
            st.setdefault("proj_x", []).append(x)
            st.setdefault("proj_y", []).append(yb)
        else:
            if gram is None:
                gram = st["proj_gram"] = x.new_zeros(d_in, d_in)
                if aug:
                    st["proj_xsum"] = x.new_zeros(d_in)
                for xc in st.pop("proj_x", []):
                    gram.addmm_(xc.T, xc)
                    if aug:
                        st["proj_xsum"].add_(xc.sum(0))
                st.pop("proj_y", None)
            gram.addmm_(x.T, x)
            if aug:
                st["proj_xsum"].add_(x.sum(0))
        st["proj_count"] = count + n

    def _record_conv(self, module: nn.Conv2d, group: dict, st: dict, x: Tensor) -> None:
        w = module.weight
        if x.dtype != w.dtype:
            x = x.to(w.dtype)
        if group["conv_mode"] == "exact":
            rows = _conv_patches(x, module)
        else:
            if x.dim() == 3:
                x = x.unsqueeze(0)
            rows = x.transpose(0, 1).reshape(x.shape[1], -1).T  # (N, Cin) view of a copy
        n, d = rows.shape
        if n == 0:
            return
        gram = st.get("proj_gram")
        if gram is None or gram.shape[0] != d:
            gram = st["proj_gram"] = rows.new_zeros(d, d)
            st["proj_xsum"] = rows.new_zeros(d)
            st["proj_count"] = 0
        gram.addmm_(rows.T, rows)
        if group["conv_centered"]:
            st["proj_xsum"].add_(rows.sum(0))
        st["proj_count"] = st["proj_count"] + n

    # ---------------------------------------------------------------- projection

    def has_statistics(self, module: nn.Module) -> bool:
        """Whether the layer saw training inputs since its last projection."""
        st = self.state.get(module.weight)
        return bool(st) and st.get("proj_count", 0) > 0

    def should_project(self, module: nn.Module) -> bool:
        """Clock seam: :meth:`step` projects exactly the layers for which this returns True.

        Default: every layer with statistics. A multi-clock wrapper overrides this (or calls
        :meth:`project_layers` itself) so that a slow layer keeps accumulating its window."""
        return self.has_statistics(module)

    @torch.no_grad()
    def project_layers(self, layers: Iterable[nn.Module | str] | None = None) -> dict[str, dict[str, Any]]:
        """Project the given layers now (default: all with statistics), consuming their statistics.

        Returns {layer name: {"alpha_eff", "lambda_max", "rows", "path"}} for the layers projected."""
        out: dict[str, dict[str, Any]] = {}
        for m in self.layers if layers is None else layers:
            if isinstance(m, str):
                m = self._by_name.get(m, m)
            if m not in self._kind:
                raise ValueError(f"{m!r} is not a participating layer")
            info = self._project_one(m)
            if info is not None:
                name = self.layer_names[m]
                out[name] = self.last_projection[name] = info
        return out

    def _take_stats(self, module: nn.Module, st: dict, group: dict) -> dict[str, Any]:
        """Consume the recorded statistics into {"x", "y"} (low-rank) or {"gram"} (mean Gram)."""
        n = st.pop("proj_count")
        w = module.weight
        aug = self._kind[module] == _LINEAR and bool(group["project_bias"]) and module.bias is not None
        xs = st.pop("proj_x", None)
        ys = st.pop("proj_y", None)
        gram = st.pop("proj_gram", None)
        xsum = st.pop("proj_xsum", None)
        if xs is not None:
            x = xs[0] if len(xs) == 1 else torch.cat(xs)
            ver = self._y_version.pop(module, _MISSING)
            cur = (w._version, module.bias._version if (aug and module.bias is not None) else -1)
            # _MISSING: recorded before a load_state_dict; the saved weights made those outputs.
            valid = all(y is not None for y in ys) and (ver is _MISSING or ver == cur)
            if valid:
                y = ys[0] if len(ys) == 1 else torch.cat(ys)
            else:
                y = torch.addmm(module.bias, x, w.T) if aug else x @ w.T
            if aug:
                x = torch.cat([x, x.new_ones(x.shape[0], 1)], dim=1)
            return {"x": x, "y": y, "n": n, "aug": aug}
        g = gram / n
        if self._kind[module] == _CONV:
            if group["conv_centered"]:
                mu = xsum / n
                g = g - torch.outer(mu, mu)
        elif aug:
            g = augmented_gram(g, xsum / n)
        return {"gram": g, "n": n, "aug": aug}

    def _transform_stats(self, module: nn.Module, st: dict, group: dict, stats: dict) -> dict:
        """Hook for variants: the EMA turns the per-window Gram into its memory Ghat."""
        return stats

    def _project_one(self, module: nn.Module) -> dict[str, Any] | None:
        w = module.weight
        st = self.state.get(w)
        if not st or st.get("proj_count", 0) == 0:
            return None
        group = self._group_of(w)
        stats = self._transform_stats(module, st, group, self._take_stats(module, st, group))
        alpha, rho = float(group["alpha"]), float(group["rho"])
        lowrank = "x" in stats
        if lowrank:
            x, n = stats["x"], stats["n"]
            xf = x.reshape(-1)
            trace = float(torch.dot(xf, xf)) / n
            dim = x.shape[1]
        else:
            g = stats["gram"]
            trace = float(g.diagonal().sum())
            dim = g.shape[0]
        # gram_norm="trace": G' = s G with s = d / tr(G); the projection uses a_eff * s.
        scale = 1.0
        if group["gram_norm"] == "trace":
            scale = dim / trace if trace > 0 else 0.0
        lam = None
        if not math.isfinite(trace):
            # non-finite inputs: eigvalsh would raise; leave W to the base step, whose NaNs show up
            a_eff = 0.0
            self.counters["nonfinite"] += 1
        elif alpha == 0.0 or trace <= 0.0 or scale == 0.0:
            a_eff = 0.0  # zero inputs: G = 0, nothing to project
            self.counters["lambda_skipped"] += 1
        elif self.trace_shortcut and alpha * trace * scale <= rho:
            a_eff = alpha  # lambda_max <= tr(G): the guard cannot bind
            self.counters["lambda_skipped"] += 1
        else:
            v = st.get("proj_v")
            iters = self.power_iters if v is None else self.warm_power_iters
            if lowrank:
                lam0, v_new = lambda_max_power_iteration(
                    x=x, count=n, v=v, iters=iters, exact_max_dim=self.exact_max_dim
                )
            else:
                lam0, v_new = lambda_max_power_iteration(g, v=v, iters=iters, exact_max_dim=self.exact_max_dim)
            if v_new is not None and v_new is not v:
                st["proj_v"] = v_new
                self.counters["lambda_power"] += 1
            else:
                self.counters["lambda_exact"] += 1
            lam = lam0 * scale
            a_eff = guarded_alpha(alpha, rho, lam)
        c = a_eff * scale
        if c != 0.0:
            if self._kind[module] == _CONV:
                conv_channel_projection_(
                    w, stats["gram"], c, group["conv_mode"], group["conv_apply"], group["preserve_magnitude"]
                )
            elif lowrank:
                y = stats["y"]
                if stats["aug"]:
                    xin = x[:, :-1]
                    module.bias.sub_(y.sum(0), alpha=c / n)
                    w.addmm_(y.T, xin, alpha=-c / n)
                else:
                    lowrank_projection_(w, x, c, y=y, count=n)
            elif stats["aug"]:
                wt = torch.cat([w, module.bias[:, None]], dim=1)
                gram_projection_(wt, stats["gram"], c)
                w.copy_(wt[:, :-1])
                module.bias.copy_(wt[:, -1])
            else:
                gram_projection_(w, stats["gram"], c)
        self.counters["lowrank" if lowrank else "full"] += 1
        return {"alpha_eff": a_eff, "lambda_max": lam, "rows": stats["n"], "path": "lowrank" if lowrank else "full",
                "trace": trace * scale}

    # ---------------------------------------------------------------- base step

    @torch.no_grad()
    def base_step(self, params: Iterable[Tensor] | None = None) -> None:
        """The base optimizer step alone (torch.optim.SGD/Adam/AdamW math, via torch's functionals).

        ``params`` restricts it to a subset (a clock wrapper steps only the due parameters; the
        others get no update of any kind, state included)."""
        only = None if params is None else {id(p) for p in params}
        for group in self.param_groups:
            ps = [p for p in group["params"] if p.grad is not None and (only is None or id(p) in only)]
            if not ps:
                continue
            if group["base"] == "sgd":
                self._sgd_step(group, ps)
            else:
                self._adam_step(group, ps)

    def _sgd_step(self, group: dict, params: list[Tensor]) -> None:
        grads = [p.grad for p in params]
        has_sparse = any(g.is_sparse for g in grads)
        bufs = [self.state[p].get("momentum_buffer") for p in params] if group["momentum"] != 0 else []
        _sgd_functional(
            params, grads, bufs, has_sparse_grad=has_sparse, foreach=group["foreach"], fused=None,
            grad_scale=getattr(self, "grad_scale", None), found_inf=getattr(self, "found_inf", None),
            weight_decay=group["weight_decay"], momentum=group["momentum"], lr=group["lr"],
            dampening=group["dampening"], nesterov=group["nesterov"], maximize=False,
        )
        if group["momentum"] != 0:
            for p, b in zip(params, bufs):
                self.state[p]["momentum_buffer"] = b

    def _adam_step(self, group: dict, params: list[Tensor]) -> None:
        grads, exp_avgs, exp_avg_sqs, max_sqs, steps = [], [], [], [], []
        has_complex = False
        for p in params:
            if p.grad.is_sparse:
                raise RuntimeError("DeepL2GD with an Adam base does not support sparse gradients")
            has_complex |= torch.is_complex(p)
            grads.append(p.grad)
            st = self.state[p]
            if "exp_avg" not in st:  # lazy init; the state may already hold projection statistics
                st["step"] = torch.tensor(0.0, dtype=_get_scalar_dtype(), device="cpu")
                st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if group["amsgrad"] and "max_exp_avg_sq" not in st:
                st["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            exp_avgs.append(st["exp_avg"])
            exp_avg_sqs.append(st["exp_avg_sq"])
            if group["amsgrad"]:
                max_sqs.append(st["max_exp_avg_sq"])
            steps.append(st["step"])
        beta1, beta2 = group["betas"]
        _adam_functional(
            params, grads, exp_avgs, exp_avg_sqs, max_sqs, steps,
            foreach=group["foreach"], capturable=False, differentiable=False, fused=None,
            grad_scale=getattr(self, "grad_scale", None), found_inf=getattr(self, "found_inf", None),
            has_complex=has_complex, decoupled_weight_decay=group["base"] == "adamw",
            amsgrad=group["amsgrad"], beta1=beta1, beta2=beta2, lr=group["lr"],
            weight_decay=group["weight_decay"], eps=group["eps"], maximize=False,
        )

    # ---------------------------------------------------------------- step

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Project every due layer (``should_project``) with its mean Gram, then the base step with
        the untouched gradients (nl-math.md 1.2: project, then step)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for m in self.layers:
            if self.should_project(m):
                info = self._project_one(m)
                if info is not None:
                    self.last_projection[self.layer_names[m]] = info
        self.base_step()
        return loss


class DeepL2GDEMA(DeepL2GD):
    """DeepL2GD-EMA (S000 Listing 2; nl-math.md section 2): project with an EMA of the per-window Grams.

        Gbar_k = beta Gbar_{k-1} + (1 - beta) G_k,  Ghat_k = Gbar_k / (1 - beta^k)  (bias correction)
        W <- W (I - a Ghat_k),  a = min(alpha, rho / lambda_max(Ghat_k)),  then the base step.

    k counts the layer's Gram updates (its due steps with data). The memory persists across
    experiences and is saved in the state_dict (``proj_ema``, stored in the bias-corrected form, see
    :func:`ema_gram_update_`). A window without data leaves memory and weight untouched. beta = 0 is
    DeepL2GD (same code path, bitwise). The memory is a full d x d Gram, so the low-rank path is only
    used for beta = 0.
    """

    def __init__(self, model: nn.Module, *args: Any, beta: float = 0.99, bias_correction: bool = True, **kwargs: Any):
        if not (isinstance(beta, (int, float)) and 0.0 <= beta < 1.0):
            raise ValueError(f"beta must be in [0, 1), got {beta!r}")
        self._ema_defaults = {"beta": float(beta), "bias_correction": bool(bias_correction)}
        super().__init__(model, *args, **kwargs)

    def _variant_defaults(self) -> dict[str, Any]:
        return dict(self._ema_defaults)

    def _lowrank_allowed(self, group: dict) -> bool:
        return group["beta"] == 0.0

    def _transform_stats(self, module: nn.Module, st: dict, group: dict, stats: dict) -> dict:
        beta = float(group["beta"])
        if beta == 0.0:
            return stats  # no memory: exactly DeepL2GD, whichever path the shapes chose
        if "x" in stats:  # lowrank forced by the caller: the memory needs the full Gram anyway
            x = stats["x"]
            stats = {"gram": (x.T @ x) / stats["n"], "n": stats["n"], "aug": stats["aug"]}
        g = stats["gram"]
        ema = st.get("proj_ema")
        if ema is None or ema.shape != g.shape:
            ema = st["proj_ema"] = torch.zeros_like(g)
            st["proj_k"] = 0
        st["proj_k"] += 1
        ema_gram_update_(ema, g, beta, st["proj_k"], group["bias_correction"])
        return {"gram": ema, "n": stats["n"], "aug": stats["aug"]}


# --------------------------------------------------------------------------------------------------
# Strategy registration

from nlbench.core.registry import HParam, register_strategy  # noqa: E402
from nlbench.core.registry import Parts as _Parts  # noqa: E402

_DEEP_L2GD_HPARAMS = (
    HParam("lr", 1e-3, "float", "base learning rate", low=0.0, high=10.0),
    HParam("alpha", 1e-4, "float", "projection strength alpha (nl-math.md 1.4: 1e-5..1e-3)", low=0.0, high=1.0),
    HParam("rho", 0.5, "float", "stability guard: alpha_eff = min(alpha, rho / lambda_max)", low=1e-6, high=1.0),
    HParam("base", "adam", "str", "base optimizer after the projection", choices=BASES),
    HParam("project_bias", False, "bool", "also project the bias through the augmented Gram"),
    HParam("gram_norm", "none", "str", "Gram normalisation", choices=GRAM_NORMS),
    HParam("conv", False, "bool", "also project Conv2d layers with the channel-covariance rule (§3)"),
    HParam("weight_decay", 0.0, "float", "weight decay of the base step", low=0.0, high=1.0),
)


def _deep_l2gd_factory(hp, cls, **extra):
    def factory(model, params=None):
        return cls(
            model, lr=hp["lr"], alpha=hp["alpha"], rho=hp["rho"], base=hp["base"], project_bias=hp["project_bias"],
            gram_norm=hp["gram_norm"], conv=hp["conv"], weight_decay=hp["weight_decay"], params=params, **extra,
        )

    return factory


@register_strategy(
    "deep-l2gd",
    description="DeepL2GD: W <- W (I - alpha G) on the batch Gram, then the base step (NL Eq 57/121)",
    family="nested-learning",
    provides_optimizer=True,
    hparams=_DEEP_L2GD_HPARAMS,
)
def build(ctx, hp):
    return _Parts(optimizer=_deep_l2gd_factory(hp, DeepL2GD))


@register_strategy(
    "deep-l2gd-ema",
    description="DeepL2GD with an EMA of the Gram matrices (bias-corrected, nl-math.md §2)",
    family="nested-learning",
    provides_optimizer=True,
    hparams=_DEEP_L2GD_HPARAMS + (HParam("beta", 0.99, "float", "EMA decay of the Gram", low=0.0, high=0.9999),),
)
def build_ema(ctx, hp):
    return _Parts(optimizer=_deep_l2gd_factory(hp, DeepL2GDEMA, beta=hp["beta"]))
