"""Task-incremental heads: logit masking to a task's classes, or one head per task.

Both are Avalanche `MultiTaskModule`s, so Avalanche's templates pass the minibatch's task labels to
`forward(x, task_labels)`.
"""

from __future__ import annotations

import torch
from avalanche.models import MultiHeadClassifier, MultiTaskModule
from torch import nn

# Large and negative but finite: -inf would turn LwF's p*log(p) and DER's logit MSE into NaN.
MASKED_LOGIT = -1e4


class TaskMaskedNet(MultiTaskModule):
    """One shared head; logits of classes outside the sample's task are masked (task-IL as in DER)."""

    def __init__(self, backbone: nn.Module, experience_classes: list[list[int]], n_classes: int):
        super().__init__()
        self.backbone = backbone
        allowed = torch.zeros(len(experience_classes), n_classes, dtype=torch.bool)  # (tasks, classes)
        for task, classes in enumerate(experience_classes):
            allowed[task, classes] = True
        self.register_buffer("allowed", allowed, persistent=False)

    def forward(self, x: torch.Tensor, task_labels: torch.Tensor | int | None) -> torch.Tensor | dict[int, torch.Tensor]:
        logits = self.backbone(x)  # (B, n_classes): one pass over the whole batch keeps BatchNorm honest
        if task_labels is None:  # Avalanche's "all tasks" call (LwF distils with it): {task: its masked logits}
            tasks = sorted(getattr(self, "known_train_tasks_labels", None) or range(len(self.allowed)))
            return {t: logits.masked_fill(~self.allowed[t], MASKED_LOGIT) for t in tasks}
        if isinstance(task_labels, int):
            task_labels = torch.full((x.shape[0],), task_labels, device=x.device, dtype=torch.long)
        return logits.masked_fill(~self.allowed[task_labels.long()], MASKED_LOGIT)

    def forward_single_task(self, x: torch.Tensor, task_label: int) -> torch.Tensor:
        return self.forward(x, task_label)


class MultiHeadNet(MultiTaskModule):
    """The backbone's features feed one Avalanche head per task (heads are added as tasks appear)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        head = backbone.classifier
        backbone.classifier = nn.Identity()
        self.backbone = backbone
        self.classifier = MultiHeadClassifier(head.in_features, initial_out_features=head.out_features)

    def forward_single_task(self, x: torch.Tensor, task_label: int) -> torch.Tensor:
        return self.classifier(self.backbone(x), task_label)

    def forward(self, x: torch.Tensor, task_labels: torch.Tensor | int) -> torch.Tensor:
        features = self.backbone(x)  # (B, d): shared, computed once for a mixed-task batch
        return self.classifier(features, task_labels)


def unwrap_backbone(model: nn.Module) -> nn.Module:
    """The backbone inside a task-scenario wrapper (mask / multi-head), or `model` itself."""
    return model.backbone if isinstance(model, (TaskMaskedNet, MultiHeadNet)) else model


def replace_backbone(model: nn.Module, backbone: nn.Module) -> nn.Module:
    """`model` with its backbone replaced, keeping the scenario wrapper (mask / multi-head). A multi-head
    net is rebuilt around `backbone`, whose own `classifier` sizes the new heads."""
    if isinstance(model, TaskMaskedNet):
        model.backbone = backbone
        return model
    if isinstance(model, MultiHeadNet):
        return MultiHeadNet(backbone)
    return backbone


def wrap_for_scenario(backbone: nn.Module, head: str, experience_classes: list[list[int]], n_classes: int) -> nn.Module:
    if head == "single":
        return backbone
    if head == "mask":
        return TaskMaskedNet(backbone, experience_classes, n_classes)
    if head == "multi":
        return MultiHeadNet(backbone)
    raise ValueError(f"unknown head {head!r}")
