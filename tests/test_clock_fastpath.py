"""The ClockedOptimizer's merged fast path caches what it derives from the levels (the lcm of the periods,
the synced lrs, the bases' groups, their parameters in the model's order, the state map). Each test here
changes one of those things between two steps and checks, against a twin that steps the levels one by one
(the slow path), that the cache was not stale: bitwise equal parameters, and the fast path taken again
wherever it applies."""

from __future__ import annotations

import copy

import torch
from torch import nn

import pytest

from nlbench.models import MLP, MLPConfig
from nlbench.strategies.cms.clocks import ClockedOptimizer
from nlbench.strategies.cms.wiring import wire_clocks

pytestmark = pytest.mark.usefixtures("one_thread")


def _mlp():
    torch.manual_seed(0)
    return MLP(MLPConfig(input_dim=12, hidden=(16, 16, 16), n_classes=5))  # three body layers -> 3 levels


def _batches(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 12, generator=g), torch.randint(5, (8,), generator=g)) for _ in range(n)]


def _adam(model, params):
    return torch.optim.Adam(params, lr=1e-2)


class _Pair:
    """The same model and clocked Adam twice: `fast` may take the merged step, `slow` never does (a step
    hook on one of its bases sends it level by level). Counts the merged steps of `fast`."""

    def __init__(self, periods=(1, 1, 1)):
        self.models = [_mlp(), _mlp()]
        self.fast, self.slow = (ClockedOptimizer(wire_clocks(m, periods, by="depth"), _adam, model=m)
                                for m in self.models)
        self.slow.bases[0].register_step_pre_hook(lambda *args: None)
        self.merged = 0
        inner = self.fast._step_all_merged

        def counting(s, clock):
            took = inner(s, clock)
            self.merged += took
            return took

        self.fast._step_all_merged = counting

    def both(self, change):
        change(self.fast)
        change(self.slow)

    def train(self, batches):
        for x, y in batches:
            for model, optimizer in zip(self.models, (self.fast, self.slow)):
                optimizer.zero_grad()
                nn.functional.cross_entropy(model(x), y).backward()
                optimizer.step()
            assert all(torch.equal(a, b) for a, b in zip(*(m.parameters() for m in self.models)))


def test_an_lr_scheduler_reaches_every_level_of_the_merged_step():
    pair = _Pair()
    schedulers = [torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.3) for o in (pair.fast, pair.slow)]
    for x, y in _batches(7):
        pair.train([(x, y)])
        for scheduler in schedulers:
            scheduler.step()
    assert pair.merged == 7
    assert [b.param_groups[0]["lr"] for b in pair.fast.bases] == [b.param_groups[0]["lr"] for b in pair.slow.bases]


def test_a_period_changed_between_steps_stops_the_merged_step():
    pair = _Pair()
    pair.train(_batches(3))
    pair.both(lambda o: o.param_groups[1].__setitem__("period", 2))  # s = 4 is due, s = 5 is not
    pair.train(_batches(4, seed=2))
    assert pair.fast.level_updates == [7, 5, 7] and pair.fast.pending == [0, 1, 0]
    assert pair.merged == 4  # s = 1, 2, 3 and 4 (every level due, windows empty); not 5, 6 or 7


def test_a_level_with_its_own_settings_is_stepped_with_them():
    """One base's weight decay changed: the merged step runs the levels' own groups, not the first's."""
    pair = _Pair()
    pair.train(_batches(2))
    pair.both(lambda o: o.bases[1].param_groups[0].__setitem__("weight_decay", 0.5))
    pair.train(_batches(3, seed=2))
    pair.both(lambda o: o.bases[1].param_groups[0].__setitem__("weight_decay", 0))
    pair.train(_batches(2, seed=3))
    assert pair.merged == 7


def test_a_base_restored_on_its_own_gets_its_restored_groups_and_state():
    """`base.load_state_dict` of an older state gives the base new group dicts (here with another lr)
    and new state dicts."""
    pair = _Pair()
    pair.train(_batches(2))
    saved = [copy.deepcopy(o.bases[2].state_dict()) for o in (pair.fast, pair.slow)]  # live tensors otherwise
    pair.train(_batches(2, seed=2))
    for optimizer, sd in zip((pair.fast, pair.slow), saved):
        sd["param_groups"][0]["lr"] = 3e-2
        optimizer.bases[2].load_state_dict(sd)
    pair.train(_batches(3, seed=3))
    assert pair.merged == 7
    assert pair.fast.bases[2].param_groups[0]["lr"] == 3e-2


def test_a_level_added_later_is_part_of_the_merged_step():
    """add_param_group (a new task head, as the runner adds them): the head trains, bitwise as the twin's."""
    pair = _Pair()
    pair.train(_batches(2))
    heads = [nn.Linear(5, 5), nn.Linear(5, 5)]
    heads[1].load_state_dict(heads[0].state_dict())
    for model, head, optimizer in zip(pair.models, heads, (pair.fast, pair.slow)):
        model.head = head  # the twins' forward ignores it; give it a gradient by hand below
        optimizer.add_param_group({"params": list(head.parameters())})
    before = heads[0].weight.detach().clone()
    for x, y in _batches(3, seed=2):
        for model, head, optimizer in zip(pair.models, heads, (pair.fast, pair.slow)):
            optimizer.zero_grad()
            out = model(x)
            nn.functional.cross_entropy(head(out), y).backward()
            optimizer.step()
        assert all(torch.equal(a, b) for a, b in zip(*(m.parameters() for m in pair.models)))
    assert not torch.equal(heads[0].weight, before) and pair.fast.level_updates == [5, 5, 5, 3]
    assert pair.merged == 5


def test_a_step_hook_registered_later_runs_once_per_level_step():
    pair = _Pair()
    pair.train(_batches(2))
    calls = []
    handle = pair.fast.bases[1].register_step_post_hook(lambda *args: calls.append(1))
    pair.train(_batches(3, seed=2))
    assert len(calls) == 3 and pair.merged == 2
    handle.remove()
    pair.train(_batches(2, seed=3))
    assert len(calls) == 3 and pair.merged == 4
