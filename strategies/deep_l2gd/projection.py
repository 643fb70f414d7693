"""The projection step of DeepL2GD, one layer at a time (NL-arXiv Eq 57/121; nl-math.md 1.2-1.4, 4.2).

For every due layer, with the statistics recorded since its last projection (recording.py):

    G      = (sum of X^T X) / N                          (or its low-rank form, or the EMA memory)
    a      = min(alpha, rho / lambda_max(G))             (skipped when alpha * tr(G) <= rho: exact)
    W     <- W (I - a G)                                 (weight only; bias too with project_bias)

The math itself is in functional.py and conv.py; this module picks the path, the lambda_max method
and the counters. ProjectionMixin is one of the parts DeepL2GD (optimizer.py) is assembled from; its
``should_project`` / ``project_layers`` are the clock seam a multi-timescale wrapper uses.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from .conv import conv_channel_projection_
from .functional import gram_projection_, guarded_alpha, lambda_max_power_iteration, lowrank_projection_
from .recording import CONV

__all__ = ["ProjectionMixin"]


class ProjectionMixin:
    """The clock seam and the per-layer projection of :class:`DeepL2GD`."""

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

    def _transform_stats(self, module: nn.Module, st: dict, group: dict, stats: dict) -> dict:
        """Hook for variants: the EMA turns the per-window Gram into its memory Ghat."""
        return stats

    def _guard(self, st: dict, group: dict, trace: float, dim: int, lam_of) -> tuple[float, float | None, float]:
        """(a_eff, lambda_max or None, scale): the guarded strength for a window whose mean Gram has
        trace ``trace`` over ``dim`` inputs; ``lam_of(v, iters)`` computes lambda_max (warm start v)
        only when the guard can bind. ``scale`` is gram_norm's factor (the projection uses a_eff * scale)."""
        alpha, rho = float(group["alpha"]), float(group["rho"])
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
            lam0, v_new = lam_of(v, iters)
            if v_new is not None and v_new is not v:
                st["proj_v"] = v_new
                self.counters["lambda_power"] += 1
            else:
                self.counters["lambda_exact"] += 1
            lam = lam0 * scale
            a_eff = guarded_alpha(alpha, rho, lam)
        return a_eff, lam, scale

    def _project_one(self, module: nn.Module) -> dict[str, Any] | None:
        w = module.weight
        st = self.state.get(w)
        if not st or st.get("proj_count", 0) == 0:
            return None
        group = self._group_of(w)
        stats = self._transform_stats(module, st, group, self._take_stats(module, st, group))
        lowrank = "x" in stats
        if lowrank:
            x, n = stats["x"], stats["n"]
            xf = x.reshape(-1)
            trace = float(torch.dot(xf, xf)) / n
            dim = x.shape[1]
            lam_of = lambda v, iters: lambda_max_power_iteration(  # noqa: E731
                x=x, count=n, v=v, iters=iters, exact_max_dim=self.exact_max_dim)
        else:
            g = stats["gram"]
            trace = float(g.diagonal().sum())
            dim = g.shape[0]
            lam_of = lambda v, iters: lambda_max_power_iteration(  # noqa: E731
                g, v=v, iters=iters, exact_max_dim=self.exact_max_dim)
        a_eff, lam, scale = self._guard(st, group, trace, dim, lam_of)
        c = a_eff * scale
        if c != 0.0:
            if self._kind[module] == CONV:
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
