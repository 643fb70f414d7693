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

The class reads top-down: constructor, param-group bookkeeping, ``step``. Its parts, one concept each:
recording.py (layers, hooks, statistics), projection.py (the per-layer projection and clock seam),
base_step.py (SGD/Adam/AdamW), with the pure math in functional.py and conv.py (section 3) and the
hyperparameter choices in options.py. DeepL2GDEMA (section 2) is in ema.py.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from .base_step import BaseStepMixin
from .fused import FusedMixin
from .options import CONV_PRESETS, validate_group
from .projection import ProjectionMixin
from .recording import CONV, LINEAR, RecordingMixin

__all__ = ["DeepL2GD"]


class DeepL2GD(RecordingMixin, ProjectionMixin, FusedMixin, BaseStepMixin, torch.optim.Optimizer):
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
        fused: base="sgd" only (no momentum, no weight decay, no project_bias): the fused form of
            nl-math.md 1.3 (fused.py): the projection rides in the SGD step through a custom Linear
            backward, one product instead of two. Same result to float rounding; the layers' ``.grad``
            then holds the gradient of the regularised loss L + (c / (2 eta N)) sum ||W x||^2.

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
        fused: bool = False,
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
        validate_group(defaults)

        params = list(model.parameters()) if params is None else list(params)
        self.layers, self.layer_names = self._select_layers(model, layers, include_head)
        if layers is None:
            chosen = {id(p) for p in params}
            self.layers = [m for m in self.layers if id(m.weight) in chosen]
            self.layer_names = {m: n for m, n in self.layer_names.items() if id(m.weight) in chosen}
        self._kind = {m: (CONV if isinstance(m, nn.Conv2d) else LINEAR) for m in self.layers}
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
            "fused": 0, "fused_corrected": 0,
        }
        #: last projection per layer name: alpha_eff, lambda_max (None when the trace shortcut held), rows.
        self.last_projection: dict[str, dict[str, Any]] = {}
        self._setup_fused(fused)
        self._install_hooks()

    # ---------------------------------------------------------------- construction helpers

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        self._group_cache = None
        try:
            validate_group(self.param_groups[-1])
        except ValueError:
            self.param_groups.pop()
            raise

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        if "guard_tally" in self.state:  # torch keeps non-parameter state by reference: own a copy
            self.state["guard_tally"] = copy.deepcopy(self.state["guard_tally"])
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

    def __enter__(self) -> DeepL2GD:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _variant_defaults(self) -> dict[str, Any]:
        """Extra per-group hyperparameters of a subclass (the EMA's beta)."""
        return {}

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
                    self._tally_projection(m, info)
            if m in self._fused:
                info = self._finish_fused(m)
                if info is not None:
                    self._tally_projection(m, info)
        self.base_step()
        return loss

    def _tally_projection(self, module: nn.Module, info: dict[str, Any]) -> None:
        """Keep the last projection and tally the rho guard: a projection is "bound" when the guard
        lowered alpha (a_eff < alpha). The tally sits in self.state so it survives a checkpoint."""
        name = self.layer_names[module]
        self.last_projection[name] = info
        alpha = float(self._group_of(module.weight)["alpha"])
        if alpha <= 0.0:
            return  # alpha = 0: the projection is off, there is no guard to tally
        tally = self.state.setdefault("guard_tally", {}).setdefault(name, [0, 0, 0.0])
        tally[0] += 1
        tally[1] += int(info["alpha_eff"] < alpha)
        tally[2] += info["alpha_eff"] / alpha

    def diagnostics(self) -> dict[str, Any]:
        """How often the projection ran and how often the rho guard cut alpha, per layer and in all
        (stored in result.json by the runner); {} when it never ran with alpha > 0."""
        tally = self.state.get("guard_tally", {})
        if not tally:
            return {}
        layers = {name: {"projections": n, "guard_bound": bound, "alpha_eff_over_alpha": ratio / n}
                  for name, (n, bound, ratio) in sorted(tally.items())}
        n, bound, ratio = (sum(t[i] for t in tally.values()) for i in range(3))
        return {"projections": n, "guard_bound": bound, "guard_rate": bound / n, "alpha_eff_over_alpha": ratio / n,
                "layers": layers}
