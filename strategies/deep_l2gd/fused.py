"""The fused DeepL2GD+SGD step: projection and gradient step in one product (nl-math.md 1.3).

Source: Behrouz et al., "Nested Learning", arXiv:2512.24695, Eq 57/121. With an SGD base (lr eta, no
momentum, no weight decay) DeepL2GD's update of a linear layer y = W x + b is

    W <- W (I - c G) - eta g,     G = X^T X / N,   g = Gbar^T X,   Gbar = dL/dY,   c = a_eff (x gram_norm)
       = W - eta (Gbar + k Z)^T X,     Z = X W^T = Y - 1 b^T,     k = c / (eta N)

i.e. one SGD step on L + (c / (2 eta N)) sum_n ||W x_n||^2 (P1.3) whose weight gradient
(Gbar + k Z)^T X is ONE product of the shape backward already computes. `_DeltaLinear` is that
Linear: its forward keeps Z (the product without the bias), its backward forms Gbar + k Z, and the
plain SGD step of the base then applies projection and gradient together. No d_in x d_in Gram and no
extra product; the guard (lambda_max, only when alpha tr(G) > rho) runs on the window's inputs as in
the unfused path (projection.py), with the same code.

So the layer's `.grad` holds the gradient of that regularised loss, not of L alone. The step keeps a
ledger of the chunks (X, the k their backward used, ||X||^2 for the guard's trace) and corrects at step time whatever a single
backward could not know: more forwards after a backward (gradient accumulation), a learning rate
changed since, forwards without a backward, a clock window, so the result equals the unfused path to
float rounding. Not exact when something rescales or rewrites gradients between backward and step
(A-GEM's projection, gradient clipping, a clock wrapper with reduction="mean"): use base="sgd" there.
Under autocast a fused layer records like an unfused one and is projected the unfused way.

Cost (bench/optimizers.py, MLP 784-400-400-10, batch 128, one CPU thread): what the fused step adds to
plain SGD is per-layer overhead, not products: the Python Function (one frame each way, ~1% of the
step), the N x d_out passes Y = Z + b and Gbar + k Z (written into Z's buffer), one dot for ||X||^2
and the ledger. Hence no forward hook on a fused layer and one cached coefficient per window.

A window that spans steps (a clock's slow level in `cms+deep-l2gd`, gradient accumulation): its final
coefficient c/N is known only at the step, so every chunk recorded after its first backward books
k = 0 (no guard at backward), and those chunks are kept as their Gram sum X^T X once they hold d_in
rows: the window costs what the unfused path's does (one X^T X per chunk, one W G at the step) in
d_in x d_in memory. Computing the guard over the whole growing window at every backward instead made
the composed step 2.1x the sum of its parts (bench/compose.py, split-fmnist CMS, alpha 1e-2).

FusedMixin is one of the parts DeepL2GD (optimizer.py) is assembled from; it is active with
``fused=True`` (registration: ``base="sgd-fused"``).
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .functional import lambda_max_power_iteration

__all__ = ["FusedMixin"]

# Fused layer -> its optimizer (weakly both ways: a forgotten optimizer or model is not kept alive).
# A deep copy of a fused layer (LwF's or DER's frozen copy) is not in it and runs the plain forward.
_OWNERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class _DeltaLinear(torch.autograd.Function):
    """y = x W^T + b whose weight gradient is (dL/dy + k (x W^T))^T x, k from the optimizer at backward.

    It also opens the chunk's ledger entry (forward) and books the chunk's k (backward): this Function
    is the whole per-call path of a fused layer, one Python frame each way (the step's budget is a few
    percent of a Linear layer's time, so every frame and every N x d_out pass counts)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, opt: Any) -> Tensor:
        ctx.st = st = opt.state[weight]
        xd = x.detach()  # the ledger must not hold the graph
        xf = xd.reshape(-1)
        # the chunk's X, the k its backward puts in .grad, and ||X||^2 for the guard's trace: taken here,
        # while X is still in cache from the layer below, not cold in backward
        entry = [xd, 0.0, torch.dot(xf, xf)]
        chunks = st.get("fused_chunks")
        if chunks is None:
            st["fused_chunks"], st["fused_rows"] = [entry], x.shape[0]
        else:
            chunks.append(entry)
            st["fused_rows"] += x.shape[0]
            if "fused_bwd" in st:  # the window outlives a backward: a clock's slow level, gradient accumulation
                opt._spanning_window(st, weight.shape[1])
        z = x @ weight.T
        ctx.save_for_backward(x, weight)
        # z is a plain attribute, not a saved tensor, so that backward can write Gbar + k Z into its
        # buffer (one pass, no new N x d_out tensor); a second backward (retained graph) recomputes it
        ctx.z, ctx.opt, ctx.entry, ctx.has_bias = z, opt, entry, bias is not None
        # a new tensor: the caller may change the output in place (ReLU(inplace=True)); z stays intact
        return z + bias if bias is not None else z.clone()

    @staticmethod
    def backward(ctx, gy: Tensor):
        x, weight = ctx.saved_tensors
        needs = ctx.needs_input_grad
        gx = gy @ weight if needs[0] else None
        gw = None
        if needs[1]:
            st = ctx.st
            # in a window that spans steps every k but the final one is corrected at the step anyway, so
            # none is computed (the guard over a growing window at every backward was O(window) each)
            k = 0.0 if "fused_spans" in st else ctx.opt._fused_k(st, weight)
            st["fused_bwd"] = True
            ctx.entry[1] += k  # what this chunk's term in .grad carries (summed if backward runs twice)
            if k == 0.0:
                gw = gy.T @ x
            else:
                z, ctx.z = ctx.z, None
                if z is None:  # second backward through a retained graph; W is unchanged (saved above)
                    z = x @ weight.T
                if torch.is_grad_enabled():  # create_graph=True: backward is recorded, no in-place
                    z = torch.add(gy, z, alpha=k)
                else:
                    torch.add(gy, z, alpha=k, out=z)
                gw = z.T @ x
        gb = gy.sum(0) if ctx.has_bias and needs[2] else None
        return gx, gw, gb, None


def forward(self: nn.Linear, input: Tensor) -> Tensor:
    """nn.Linear.forward of a fused layer (bound to it as an instance attribute). Named `forward` so
    that a pickled model unpickles with the class's plain forward."""
    ref = _OWNERS.get(self)
    opt = None if ref is None else ref()
    w, b = self.weight, self.bias
    if opt is None or not (self.training and torch.is_grad_enabled()):
        return F.linear(input, w, b)
    if torch.is_autocast_enabled(input.device.type):
        out = F.linear(input, w, b)
        opt._record(self, (input,), out)  # the unfused statistics; projected by _project_one
        return out
    if input.dim() == 2:
        return _DeltaLinear.apply(input, w, b, opt) if input.shape[0] else F.linear(input, w, b)
    x = input.reshape(-1, w.shape[1])
    if x.shape[0] == 0:
        return F.linear(input, w, b)
    return _DeltaLinear.apply(x, w, b, opt).reshape(*input.shape[:-1], w.shape[0])


class FusedMixin:
    """The fused SGD path of :class:`DeepL2GD` (module docstring): layers, ledger, k, step-time fix-up."""

    def _setup_fused(self, fused: bool) -> None:
        self._fused: set[nn.Module] = set()
        if not fused:
            return
        for g in self.param_groups:
            if (g["base"] != "sgd" or g["momentum"] != 0 or g["weight_decay"] != 0 or g["project_bias"]
                    or g.get("beta", 0.0) != 0.0):
                raise ValueError("fused=True needs base='sgd' without momentum and weight decay, project_bias=False "
                                 "and no Gram EMA (the projection rides in the SGD step)")
        for m in self.layers:
            if isinstance(m, nn.Linear) and type(m).forward is nn.Linear.forward:
                self._fused.add(m)
                _OWNERS[m] = weakref.ref(self)
                m.forward = forward.__get__(m)

    def _close_fused(self) -> None:
        for m in self._fused:
            _OWNERS.pop(m, None)
            m.__dict__.pop("forward", None)

    def _fused_coefficient(self, st: dict, w: Tensor) -> tuple[float, int, tuple]:
        """(c, N, (a_eff, lambda_max, scale, trace)) for the layer's open window: c = a_eff * scale as
        the unfused path computes it, from the window's inputs; cached until the window grows (the
        first backward of a plain step computes it, the step reuses it)."""
        n = st["fused_rows"]
        cached = st.get("fused_c")
        if cached is not None and cached[1] == n:
            return cached
        chunks, gram = st["fused_chunks"], st.get("fused_gram")
        if gram is None:
            # a single chunk: the same dot on the same X as the unfused path, so the same trace bit for bit
            trace = float(chunks[0][2] if len(chunks) == 1 else sum(e[2] for e in chunks)) / n
            lam_of = lambda v, iters: lambda_max_power_iteration(  # noqa: E731
                x=torch.cat([e[0] for e in chunks]), count=n, v=v, iters=iters, exact_max_dim=self.exact_max_dim)
        else:
            trace = float(sum((e[2] for e in chunks), st["fused_gram_dot"])) / n

            def lam_of(v, iters):
                window = gram.clone()
                for x, _, _ in chunks:
                    window.addmm_(x.T, x)
                return lambda_max_power_iteration(window / n, v=v, iters=iters, exact_max_dim=self.exact_max_dim)
        a_eff, lam, scale = self._guard(st, self._group_of(w), trace, w.shape[1], lam_of)
        cached = st["fused_c"] = (a_eff * scale, n, (a_eff, lam, scale, trace))
        return cached

    def _spanning_window(self, st: dict, d_in: int) -> None:
        """A chunk was recorded after a backward of the same open window: the window spans steps (a
        clock's slow level, gradient accumulation). From now on its backwards book k = 0, and the
        chunks whose .grad carries no k are projected at the step by c/N; once they hold d_in rows or
        more, they are kept as their Gram sum X^T X (one product per chunk, as the unfused path
        records) instead of as X, so the step costs one W G and the memory stays d_in x d_in however
        long the window."""
        st["fused_spans"] = True
        chunks, gram = st["fused_chunks"], st.get("fused_gram")
        plain = [e for e in chunks if e[1] == 0.0]
        if gram is None:
            if sum(e[0].shape[0] for e in plain) < d_in:
                return
            x = plain[0][0]
            gram = st["fused_gram"] = x.new_zeros(d_in, d_in)
            st["fused_gram_dot"] = x.new_zeros(())
        dot = st["fused_gram_dot"]
        for x, _, xx in plain:
            gram.addmm_(x.T, x)
            dot.add_(xx)
        st["fused_chunks"] = [e for e in chunks if e[1] != 0.0]

    @staticmethod
    def _k(c: float, n: int, lr: float) -> float:
        """k = c / (eta N): the share of the projection that an SGD step of lr eta applies through .grad."""
        return c / (lr * n) if c != 0.0 and lr > 0.0 else 0.0

    def _fused_k(self, st: dict, w: Tensor) -> float:
        c, n, _ = self._fused_coefficient(st, w)
        return self._k(c, n, float(self._group_of(w)["lr"]))

    def _finish_fused(self, module: nn.Module) -> dict[str, Any] | None:
        """Close the layer's window before the SGD step: every chunk j must end up projected by c/N;
        its .grad term gives eta k_j of that, so apply (c/N - eta k_j) Z_j^T X_j where they differ."""
        w = module.weight
        st = self.state.get(w)
        chunks = st.get("fused_chunks") if st else None
        if chunks is None:
            return None
        c, n, (a_eff, lam, scale, trace) = self._fused_coefficient(st, w)
        chunks = st["fused_chunks"]  # _spanning_window may have replaced the list
        gram = st.pop("fused_gram", None)
        for key in ("fused_chunks", "fused_rows", "fused_c", "fused_gram_dot", "fused_bwd", "fused_spans"):
            st.pop(key, None)
        lr = float(self._group_of(w)["lr"])
        k_final = self._k(c, n, lr)
        # the common case (lr > 0, one backward per chunk with the final k): nothing to correct
        todo = [(x, c / n - lr * k) for x, k, _ in chunks if not (lr > 0.0 and k == k_final)]
        todo = [(x, d) for x, d in todo if d != 0.0]
        folded = gram is not None and c != 0.0  # chunks with k = 0 in their .grad, folded into their Gram
        if todo or folded:
            with torch.no_grad():
                # Z_j = X_j W^T (and W G) at the W of the forward pass: all of them before W moves
                zs = [x @ w.T for x, _ in todo]
                wg = w @ gram if folded else None
                for (x, d), z in zip(todo, zs):
                    w.addmm_(z.T, x, alpha=-d)
                if wg is not None:
                    w.sub_(wg, alpha=c / n)
        self.counters["fused_corrected" if todo or folded else "fused"] += 1
        return {"alpha_eff": a_eff, "lambda_max": lam, "rows": n, "path": "fused", "trace": trace * scale}
