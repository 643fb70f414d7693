"""Multi-timescale gradient-memory optimizer (port of seed S001, Kareem Farid's Keras
``NestedLearningOptimizer``, github.com/Kareemfarid/nested-learning-optimizer).

Not an algorithm of the Nested Learning paper (arXiv:2512.24695): the seed's author borrows NL
vocabulary (continuum memory, associative retrieval, levels). The equations follow the nlbench math
spec ``/work/shared/design/nl-math.md`` Section 6, read from the seed's optimizer source.

Update rule per parameter theta at global step s (s = 1 on the first ``step()`` call), raw gradient g::

    every step:  S <- 0.94 S + 0.06 g ; Mm <- 0.994 Mm + 0.006 g ; Lg <- 0.9999 Lg + 0.0001 g
    interval c from the owning module's depth; due(s) = c <= 1 or s < warmup_steps or s % c == 0
    not due:     A += g ; n += 1                                      (nothing else changes)
    due:         e = (A + g) / (n + 1)  (e = g if n = 0) ; A <- 0 ; n <- 0
                 w = softmax(<e, mem_j> / sqrt(numel))  ('attention') | fixed | softmax(b) ('adaptive')
                 h = (1 - mix) e + mix (w_s S + w_m Mm + w_l Lg)
                 v <- beta2 v + (1 - beta2) h^2  (AMSGrad: running max)
                 theta <- theta - lr_s * h / (sqrt(v / bc) + eps)
                 kf_compat=True:  bc = 1 - beta2^(s+1), mix = 0.5, no first moment, c in [1, M+1]
                 kf_compat=False: bc = 1 - beta2^k (k = own update count), mix free, optional
                                  first moment mhat = EMA_beta1(h)/(1 - beta1^k), c in [1, M]

lr_s is the group lr, or the per-epoch sawtooth (warm-up, hold, decay) when steps_per_epoch is set.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Mapping, Optional

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

__all__ = [
    "compute_depths",
    "per_variable_relative_depths",
    "interval_from_depth",
    "should_update",
    "sawtooth_lr",
    "update_memories_",
    "blend_weights",
    "adaptive_logit_delta",
    "effective_gradient",
    "low_rank",
    "MultiTimescaleMemoryOpt",
]

_GLOBAL_STEP_KEY = "global_step"
_CURVES = ("linear", "exponential", "cosine")
_BLENDS = ("fixed", "adaptive", "attention")


# --------------------------------------------------------------------------------------------------
# depth -> interval
# --------------------------------------------------------------------------------------------------


def _owning_modules(model: nn.Module) -> list[tuple[str, list[tuple[str, Tensor]]]]:
    """Modules that directly own at least one trainable parameter, in named_modules() order, each
    with its (qualified name, parameter) list. A parameter shared by several modules belongs to the
    first one (as in model.named_parameters())."""
    seen: set[int] = set()
    owners = []
    for mname, module in model.named_modules():
        own = []
        for pname, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            own.append((f"{mname}.{pname}" if mname else pname, p))
        if own:
            owners.append((mname, own))
    return owners


def compute_depths(model: nn.Module) -> dict[str, int]:
    """Depth of every trainable parameter of ``model``: the position of its owning module among the
    modules that own trainable parameters, in ``named_modules()`` order (kernel and bias of a layer
    share a depth). Keys are the names of ``model.named_parameters()``.

    Frozen parameters are skipped (the seed counts layers with *trainable* weights). Unlike the seed's
    Keras helper, the root module is not counted as a layer: in Keras the model itself owns all weights
    through ``trainable_weights`` and comes first, which gives every variable depth 0 (so with
    reverse_depth_order=True every interval is 1). nlbench uses the intended per-layer depths.
    """
    return {name: d for d, (_, own) in enumerate(_owning_modules(model)) for name, _ in own}


def per_variable_relative_depths(n: int) -> list[float]:
    """The seed's fallback when no model is analysed: each VARIABLE is its own layer, rd = i/(n-1)
    (0.5 for a single variable). Kernel and bias of one layer therefore get different intervals."""
    if n <= 0:
        return []
    if n == 1:
        return [0.5]
    return [i / (n - 1) for i in range(n)]


def interval_from_depth(relative_depth: float, max_interval: int, curve: str = "cosine",
                        reverse_depth_order: bool = True, kf_compat: bool = True) -> int:
    """Update interval c for relative depth rd in [0, 1] (0 = first layer), spec 6.1.

    f = 1 - rd (linear), exp(-3 rd) (exponential), (1 + cos(pi rd)) / 2 (cosine), after
    rd <- 1 - rd when reverse_depth_order (then the LAST layer is slowest).
    kf_compat: c = max(1, floor(M f + 1)) in [1, M+1] (the seed's off-by-one, kept).
    otherwise: c = max(1, floor(M f + 1/2)) in [1, M] (round half up, not Python's banker's round).
    """
    if curve not in _CURVES:
        raise ValueError(f"unknown schedule curve {curve!r}; choose from {_CURVES}")
    rd = 1.0 - relative_depth if reverse_depth_order else relative_depth
    if curve == "linear":
        f = 1.0 - rd
    elif curve == "exponential":
        f = math.exp(-3.0 * rd)
    else:
        f = 0.5 * (1.0 + math.cos(math.pi * rd))
    # Without the 1e-9, exact halves (e.g. 6 * 0.25 = 1.5) round either way depending on the last
    # bit of cos(); the seed's floor(M f + 1) is kept literally.
    c = math.floor(max_interval * f + 1.0) if kf_compat else math.floor(max_interval * f + 0.5 + 1e-9)
    return max(1, int(c))


def should_update(step: int, interval: int, warmup_steps: int = 0) -> bool:
    """due(s) = c <= 1 or s < warmup_steps or s % c == 0 (s 1-based, spec 6.1)."""
    return interval <= 1 or step < warmup_steps or step % interval == 0


def sawtooth_lr(step: int, base_lr: float, steps_per_epoch: int, warmup_fraction: float = 0.25,
                hold_fraction: float = 0.25, decay_fraction: float = 0.5, min_fraction: float = 0.01,
                warmup_start_fraction: float = 0.01) -> float:
    """The seed's per-epoch LR sawtooth at global step s (restarts every epoch), q = (s-1) mod P:
    linear warm-up from start to base over warmup_fraction*P, hold until (warmup+hold)*P, then linear
    decay to min over decay_fraction*P (and stay there)."""
    P = float(steps_per_epoch)
    q = float((step - 1) % steps_per_epoch)
    warm = warmup_fraction * P
    hold_end = (warmup_fraction + hold_fraction) * P
    start, peak, low = base_lr * warmup_start_fraction, base_lr, base_lr * min_fraction
    if q < warm:
        return start + min(q / max(warm, 1.0), 1.0) * (peak - start)
    if q < hold_end:
        return peak
    return peak - min((q - hold_end) / max(decay_fraction * P, 1.0), 1.0) * (peak - low)


# --------------------------------------------------------------------------------------------------
# memories and blend
# --------------------------------------------------------------------------------------------------


def update_memories_(memory: Tensor, g: Tensor, decays: tuple[float, float, float]) -> None:
    """In place mem_j <- d_j mem_j + (1 - d_j) g for the stacked (short, medium, long) memory of
    shape (3, *g.shape). Runs every step, due or not: the memories see every raw gradient."""
    for j, d in enumerate(decays):
        memory[j].mul_(d).add_(g, alpha=1.0 - d)


def blend_weights(mode: str, e: Tensor, memory: Tensor,
                  fixed: tuple[float, float, float] = (0.1, 0.3, 0.6),
                  logits: Optional[Tensor] = None) -> Tensor:
    """Weights (w_s, w_m, w_l) as a length-3 tensor.

    fixed: the given triple (not renormalised, as in the seed); adaptive: softmax(logits);
    attention: softmax(<vec e, vec mem_j> / sqrt(numel + 1e-8)), e the query.
    """
    if mode == "fixed":
        return torch.tensor(fixed, dtype=memory.dtype, device=memory.device)
    if mode == "adaptive":
        if logits is None:
            raise ValueError("adaptive blend needs logits")
        return torch.softmax(logits, dim=0)
    if mode == "attention":
        scores = memory.reshape(3, -1) @ e.reshape(-1)
        return torch.softmax(scores / math.sqrt(e.numel() + 1e-8), dim=0)
    raise ValueError(f"unknown blend mode {mode!r}; choose from {_BLENDS}")


def adaptive_logit_delta(e: Tensor, memory: Tensor) -> Tensor:
    """[<e,S>, <e,Mm>, <e,Lg>] / (||e|| + 1e-8): the seed's (unnormalised in the memories) alignment
    signal; the caller adds adaptive_lr times this to the logits after each applied update."""
    ev = e.reshape(-1)
    return (memory.reshape(3, -1) @ ev) / (torch.linalg.vector_norm(ev) + 1e-8)


def effective_gradient(e: Tensor, memory: Tensor, w: Tensor, mix: float = 0.5) -> Tensor:
    """h = (1 - mix) e + mix (w_s S + w_m Mm + w_l Lg)."""
    retrieved = (w.to(memory.dtype) @ memory.reshape(3, -1)).reshape(e.shape)
    return e * (1.0 - mix) + retrieved * mix


def low_rank(g: Tensor, rank: Optional[int]) -> Tensor:
    """Rank-r SVD truncation of g viewed as (shape[0], -1) (the seed's optional gradient compression
    of what the memories store); identity for rank None or tensors with ndim < 2."""
    if rank is None or g.ndim < 2:
        return g
    G = g.reshape(g.shape[0], -1)
    r = min(rank, *G.shape)
    U, S, Vh = torch.linalg.svd(G, full_matrices=False)
    return ((U[:, :r] * S[:r]) @ Vh[:r]).reshape(g.shape)


# --------------------------------------------------------------------------------------------------
# optimizer
# --------------------------------------------------------------------------------------------------


def _is_int(x, lo: int) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= lo


def _is_num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


class MultiTimescaleMemoryOpt(Optimizer):
    """Three-timescale gradient memory + depth-clocked, accumulated, RMS-normalised updates.

    Port of S001 (Kareem Farid's Keras ``NestedLearningOptimizer``; spec Section 6). See the module
    docstring for the update rule. ``kf_compat=True`` (default) reproduces the seed's quirks: bias
    correction 1 - beta2^(s+1) with the global step, intervals up to M+1, mix fixed at 0.5, no first
    moment (beta1 unused), per-variable depth fallback when no model is given. ``kf_compat=False``
    fixes them: bias correction with the parameter's own update count, intervals up to M (round half
    up), free ``mix``, optional first-moment EMA ``beta1`` on h, depth only from modules.

    Depth (``auto_schedule=True``): from ``model`` (see :func:`compute_depths`). Without a model:
    under kf_compat the seed's per-variable fallback (every tensor its own "layer"); otherwise from
    the parameter names when ``params`` are named (``model.named_parameters()``), grouping by owning
    module prefix (same order as named_modules()), else ValueError. Parameters not found get the
    deepest depth (the seed does the same); a parameter that Avalanche swaps in at the same
    (group, index) position, e.g. a grown IncrementalClassifier head, keeps that position's depth.
    ``auto_schedule=False``: ``layer_update_intervals`` maps name substrings to intervals (first match in
    mapping order), else ``default_interval``.

    All state (memories, second moment, accumulators, counts, adaptive logits, interval) is in
    ``self.state[p]``; the global step in ``self.state['global_step']`` (never reset), so
    state_dict()/load_state_dict() resume bitwise. Avalanche zeroes .grad every iteration; the
    accumulator A is optimizer state, never .grad.

    Per-group hyperparameters: lr, decays, blend_mode, fixed_weights, adaptive_lr, max_interval,
    schedule_curve, reverse_depth_order, default_interval, warmup_steps, accumulate, beta1, beta2, eps,
    amsgrad, mix, compression_rank, steps_per_epoch and the lr_* schedule fractions.
    Interval settings are read when a parameter's state is first created (its first step).
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, *, model: Optional[nn.Module] = None,
                 kf_compat: bool = True,
                 decays: tuple[float, float, float] = (0.94, 0.994, 0.9999),
                 blend_mode: str = "attention",
                 fixed_weights: tuple[float, float, float] = (0.1, 0.3, 0.6),
                 adaptive_lr: float = 0.01,
                 auto_schedule: bool = True, max_interval: int = 6, schedule_curve: str = "cosine",
                 reverse_depth_order: bool = True, warmup_steps: int = 0, accumulate: bool = True,
                 layer_update_intervals: Optional[Mapping[str, int]] = None, default_interval: int = 1,
                 beta1: Optional[float] = None, beta2: float = 0.999, eps: float = 1e-7,
                 amsgrad: bool = False, mix: float = 0.5, compression_rank: Optional[int] = None,
                 steps_per_epoch: Optional[int] = None, lr_warmup_fraction: float = 0.25,
                 lr_hold_fraction: float = 0.25, lr_decay_fraction: float = 0.5,
                 lr_min_fraction: float = 0.01, lr_warmup_start_fraction: float = 0.01):
        if not isinstance(kf_compat, bool):
            raise ValueError(f"Invalid kf_compat: {kf_compat!r}")
        if not isinstance(auto_schedule, bool):
            raise ValueError(f"Invalid auto_schedule: {auto_schedule!r}")
        if model is not None and not isinstance(model, nn.Module):
            raise ValueError("model must be a torch.nn.Module")
        if layer_update_intervals is not None:
            if auto_schedule:
                # The seed silently ignores the mapping when auto_schedule is on; refuse instead.
                raise ValueError("layer_update_intervals needs auto_schedule=False")
            if not isinstance(layer_update_intervals, Mapping) or not all(
                    isinstance(k, str) and _is_int(v, 1) for k, v in layer_update_intervals.items()):
                raise ValueError("layer_update_intervals must map name substrings to ints >= 1")
        self.kf_compat = kf_compat
        self.auto_schedule = auto_schedule
        self.layer_update_intervals = dict(layer_update_intervals or {})
        defaults = dict(lr=lr, decays=tuple(decays) if isinstance(decays, (list, tuple)) else decays,
                        blend_mode=blend_mode,
                        fixed_weights=tuple(fixed_weights) if isinstance(fixed_weights, (list, tuple))
                        else fixed_weights,
                        adaptive_lr=adaptive_lr, max_interval=max_interval,
                        schedule_curve=schedule_curve, reverse_depth_order=reverse_depth_order,
                        default_interval=default_interval, warmup_steps=warmup_steps,
                        accumulate=accumulate, beta1=beta1, beta2=beta2, eps=eps, amsgrad=amsgrad,
                        mix=mix, compression_rank=compression_rank, steps_per_epoch=steps_per_epoch,
                        lr_warmup_fraction=lr_warmup_fraction, lr_hold_fraction=lr_hold_fraction,
                        lr_decay_fraction=lr_decay_fraction, lr_min_fraction=lr_min_fraction,
                        lr_warmup_start_fraction=lr_warmup_start_fraction)
        super().__init__(params, defaults)
        self._names: dict[Tensor, str] = {}
        if model is not None:
            self._names.update({p: n for n, p in model.named_parameters()})
        for group in self.param_groups:
            for n, p in zip(group.get("param_names", []), group["params"]):
                self._names.setdefault(p, n)
        if self.layer_update_intervals and not self._names:
            raise ValueError("layer_update_intervals needs parameter names: pass model= or "
                             "model.named_parameters()")
        self._rel_depth: dict[Tensor, float] = self._relative_depths(model) if auto_schedule else {}
        # Avalanche's update_optimizer swaps a grown parameter (e.g. IncrementalClassifier) in at the
        # same (group, index) and empties its state; the position keeps its depth and name.
        self._pos: dict[tuple[int, int], Tensor] = {
            (gi, pi): p for gi, g in enumerate(self.param_groups) for pi, p in enumerate(g["params"])}

    # ---------------------------------------------------------------- configuration

    def _relative_depths(self, model: Optional[nn.Module]) -> dict[Tensor, float]:
        all_params = [p for g in self.param_groups for p in g["params"]]
        if model is not None:
            owners = _owning_modules(model)
            depth = {p: d for d, (_, own) in enumerate(owners) for _, p in own}
            max_depth = max(len(owners) - 1, 0)
        elif self.kf_compat:
            # The seed's behaviour when compute_depths_from_model was not called, even if names exist.
            return dict(zip(all_params, per_variable_relative_depths(len(all_params))))
        elif self._names and all(p in self._names for p in all_params):
            # named_parameters() lists parameters module by module in named_modules() order, so the
            # order of first appearance of the owning prefix is the module position.
            prefixes: dict[str, int] = {}
            depth = {}
            for p in all_params:
                prefix = self._names[p].rpartition(".")[0]
                depth[p] = prefixes.setdefault(prefix, len(prefixes))
            max_depth = max(len(prefixes) - 1, 0)
        else:
            raise ValueError("kf_compat=False needs the depth from modules: pass model= or "
                             "model.named_parameters() (or auto_schedule=False)")
        return {p: (d / max_depth if max_depth > 0 else 0.0) for p, d in depth.items()}

    def _known_as(self, p: Tensor, pos: Optional[tuple[int, int]]) -> Tensor:
        if p in self._names or p in self._rel_depth or pos is None:
            return p
        return self._pos.get(pos, p)

    def _interval_for(self, p: Tensor, group: dict, pos: Optional[tuple[int, int]] = None) -> int:
        p = self._known_as(p, pos)
        if self.auto_schedule:
            rd = self._rel_depth.get(p, 1.0)  # unknown parameter: deepest, as the seed does
            return interval_from_depth(rd, group["max_interval"], group["schedule_curve"],
                                       group["reverse_depth_order"], self.kf_compat)
        name = self._names.get(p)
        if name is not None:
            for pattern, c in self.layer_update_intervals.items():
                if pattern in name:
                    return c
        return group["default_interval"]

    def update_intervals(self) -> dict[str, int]:
        """Interval of every parameter (by name, else 'group{i}.{j}'), for logging."""
        out = {}
        for i, group in enumerate(self.param_groups):
            for j, p in enumerate(group["params"]):
                st = self.state.get(p, {})
                c = st["interval"] if "interval" in st else self._interval_for(p, group, (i, j))
                out[self._names.get(self._known_as(p, (i, j)), f"group{i}.{j}")] = c
        return out

    def update_counts(self) -> dict[str, int]:
        """Number of applied (due) updates per parameter, for logging (spec Section 10)."""
        out = {}
        for i, group in enumerate(self.param_groups):
            for j, p in enumerate(group["params"]):
                name = self._names.get(self._known_as(p, (i, j)), f"group{i}.{j}")
                out[name] = self.state.get(p, {}).get("updates", 0)
        return out

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        g = self.param_groups[-1]
        if not _is_num(g["lr"]) or g["lr"] < 0:
            raise ValueError(f"Invalid lr: {g['lr']!r}")
        d = g["decays"]
        if not isinstance(d, tuple) or len(d) != 3 or not all(_is_num(x) and 0 <= x < 1 for x in d):
            raise ValueError(f"Invalid decays: {d!r} (three numbers in [0, 1))")
        if g["blend_mode"] not in _BLENDS:
            raise ValueError(f"Invalid blend_mode {g['blend_mode']!r}; choose from {_BLENDS}")
        fw = g["fixed_weights"]
        if not isinstance(fw, tuple) or len(fw) != 3 or not all(_is_num(x) for x in fw):
            raise ValueError(f"Invalid fixed_weights: {fw!r} (three numbers)")
        if not _is_num(g["adaptive_lr"]):
            raise ValueError(f"Invalid adaptive_lr: {g['adaptive_lr']!r}")
        if not _is_int(g["max_interval"], 0):
            raise ValueError(f"Invalid max_interval: {g['max_interval']!r} (int >= 0)")
        if g["schedule_curve"] not in _CURVES:
            raise ValueError(f"Invalid schedule_curve {g['schedule_curve']!r}; choose from {_CURVES}")
        for key in ("reverse_depth_order", "accumulate", "amsgrad"):
            if not isinstance(g[key], bool):
                raise ValueError(f"Invalid {key}: {g[key]!r} (bool)")
        if not _is_int(g["default_interval"], 1):
            raise ValueError(f"Invalid default_interval: {g['default_interval']!r} (int >= 1)")
        if not _is_int(g["warmup_steps"], 0):
            raise ValueError(f"Invalid warmup_steps: {g['warmup_steps']!r} (int >= 0)")
        if not _is_num(g["beta2"]) or not 0 <= g["beta2"] < 1:
            raise ValueError(f"Invalid beta2: {g['beta2']!r} (in [0, 1))")
        if not _is_num(g["eps"]) or g["eps"] < 0:
            raise ValueError(f"Invalid eps: {g['eps']!r}")
        if not _is_num(g["mix"]) or not 0 <= g["mix"] <= 1:
            raise ValueError(f"Invalid mix: {g['mix']!r} (in [0, 1])")
        if g["beta1"] is not None and (not _is_num(g["beta1"]) or not 0 <= g["beta1"] < 1):
            raise ValueError(f"Invalid beta1: {g['beta1']!r} (None or in [0, 1))")
        if self.kf_compat:
            # The seed accepts beta_1 and ignores it, and hard-codes the 0.5/0.5 mix; refuse settings
            # that would be silently ignored.
            if g["beta1"] is not None:
                raise ValueError("beta1 is unused by the seed: kf_compat=True needs beta1=None")
            if g["mix"] != 0.5:
                raise ValueError("kf_compat=True fixes mix=0.5; use kf_compat=False to change it")
        cr = g["compression_rank"]
        if cr is not None and not _is_int(cr, 1):
            raise ValueError(f"Invalid compression_rank: {cr!r} (None or int >= 1)")
        spe = g["steps_per_epoch"]
        if spe is not None and not _is_int(spe, 1):
            raise ValueError(f"Invalid steps_per_epoch: {spe!r} (None or int >= 1)")
        for key in ("lr_warmup_fraction", "lr_hold_fraction", "lr_decay_fraction", "lr_min_fraction",
                    "lr_warmup_start_fraction"):
            if not _is_num(g[key]) or g[key] < 0:
                raise ValueError(f"Invalid {key}: {g[key]!r} (>= 0)")

    # ---------------------------------------------------------------- step

    @property
    def global_step(self) -> int:
        return int(self.state.get(_GLOBAL_STEP_KEY, 0))

    def _init_state(self, p: Tensor, state: dict, group: dict, pos: tuple[int, int]) -> None:
        state["interval"] = self._interval_for(p, group, pos)
        state["updates"] = 0  # k: applied (due) updates
        state["memory"] = torch.zeros((3, *p.shape), dtype=p.dtype, device=p.device)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if group["accumulate"]:
            state["acc"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["acc_count"] = 0
        if group["blend_mode"] == "adaptive":
            state["blend_logits"] = torch.tensor(group["fixed_weights"], dtype=p.dtype, device=p.device)
        if group["beta1"] is not None:
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        s = self.global_step + 1
        self.state[_GLOBAL_STEP_KEY] = s
        for gi, group in enumerate(self.param_groups):
            spe = group["steps_per_epoch"]
            lr = group["lr"] if spe is None else sawtooth_lr(
                s, group["lr"], spe, group["lr_warmup_fraction"], group["lr_hold_fraction"],
                group["lr_decay_fraction"], group["lr_min_fraction"], group["lr_warmup_start_fraction"])
            for pi, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                g = p.grad
                if g.is_sparse:
                    raise RuntimeError("MultiTimescaleMemoryOpt does not support sparse gradients")
                state = self.state[p]
                if "memory" not in state:
                    self._init_state(p, state, group, (gi, pi))
                self._update_param(p, g, state, group, s, lr)
        return loss

    def _update_param(self, p: Tensor, g: Tensor, state: dict, group: dict, s: int, lr: float) -> None:
        memory = state["memory"]
        update_memories_(memory, low_rank(g, group["compression_rank"]), group["decays"])
        accumulate = "acc" in state
        if not should_update(s, state["interval"], group["warmup_steps"]):
            if accumulate:
                state["acc"].add_(g)
                state["acc_count"] += 1
            return
        if accumulate and state["acc_count"] > 0:
            e = state["acc"].add_(g).div_(state["acc_count"] + 1)  # mean including the current g
        else:
            e = g
        mode = group["blend_mode"]
        w = blend_weights(mode, e, memory, group["fixed_weights"], state.get("blend_logits"))
        h = effective_gradient(e, memory, w, group["mix"])
        state["updates"] += 1
        k = state["updates"]
        b2 = group["beta2"]
        v = state["exp_avg_sq"]
        v.mul_(b2).addcmul_(h, h, value=1.0 - b2)
        if "max_exp_avg_sq" in state:
            torch.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
            v = state["max_exp_avg_sq"]
        # The seed corrects with the GLOBAL step + 1 (its counter is already incremented), whatever
        # the parameter's interval; the fixed version uses the number of updates v has actually seen.
        bc = 1.0 - b2 ** (s + 1) if self.kf_compat else 1.0 - b2 ** k
        num = h
        if "exp_avg" in state:
            b1 = group["beta1"]
            state["exp_avg"].mul_(b1).add_(h, alpha=1.0 - b1)
            num = state["exp_avg"] / (1.0 - b1 ** k)
        denom = (v / bc).sqrt_().add_(group["eps"])
        p.addcdiv_(num, denom, value=-lr)
        if mode == "adaptive":
            # After the update, as the seed does: this step used softmax of the old logits.
            state["blend_logits"].add_(adaptive_logit_delta(e, memory), alpha=group["adaptive_lr"])
        if accumulate:
            state["acc"].zero_()
            state["acc_count"] = 0


# --------------------------------------------------------------------------------------------------
# Strategy registration

from nlbench.core.registry import HParam, Parts, register_strategy, trainable  # noqa: E402


@register_strategy(
    "nl-memory",
    description="multi-timescale memory optimizer: 3-tier gradient memory, depth-clocked updates (S001, NL §6)",
    family="nested-learning",
    provides_optimizer=True,
    hparams=(
        HParam("lr", 1e-3, "float", "learning rate", low=0.0, high=10.0),
        HParam("max_interval", 6, "int", "largest depth-based update interval M", low=1, high=100_000),
        HParam("schedule_curve", "cosine", "str", "interval curve over depth", choices=("linear", "exponential", "cosine")),
        HParam("blend_mode", "attention", "str", "how the three memories are blended", choices=("fixed", "adaptive", "attention")),
        HParam("warmup_steps", 0, "int", "steps during which every variable updates", low=0, high=10_000_000),
        HParam("kf_compat", True, "bool", "reproduce the seed optimizer's quirks (see nl-math.md §6.3)"),
    ),
)
def build(ctx, hp):
    def factory(model, params=None):
        return MultiTimescaleMemoryOpt(
            trainable(model, params), lr=hp["lr"], model=model, kf_compat=hp["kf_compat"],
            blend_mode=hp["blend_mode"], max_interval=hp["max_interval"], schedule_curve=hp["schedule_curve"],
            warmup_steps=hp["warmup_steps"],
        )

    return Parts(optimizer=factory)
