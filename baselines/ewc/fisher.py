"""`PerSampleFisherEWC`: Avalanche's EWCPlugin with Mammoth's per-sample Fisher estimate.

Mammoth's online EWC (`models/ewc_on.py`, used by Buzzega et al. 2020 and by SFR, Scannell et al. 2024)
estimates the diagonal Fisher at the end of each task as

    F_i = (1/N) sum_n p(y_n | x_n) * (d log p(y_n | x_n) / d theta_i)^2

over the task's N training samples (p: the model's softmax probability of the true label), where
Avalanche squares the gradient of each minibatch's mean loss. Penalty, anchors and the online update
F <- decay_factor * F + F_new are Avalanche's, unchanged.

Per-sample gradients come from `torch.func` (vmap of grad over a functional call), in chunks; a
multi-head model (task labels in the forward pass) is handled one sample at a time instead, because
its forward branches on the task labels it is given.
"""

from __future__ import annotations

from typing import Any

import torch
from avalanche.models import MultiTaskModule
from avalanche.training.plugins import EWCPlugin
from avalanche.training.utils import ParamData, zerolike_params_dict
from torch.utils.data import DataLoader

CHUNK = 256  # samples per vmap call: bounds the memory of the per-sample gradients


class PerSampleFisherEWC(EWCPlugin):
    """EWC whose importances are Mammoth's p(y|x)-weighted per-sample Fisher (module docstring)."""

    def _chunks(self, dataset: Any, device: Any):
        loader = DataLoader(dataset, batch_size=CHUNK, collate_fn=getattr(dataset, "collate_fn", None))
        for batch in loader:
            yield batch[0].to(device), batch[1].to(device), batch[-1].to(device)

    def compute_importances(self, model, criterion, optimizer, dataset, device, batch_size, num_workers=0):
        was_training = model.training
        model.eval()
        importances = zerolike_params_dict(model)
        names = [name for name, p in model.named_parameters() if p.requires_grad]
        total = 0
        for x, y, t in self._chunks(dataset, device):
            grads, weight = (_per_sample_loop if isinstance(model, MultiTaskModule) else _per_sample_vmap)(model, names, x, y, t)
            for name in names:
                g = grads[name]
                importances[name].data += (weight.view(-1, *([1] * (g.dim() - 1))) * g.pow(2)).sum(0)
            total += len(y)
        for name in names:
            importances[name].data /= float(max(total, 1))
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


def _per_sample_vmap(model, names, x, y, t):
    """{name: (B, *shape) gradients of log p(y_n | x_n)} and the (B,) weights p(y_n | x_n)."""
    from torch.func import functional_call, grad, vmap

    params = {name: p.detach() for name, p in model.named_parameters() if name in names}
    frozen = {name: p.detach() for name, p in model.named_parameters() if name not in names}
    buffers = dict(model.named_buffers())

    def log_prob(p, xi, yi):
        out = functional_call(model, {**p, **frozen, **buffers}, (xi.unsqueeze(0),))
        return torch.log_softmax(out, dim=-1)[0].gather(0, yi.view(1)).squeeze(0)

    grads = vmap(grad(log_prob), in_dims=(None, 0, 0))(params, x, y)
    with torch.no_grad():
        weight = torch.softmax(model(x), dim=-1).gather(1, y.view(-1, 1)).squeeze(1)
    return grads, weight


def _per_sample_loop(model, names, x, y, t):
    """The same as `_per_sample_vmap`, one backward pass per sample (multi-head models)."""
    params = dict(model.named_parameters())
    grads = {name: torch.zeros((len(y), *params[name].shape), device=x.device) for name in names}
    weight = torch.zeros(len(y), device=x.device)
    for n in range(len(y)):
        model.zero_grad(set_to_none=True)
        log_p = torch.log_softmax(model(x[n : n + 1], t[n : n + 1]), dim=-1)[0, y[n]]
        log_p.backward()
        weight[n] = log_p.detach().exp()
        for name in names:
            if params[name].grad is not None:
                grads[name][n] = params[name].grad
    model.zero_grad(set_to_none=True)
    return grads, weight
