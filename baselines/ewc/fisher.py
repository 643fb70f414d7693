"""`PerSampleFisherEWC`: Avalanche's EWCPlugin with Mammoth's per-sample Fisher estimate.

Mammoth's online EWC (`models/ewc_on.py`, used by Buzzega et al. 2020 and by SFR, Scannell et al. 2024)
estimates the diagonal Fisher at the end of each task as

    F_i = (1/N) sum_n p(y_n | x_n) * (d log p(y_n | x_n) / d theta_i)^2

over the task's N training samples (p: the model's softmax probability of the true label), where
Avalanche squares the gradient of each minibatch's mean loss. Penalty, anchors and the online update
F <- decay_factor * F + F_new are Avalanche's, unchanged.

Computing it: when every trainable parameter belongs to an `nn.Linear` that runs once per forward pass
(the MLPs), the sum over samples is exact in one backward pass per chunk: a Linear's per-sample weight
gradient is the outer product g_n x_n^T of its output gradient and its input, so
sum_n w_n (g_n x_n^T)^2 = (w * g^2)^T (x^2) (elementwise squares; the bias term is sum_n w_n g_n^2).
Any other model takes one backward pass per sample (`_per_sample_loop`), which is exact but slower.
"""

from __future__ import annotations

from typing import Any

import torch
from avalanche.models import MultiTaskModule, avalanche_forward
from avalanche.training.plugins import EWCPlugin
from avalanche.training.utils import ParamData, zerolike_params_dict
from torch.utils.data import DataLoader

CHUNK = 256  # samples per backward pass on the Linear path


class PerSampleFisherEWC(EWCPlugin):
    """EWC whose importances are Mammoth's p(y|x)-weighted per-sample Fisher (module docstring)."""

    def compute_importances(self, model, criterion, optimizer, dataset, device, batch_size, num_workers=0):
        was_training = model.training
        model.eval()
        importances = zerolike_params_dict(model)
        sums = {name: imp.data for name, imp in importances.items()}
        linear = _linear_layers(model)
        total = 0
        for batch in DataLoader(dataset, batch_size=CHUNK, collate_fn=getattr(dataset, "collate_fn", None)):
            x, y, t = batch[0].to(device), batch[1].to(device), batch[-1].to(device)
            (_linear_sums if linear is not None else _per_sample_loop)(model, linear, x, y, t, sums)
            total += len(y)
        for imp in importances.values():
            imp.data /= float(max(total, 1))
        model.zero_grad(set_to_none=True)
        model.train(was_training)
        return importances

    def state_dict(self) -> dict:
        """Anchors theta*_k and Fishers F_k per experience, as plain tensors (nlbench.core.checkpoint)."""
        def plain(table: Any) -> dict:
            return {k: {name: data.data for name, data in params.items()} for k, params in table.items()}

        return {"saved_params": plain(self.saved_params), "importances": plain(self.importances)}

    def load_state_dict(self, state: dict) -> None:
        for key in ("saved_params", "importances"):
            table = getattr(self, key)
            table.clear()
            for k, params in state[key].items():
                table[k] = {name: ParamData(name, init_tensor=t, device=t.device) for name, t in params.items()}


def _log_p_true(model, x, y, t) -> torch.Tensor:
    """log p(y_n | x_n) for every sample of the chunk, shape (B,)."""
    return torch.log_softmax(avalanche_forward(model, x, t), dim=-1).gather(1, y.view(-1, 1)).squeeze(1)


def _linear_layers(model) -> dict[str, torch.nn.Linear] | None:
    """{module name: Linear} when every trainable parameter is a weight or bias of a Linear; else None."""
    if isinstance(model, MultiTaskModule):
        return None
    layers = {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    owned = {f"{name}.{p}" for name, m in layers.items() for p, param in m.named_parameters(recurse=False) if param.requires_grad}
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    return layers if layers and owned == trainable else None


def _linear_sums(model, layers, x, y, t, sums) -> None:
    """Add sum_n p_n (d log p_n / d theta)^2 of every Linear parameter to `sums`, in one backward pass."""
    inputs: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    outputs: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    handles = []
    for name, layer in layers.items():
        def hook(module, args, out, name=name):
            inputs[name].append(args[0].detach())
            out.retain_grad()
            outputs[name].append(out)
        handles.append(layer.register_forward_hook(hook))
    try:
        log_p = _log_p_true(model, x, y, t)
    finally:
        for handle in handles:
            handle.remove()
    # A layer that ran twice (shared weights) or on (B, L, d) tokens sums several outer products per sample,
    # whose square is not the sum of their squares: those models take the per-sample loop.
    if any(len(outputs[name]) != 1 or inputs[name][0].dim() != 2 for name in layers):
        _per_sample_loop(model, None, x, y, t, sums)
        return
    weight = log_p.detach().exp()
    model.zero_grad(set_to_none=True)
    log_p.sum().backward()  # each sample's log p depends on its own row only: row n of a grad is g_n
    with torch.no_grad():
        for name, layer in layers.items():
            a, g = inputs[name][0], outputs[name][0].grad
            wg2 = weight.unsqueeze(1) * g.pow(2)
            if layer.weight.requires_grad:
                sums[f"{name}.weight"] += wg2.T @ a.pow(2)
            if layer.bias is not None and layer.bias.requires_grad:
                sums[f"{name}.bias"] += wg2.sum(0)


def _per_sample_loop(model, layers, x, y, t, sums) -> None:
    """The same sums, one backward pass per sample (any model)."""
    params = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    for n in range(len(y)):
        model.zero_grad(set_to_none=True)
        log_p = _log_p_true(model, x[n : n + 1], y[n : n + 1], t[n : n + 1])[0]
        log_p.backward()
        weight = log_p.detach().exp()
        with torch.no_grad():
            for name, p in params:
                if p.grad is not None:
                    sums[name] += weight * p.grad.pow(2)
