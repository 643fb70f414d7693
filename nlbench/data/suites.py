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
- `domain`: domain-incremental (permuted-mnist, permuted-fmnist, rotated-fmnist): every experience has all
  classes, no task labels.

Domain-shift suites: `permuted` suites apply one seeded pixel permutation per experience
(`torch.randperm(H*W)` from a generator seeded with the run's seed, one draw per experience, in order);
`rotated` suites rotate every image of experience i by `rotation_angles(n)[i]` = i * 180 / n degrees
(bilinear, background fill), so experience 0 is the unrotated data and the angles are the same for every
seed. Both keep all ten classes in every experience.

Suite options (`SuiteOption`, `--suite-option KEY=VALUE`): a suite may declare options that change its
stream (the number of tasks of permuted-fmnist / rotated-fmnist, the regime of bigram-shift).
`configure_suite` validates them and returns the SuiteInfo they describe; a run's spec stores only the
options that were set, so run ids of runs without options do not change.

Sequence suites (kind "sequence"): `bigram-shift`, the two-regime bigram stream of
nl-math.md 5.2 built by `nlbench.data.bigram`; samples are (tokens (L,), next tokens (L,), task) and the model
returns (B, L, V) logits (the runner then uses a token-level loss and next-token accuracy).

Importing this module is cheap (no torch, no Avalanche): validation reads it. `nlbench.data.streams`
builds the streams.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nlbench.errors import UserError, exact_float


@dataclass(frozen=True)
class SuiteOption:
    """One declared suite option: default, kind ("int", "float" or "str"), bounds or choices, help."""

    name: str
    default: Any
    kind: str
    help: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()

    def listing(self) -> str:
        """`name=default`, then the valid values: every choice, or the range (`nlbench list` shows it)."""
        if self.choices:
            return f"{self.name}={self.default} (one of {', '.join(self.choices)})"
        if self.low is not None:
            return f"{self.name}={self.default} ({self.kind} in [{self.low:g}, {self.high:g}])"
        return f"{self.name}={self.default}"

    def parse(self, raw: Any, suite: str) -> Any:
        bad = UserError(f"suite option {self.name}={raw!r} is not valid for {suite}: {self.help}"
                        + (f"; valid: {', '.join(self.choices)}" if self.choices else
                           f"; valid: {self.kind} in [{self.low:g}, {self.high:g}]" if self.low is not None else ""))
        try:
            if self.kind == "float" and isinstance(raw, str):
                value = exact_float(raw, f"suite option {self.name}=")
            else:
                value = {"int": int, "float": float, "str": str}[self.kind](raw)
        except (TypeError, ValueError):
            raise bad from None
        if isinstance(raw, bool) or (self.kind == "int" and isinstance(raw, float) and raw != int(raw)):
            raise bad
        if self.choices and value not in self.choices:
            raise bad
        if self.low is not None and not (self.low <= value <= self.high):
            raise bad
        return value


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
    rotated: bool = False  # rotated-fmnist: experience i rotates all classes by rotation_angles(n)[i] degrees
    options: tuple[SuiteOption, ...] = ()  # declared suite options (see configure_suite)
    train_per_task: int = 0  # domain-shift suites: training images per experience (0: all), a seeded subset
    test_per_task: int = 0  # domain-shift suites: test images per experience (0: all), a seeded subset

    @property
    def domain_shift(self) -> bool:
        """Every experience holds every class (permuted or rotated)."""
        return self.permuted or self.rotated

    @property
    def default_scenario(self) -> str:
        return self.scenarios[0]

    @property
    def classes_per_experience(self) -> int:
        return self.n_classes if self.domain_shift else self.n_classes // self.n_experiences

    def default_head(self, scenario: str) -> str:
        if scenario != "task":
            return "single"
        # Masking to a task's classes is meaningless when every task has every class.
        return "multi" if self.domain_shift else "mask"


_TASK_OPTIONS = (
    SuiteOption("n_tasks", 10, "int", "number of experiences (tasks)", low=1, high=50),
    SuiteOption("train_per_task", 0, "int", "training images per task, a seeded subset (0: all 60000; "
                "each full task holds ~190 MB of float32 images)", low=0, high=60000),
    SuiteOption("test_per_task", 0, "int", "test images per task, a seeded subset of the 10000 (0: all; evaluating "
                "every task after every task costs T^2 passes, most of a long stream's time)", low=0, high=10000),
)
# bigram-shift's regimes (nlbench.data.bigram.REGIMES); in-context variants default to 640 optimizer steps
# per experience, 10x the slowest default clock period (64), at the suite's batch 64 and 2 epochs.
_BIGRAM_OPTIONS = (
    SuiteOption("regime", "blocked", "str", "blocked (A then B), mixture (mix/1-mix of A/B, then 1-mix/mix), "
                "alternating (A,B,A,B,... short blocks), reexposure (A, B, A)",
                choices=("blocked", "mixture", "alternating", "reexposure")),
    SuiteOption("mix", 0.9, "float", "mixture: share of regime A in the first experience", low=0.5, high=1.0),
    SuiteOption("blocks", 6, "int", "alternating: number of experiences", low=2, high=50),
    SuiteOption("steps", 0, "int", "optimizer steps per experience at the suite's batch size and epochs "
                "(0: 640 for in-context regimes, the blocked default's 4096 sequences otherwise)", low=0, high=100_000),
)

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
        SuiteInfo("permuted-fmnist", "fashion-mnist", 10, 10, (1, 28, 28), "mlp", 1, 128, ("domain", "task"),
                  "Fashion-MNIST under seeded pixel permutations (10 tasks; n_tasks up to 50), all 10 classes each",
                  permuted=True, options=_TASK_OPTIONS),
        SuiteInfo("rotated-fmnist", "fashion-mnist", 10, 10, (1, 28, 28), "mlp", 1, 128, ("domain", "task"),
                  "Fashion-MNIST rotated by i*180/n degrees in task i (10 tasks; n_tasks up to 50), all 10 classes each",
                  rotated=True, options=_TASK_OPTIONS),
        SuiteInfo("split-cifar10", "cifar10", 5, 10, (3, 32, 32), "reduced-resnet18", 50, 32, ("class", "task"),
                  "CIFAR-10, 5 experiences x 2 classes (DER protocol sizes: 50 epochs, batch 32)", augment=True),
        SuiteInfo("split-cifar100", "cifar100", 10, 100, (3, 32, 32), "reduced-resnet18", 50, 32, ("class", "task"),
                  "CIFAR-100, 10 experiences x 10 classes", augment=True),
        SuiteInfo("bigram-shift", "bigram", 2, 32, (32,), "transformer", 2, 64, ("domain",),
                  "synthetic two-regime bigram stream (V=32, L=32, eps=0.1; regime A then B), next-token accuracy",
                  kind="sequence", backbones=("transformer",), options=_BIGRAM_OPTIONS,
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


def rotation_angles(n_tasks: int) -> list[float]:
    """Degrees of rotation of each task of a rotated suite: i * 180 / n_tasks (task 0 unrotated)."""
    return [i * 180.0 / n_tasks for i in range(n_tasks)]


def parse_suite_options(suite: SuiteInfo, options: Any) -> tuple[tuple[str, Any], ...]:
    """Validate KEY=VALUE suite options; returns the sorted (key, value) pairs that differ from the default."""
    declared = {o.name: o for o in suite.options}
    resolved = {}
    for key, raw in dict(options or {}).items():
        if key not in declared:
            valid = ", ".join(declared) or "none"
            raise UserError(f"unknown suite option {key!r} for {suite.name}; valid: {valid}")
        value = declared[key].parse(raw, suite.name)
        if value != declared[key].default:
            resolved[key] = value
    return tuple(sorted(resolved.items()))


def configure_suite(suite: SuiteInfo | str, options: Any = ()) -> SuiteInfo:
    """The SuiteInfo that `options` (validated, see parse_suite_options) describe."""
    import dataclasses

    info = get_suite(suite) if isinstance(suite, str) else suite
    values = dict(parse_suite_options(info, dict(options)))
    if not values:
        return info
    if info.kind == "sequence":
        regime = values.get("regime", "blocked")
        n = {"blocked": 2, "mixture": 2, "reexposure": 3, "alternating": values.get("blocks", 6)}[regime]
        sequence = {**info.sequence_options, **{k: values[k] for k in ("regime", "mix", "blocks", "steps") if k in values}}
        return dataclasses.replace(info, n_experiences=n, sequence_options=sequence)
    n = values.get("n_tasks", info.n_experiences)
    return dataclasses.replace(info, n_experiences=n, train_per_task=values.get("train_per_task", 0),
                               test_per_task=values.get("test_per_task", 0))


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
