"""Benchmark streams by name: real Avalanche benchmarks plus the metadata a run needs.

Every suite reads its raw arrays through `nlbench.data.readers` (real torchvision readers, or scikit-learn's
bundled digits), normalises them once into tensors, and splits them into experiences that Avalanche's
`benchmark_from_datasets` turns into train/test streams. Classes are assigned to experiences in their
natural order ((0,1), (2,3), ...), as in the DER/Mammoth protocols, so every seed sees the same
stream and runs differ only by initialisation and data order.

Scenarios:
- `class`: class-incremental, one head over all classes, no task labels at test time.
- `task`: task-incremental, the experience index is the task label; the head is either masked to the
  task's classes (`head="mask"`) or one head per task (`head="multi"`, Avalanche MultiHeadClassifier).
- `domain`: domain-incremental (permuted-mnist): every experience has all classes, no task labels.

Sequence suites (kind "sequence"): `bigram-shift`, the two-regime bigram stream of
nl-math.md 5.2 built by `nlbench.data.bigram`; samples are (tokens (L,), next tokens (L,), task) and the model
returns (B, L, V) logits (the runner then uses a token-level loss and next-token accuracy).

Importing this module is cheap (no torch, no Avalanche): validation reads it. `nlbench.data.streams`
builds the streams.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nlbench.errors import UserError


@dataclass(frozen=True)
class SuiteInfo:
    name: str
    dataset: str  # key for nlbench.data.readers.load_arrays
    n_experiences: int
    n_classes: int
    input_shape: tuple[int, ...]  # (C, H, W) as fed to the model
    backbone: str
    epochs: int
    batch_size: int
    scenarios: tuple[str, ...]
    description: str
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    augment: bool = False  # random crop + horizontal flip during training (CIFAR)
    permuted: bool = False  # permuted-mnist: each experience is a fixed pixel permutation of all classes
    # Sequence suites (kind="sequence"): input_shape is (L,) token ids, n_classes is the vocabulary size,
    # the model returns (B, L, V) logits and accuracy is next-token accuracy (see nlbench.data.bigram).
    kind: str = "image"
    sequence_options: dict[str, Any] = field(default_factory=dict)  # generator options (nlbench.data.bigram)
    backbones: tuple[str, ...] | None = None  # the backbones that fit the suite (None: any image backbone)
    unsupported: dict[str, str] = field(default_factory=dict)  # strategy component -> why it cannot run

    @property
    def default_scenario(self) -> str:
        return self.scenarios[0]

    @property
    def classes_per_experience(self) -> int:
        return self.n_classes if self.permuted else self.n_classes // self.n_experiences

    def default_head(self, scenario: str) -> str:
        if scenario != "task":
            return "single"
        # Masking to a task's classes is meaningless when every task has every class.
        return "multi" if self.permuted else "mask"


SUITES: dict[str, SuiteInfo] = {
    s.name: s
    for s in [
        SuiteInfo("split-digits", "digits", 5, 10, (1, 8, 8), "mlp", 5, 32, ("class", "task"),
                  "scikit-learn's bundled 8x8 digits, 5 experiences x 2 classes (embedded, offline)",
                  backbone_kwargs={"hidden": (100, 100)}),
        SuiteInfo("split-fmnist", "fashion-mnist", 5, 10, (1, 28, 28), "mlp", 1, 128, ("class", "task"),
                  "Fashion-MNIST, 5 experiences x 2 classes"),
        SuiteInfo("split-mnist", "mnist", 5, 10, (1, 28, 28), "mlp", 1, 128, ("class", "task"),
                  "MNIST, 5 experiences x 2 classes"),
        SuiteInfo("permuted-mnist", "mnist", 10, 10, (1, 28, 28), "mlp", 1, 128, ("domain", "task"),
                  "MNIST under 10 fixed random pixel permutations (seeded), all 10 classes each",
                  permuted=True),
        SuiteInfo("split-cifar10", "cifar10", 5, 10, (3, 32, 32), "reduced-resnet18", 50, 32, ("class", "task"),
                  "CIFAR-10, 5 experiences x 2 classes (DER protocol sizes: 50 epochs, batch 32)", augment=True),
        SuiteInfo("split-cifar100", "cifar100", 10, 100, (3, 32, 32), "reduced-resnet18", 50, 32, ("class", "task"),
                  "CIFAR-100, 10 experiences x 10 classes", augment=True),
        SuiteInfo("bigram-shift", "bigram", 2, 32, (32,), "transformer", 2, 64, ("domain",),
                  "synthetic two-regime bigram stream (V=32, L=32, eps=0.1; regime A then B), next-token accuracy",
                  kind="sequence", backbones=("transformer",),
                  sequence_options={"eps": 0.1, "n_train": 4096, "n_test": 512, "overlap": 0.0},
                  unsupported={
                      "lwf": "LwF distils per-sample class logits over the classes of past experiences (here: "
                             "regime ids), which has no meaning for next-token logits",
                      "der": "Avalanche's DER computes its replay losses with F.cross_entropy on (B, C) logits "
                             "and cannot take (B, L, V) sequence logits",
                  }),
    ]
}
ALIASES = {"split-cifar": "split-cifar10"}
DEFAULT_SUITE = "split-digits"

def get_suite(name: str) -> SuiteInfo:
    name = ALIASES.get(name, name)
    if name not in SUITES:
        raise UserError(f"unknown suite {name!r}; valid: {', '.join([*SUITES, *ALIASES])}")
    return SUITES[name]


def check_compatible(suite: SuiteInfo, strategy: str, backbone: str) -> None:
    """Raise UserError when a component of `strategy`, or `backbone`, cannot run on `suite`."""
    for part in (p.strip() for p in strategy.split("+")):
        if part in suite.unsupported:
            raise UserError(f"strategy {part!r} cannot run on the {suite.kind} suite {suite.name}: {suite.unsupported[part]}")
    if suite.backbones is not None and backbone not in suite.backbones:
        raise UserError(f"backbone {backbone!r} does not fit the {suite.kind} suite {suite.name}; valid: {', '.join(suite.backbones)}")
    sequence_only = {b for s in SUITES.values() if s.kind == "sequence" for b in (s.backbones or ())}
    if suite.kind != "sequence" and backbone in sequence_only:
        raise UserError(f"backbone {backbone!r} takes token sequences; the {suite.kind} suite {suite.name} needs an image backbone")


@dataclass
class Benchmark:
    """An Avalanche benchmark plus what the runner and strategies need to know about it."""

    suite: SuiteInfo
    scenario: str
    train_stream: Any
    test_stream: Any
    experience_classes: list[list[int]]  # classes of each experience, in stream order
