"""The task-masked head answers Avalanche's "all tasks" call, which LwF uses to distil."""

from __future__ import annotations

import torch

from nlbench.core.runner import run_one
from nlbench.core.spec import resolve_spec
from nlbench.models.heads import MASKED_LOGIT, TaskMaskedNet


def test_all_tasks_call_gives_each_seen_task_its_masked_logits():
    net = TaskMaskedNet(torch.nn.Linear(3, 4), [[0, 1], [2, 3]], n_classes=4)
    x = torch.randn(5, 3)
    out = net(x, None)
    assert isinstance(out, dict) and sorted(out) == [0, 1]
    assert torch.equal(out[1], net(x, 1))  # the same as asking for task 1 by its label
    assert (out[0][:, 2:] == MASKED_LOGIT).all() and (out[0][:, :2] != MASKED_LOGIT).all()


def test_lwf_runs_task_incremental_with_the_masked_head(one_thread):
    spec = resolve_spec("split-digits", "lwf", device="cpu", scenario="task", head="mask", epochs=1)
    result = run_one(spec)  # the task-incremental stream, built by the runner
    assert result["status"] == "completed", result["error"]
    assert len(result["accuracy_matrix"]) == 5
