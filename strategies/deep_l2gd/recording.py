"""What DeepL2GD records (NL-arXiv Eq 57/121; nl-math.md 1.3 and 3.1): the participating layers,
their forward hooks, and the statistics those hooks leave in the optimizer state until a projection
consumes them.

Between two projections of a layer, its inputs X (rows of d_in features) are kept in one of two forms:

    low-rank (N < d_in, or lowrank=True):  the X chunks and the X W^T chunks of the layer's own output,
                                           so W G = (X W^T)^T X / N needs no d_in x d_in Gram
    full:                                  sum of X^T X (and sum of rows for the bias / centering)

A Conv2d records the Gram of its channel vectors (or of its patches, conv_mode="exact"), section 3.
RecordingMixin is one of the parts DeepL2GD (optimizer.py) is assembled from.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from .conv import conv_patches
from .functional import augmented_gram

__all__ = ["CONV", "LINEAR", "RecordingMixin", "find_head"]

LINEAR, CONV = 0, 1
# Per-layer statistics live in self.state[layer.weight] next to the base optimizer's state, so the
# torch state_dict machinery saves, casts and restores them. Keys (ints/tensors/lists only: torch's
# load_state_dict would mangle strings):
#   proj_count  rows seen since the layer's last update          proj_x / proj_y  cached X and X W^T chunks
#   proj_gram   sum of X^T X (full path)                         proj_xsum        sum of rows (bias / centering)
#   proj_v      power-iteration vector (warm start)              proj_k, proj_ema EMA update count and Gram memory
_MISSING = object()


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


class RecordingMixin:
    """Layer selection, forward hooks and per-layer statistics of :class:`DeepL2GD` (state keys above)."""

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

    def _install_hooks(self) -> None:
        """One forward hook per participating layer; it records while ``module.training and
        torch.is_grad_enabled()``. Fused layers get none: their forward records (fused.py), and a hook,
        even one that returns at once, would cost every call the slow path of ``Module.__call__``."""
        ref = weakref.ref(self)

        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            opt = ref()
            # Weak ref: a forgotten optimizer must not keep recording; deep-copied modules carry this
            # hook too, but are not in _kind and are ignored.
            if opt is not None and module in opt._kind and module.training and torch.is_grad_enabled():
                opt._record(module, args, output)

        self._handles = [m.register_forward_hook(hook) for m in self.layers if m not in self._fused]

    def close(self) -> None:
        """Remove the forward hooks (idempotent). Pending statistics stay in the state."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self._close_fused()

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
        if self._kind[module] == CONV:
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
            rows = conv_patches(x, module)
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

    def _take_stats(self, module: nn.Module, st: dict, group: dict) -> dict[str, Any]:
        """Consume the recorded statistics into {"x", "y"} (low-rank) or {"gram"} (mean Gram)."""
        n = st.pop("proj_count")
        w = module.weight
        aug = self._kind[module] == LINEAR and bool(group["project_bias"]) and module.bias is not None
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
        if self._kind[module] == CONV:
            if group["conv_centered"]:
                mu = xsum / n
                g = g - torch.outer(mu, mu)
        elif aug:
            g = augmented_gram(g, xsum / n)
        return {"gram": g, "n": n, "aug": aug}
