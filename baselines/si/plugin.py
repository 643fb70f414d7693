"""`SynapticIntelligence`, our Avalanche plugin for Synaptic Intelligence (Zenke, Poole & Ganguli, ICML 2017).

Path integral, per parameter k, accumulated at every step of experience t:
    omega_k += -g_k * (theta_k(after step) - theta_k(before step))
with g the gradient of the task loss alone (the SI penalty's own gradient removed, as in the
authors' code). At the end of experience t:
    Omega_k += max(0, omega_k / ((theta_k(end of t) - theta_k(start of t))^2 + xi)),
    anchor theta*_k <- theta_k(end of t),  omega_k <- 0.
Loss on later experiences: L + c * sum_k Omega_k (theta_k - theta*_k)^2.

Why not Avalanche's SynapticIntelligencePlugin: in avalanche-lib 0.6 it stores the "old" weights as
`param.detach().cpu().flatten()`, which on CPU is a view of the live parameter, so the trajectory and
every importance stay 0 and SI is bitwise equal to naive fine-tuning. Clamping Omega at 0 is our
decision: a negative importance would turn the penalty into a reward for drifting from the anchor.
"""

from __future__ import annotations

import torch
from avalanche.core import SupervisedPlugin


class SynapticIntelligence(SupervisedPlugin):
    """SI's path integral and quadratic penalty in Avalanche's hooks (the rule: the module docstring)."""

    def __init__(self, si_lambda: float, xi: float):
        super().__init__()
        self.si_lambda = si_lambda
        self.xi = xi
        self.importance: dict[str, torch.Tensor] = {}  # Omega
        self.anchor: dict[str, torch.Tensor] = {}  # theta*
        self.path: dict[str, torch.Tensor] = {}  # omega, for the current experience
        self.start: dict[str, torch.Tensor] = {}
        self._before_step: dict[str, torch.Tensor] = {}
        self._task_grad: dict[str, torch.Tensor] = {}

    def _params(self, strategy):
        return [(n, p) for n, p in strategy.model.named_parameters() if p.requires_grad]

    def before_training_exp(self, strategy, **kwargs):
        for name, p in self._params(strategy):
            self.start[name] = p.detach().clone()
            self.path[name] = torch.zeros_like(p)

    def before_backward(self, strategy, **kwargs):
        penalty = None
        for name, p in self._params(strategy):
            if name in self.importance:
                term = (self.importance[name] * (p - self.anchor[name]) ** 2).sum()
                penalty = term if penalty is None else penalty + term
        if penalty is not None:
            strategy.loss = strategy.loss + self.si_lambda * penalty

    def before_update(self, strategy, **kwargs):
        for name, p in self._params(strategy):
            if p.grad is None:
                continue
            grad = p.grad.detach()
            if name in self.importance:  # remove d/dtheta of c * Omega (theta - theta*)^2
                grad = grad - 2 * self.si_lambda * self.importance[name] * (p.detach() - self.anchor[name])
            self._task_grad[name] = grad.clone()
            self._before_step[name] = p.detach().clone()

    @torch.no_grad()
    def after_update(self, strategy, **kwargs):
        for name, p in self._params(strategy):
            if name in self._before_step:
                self.path[name] -= self._task_grad[name] * (p - self._before_step[name])
        self._before_step.clear()
        self._task_grad.clear()

    @torch.no_grad()
    def after_training_exp(self, strategy, **kwargs):
        for name, p in self._params(strategy):
            delta = p - self.start[name]
            gained = (self.path[name] / (delta**2 + self.xi)).clamp_(min=0)
            self.importance[name] = self.importance[name] + gained if name in self.importance else gained
            self.anchor[name] = p.detach().clone()

    def state_dict(self) -> dict:
        """Omega and theta*, for checkpoints inside a run (nlbench.core.checkpoint); omega and the
        experience's start are reset before every experience."""
        return {"importance": dict(self.importance), "anchor": dict(self.anchor)}

    def load_state_dict(self, state: dict) -> None:
        self.importance = dict(state["importance"])
        self.anchor = dict(state["anchor"])
