"""The synthetic two-regime bigram stream `bigram-shift` (nl-math.md 5.2) and the sequence-suite seam.

Regime r in {A, B} is a permutation pi_r of the vocabulary {0..V-1}; its transition law is

    P_r(j | i) = (1 - eps) [j == pi_r(i)] + eps / V

pi_B disagrees with pi_A on every token (overlap 0), or agrees on round(overlap * V) of them.
A sequence draws x_0 ~ Uniform(V), then x_{t+1} ~ P_r(. | x_t) up to length L + 1; the input is
x_0..x_{L-1} and the target x_1..x_L. Defaults: V = 32, L = 32, eps = 0.1, 4096 train and 512 test
sequences per regime. The data is seed-fixed: the suite uses one data seed (DATA_SEED) whatever the
run's seed, like the image suites, whose streams are the same for every seed.

Bayes-optimal next-token accuracy is 1 - eps + eps/V (0.903125 at the defaults); Bayes cross-entropy
is -(p log p + (V-1) q log q) with p = 1 - eps + eps/V, q = eps/V (0.6508 nats).

Avalanche: experience 1 is regime A, experience 2 regime B. A sample is (x (L,) int64, y (L,) int64,
task 0); its `targets` entry (what class timelines and class-balanced buffers read) is the regime id.
The model returns (B, L, V) logits: `SequenceCrossEntropy` (the criterion of sequence suites) flattens
them for the loss, and `FlattenSequenceOutputs` flattens them after every eval forward so Avalanche's
accuracy metric reports next-token accuracy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from avalanche.core import SupervisedPlugin
from torch import Tensor

DATA_SEED = 0  # the stream is seed-fixed (nl-math.md 5.2)


@dataclass(frozen=True)
class BigramData:
    """Permutations (R, V) and, per regime, train/test (inputs (N, L), targets (N, L)) int64 tensors."""

    perms: Tensor
    train: list[tuple[Tensor, Tensor]]
    test: list[tuple[Tensor, Tensor]]
    vocab_size: int
    eps: float


def bayes_accuracy(vocab_size: int = 32, eps: float = 0.1) -> float:
    return 1.0 - eps + eps / vocab_size


def bayes_cross_entropy(vocab_size: int = 32, eps: float = 0.1) -> float:
    p, q = 1.0 - eps + eps / vocab_size, eps / vocab_size
    return -(p * math.log(p) + ((vocab_size - 1) * q * math.log(q) if q > 0 else 0.0))


def _derangement(n: int, generator: torch.Generator) -> Tensor:
    """A uniformly random permutation of range(n) without fixed points (rejection sampling, n >= 2)."""
    while True:
        sigma = torch.randperm(n, generator=generator)
        if not (sigma == torch.arange(n)).any():
            return sigma


def regime_permutations(vocab_size: int, overlap: float, generator: torch.Generator) -> Tensor:
    """(2, V): pi_A uniform; pi_B agrees with pi_A on exactly round(overlap * V) tokens (one fewer when
    exactly one token would be left to disagree, which is impossible for a permutation)."""
    if not 0.0 <= overlap <= 1.0:
        raise ValueError(f"overlap must be in [0, 1], got {overlap}")
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be >= 2, got {vocab_size}")
    pi_a = torch.randperm(vocab_size, generator=generator)
    keep = round(overlap * vocab_size)
    if vocab_size - keep == 1:
        keep -= 1
    order = torch.randperm(vocab_size, generator=generator)
    moved = order[keep:]  # order[:keep] are the tokens on which the regimes agree
    sigma = torch.arange(vocab_size)  # pi_B(i) = pi_A(sigma(i)); sigma(i) == i exactly off `moved`
    if len(moved):
        sigma[moved] = moved[_derangement(len(moved), generator)]
    return torch.stack([pi_a, pi_a[sigma]])


def sample_sequences(perm: Tensor, n: int, length: int, eps: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """n sequences of length `length` + 1 from P(j|i) = (1-eps)[j == perm(i)] + eps/V; returns (x, y)."""
    v = len(perm)
    seq = torch.empty(n, length + 1, dtype=torch.long)
    seq[:, 0] = torch.randint(v, (n,), generator=generator)
    for t in range(length):
        noise = torch.rand(n, generator=generator) < eps
        uniform = torch.randint(v, (n,), generator=generator)
        seq[:, t + 1] = torch.where(noise, uniform, perm[seq[:, t]])
    return seq[:, :-1].contiguous(), seq[:, 1:].contiguous()


def make_synth_bigrams(
    vocab_size: int = 32,
    seq_len: int = 32,
    eps: float = 0.1,
    n_train: int = 4096,
    n_test: int = 512,
    overlap: float = 0.0,
    seed: int = DATA_SEED,
) -> BigramData:
    """The two-regime bigram data of nl-math.md 5.2 (same seed -> identical tensors)."""
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"eps must be in [0, 1], got {eps}")
    generator = torch.Generator().manual_seed(seed)
    perms = regime_permutations(vocab_size, overlap, generator)
    train = [sample_sequences(p, n_train, seq_len, eps, generator) for p in perms]
    test = [sample_sequences(p, n_test, seq_len, eps, generator) for p in perms]
    return BigramData(perms, train, test, vocab_size, eps)


def transition_counts(x: Tensor, y: Tensor, vocab_size: int) -> Tensor:
    """(V, V) counts of (current token, next token) pairs."""
    flat = x.reshape(-1) * vocab_size + y.reshape(-1)
    return torch.bincount(flat, minlength=vocab_size * vocab_size).view(vocab_size, vocab_size)


def oracle_accuracy(train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor], vocab_size: int) -> float:
    """Lookup-table oracle (P5.4): predict argmax_j count(i -> j) from the training pairs; next-token
    accuracy on the test pairs. Reaches the Bayes accuracy within sampling error."""
    table = transition_counts(*train, vocab_size).argmax(dim=1)  # (V,)
    x, y = test
    return float((table[x] == y).float().mean())


# --------------------------------------------------------------------------------------------------
# Avalanche seam


def build_bigram_benchmark(suite: Any, scenario: str, seed: int = 0, n_train: int | None = None,
                           n_test: int | None = None) -> Any:
    """`bigram-shift` as an nlbench Benchmark: two experiences (regime A, then B).

    The data ignores the run `seed` (seed-fixed stream); `n_train` / `n_test` shrink it for tests. The
    suite option `regime` selects an in-context variant (`nlbench.data.bigram_regimes`), with more experiences.
    """
    from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
    from avalanche.benchmarks.scenarios.supervised import with_classes_timeline
    from avalanche.benchmarks.scenarios.task_aware import with_task_labels
    # Private in 0.6, as in nlbench.data.suites. Its tensor variant turns every y into a Python scalar, so the
    # sequence pairs go in as a plain TensorDataset; `targets` is then the regime id, given explicitly.
    from avalanche.benchmarks.utils.classification_dataset import _make_taskaware_classification_dataset
    from torch.utils.data import TensorDataset

    from nlbench.errors import UserError
    from nlbench.data.suites import Benchmark

    if scenario not in suite.scenarios:
        raise UserError(f"scenario {scenario!r} is not available for {suite.name}; valid: {', '.join(suite.scenarios)}")
    options = dict(suite.sequence_options)
    regime = options.pop("regime", "blocked")
    if regime != "blocked":
        from nlbench.data.bigram_regimes import make_regime_stream

        if n_train is not None:  # tests: n_train sequences per experience
            options["steps"] = max(1, n_train * suite.epochs // suite.batch_size)
        if n_test is not None:
            options["n_test"] = n_test
        _, train, test = make_regime_stream({"regime": regime, **options}, suite.n_classes, suite.input_shape[0],
                                            suite.batch_size, suite.epochs, data_seed=DATA_SEED,
                                            regime_permutations=regime_permutations, sample_sequences=sample_sequences)
        regime_of = lambda pairs, i: pairs[i][2]  # noqa: E731 (per-sequence regime ids)
    else:
        for key in ("mix", "blocks"):
            options.pop(key, None)
        steps = options.pop("steps", 0)
        if steps:
            options["n_train"] = steps * suite.batch_size // suite.epochs
        if n_train is not None:
            options["n_train"] = n_train
        if n_test is not None:
            options["n_test"] = n_test
        data = make_synth_bigrams(vocab_size=suite.n_classes, seq_len=suite.input_shape[0], **options)
        train, test = data.train, data.test
        regime_of = lambda pairs, i: torch.full((len(pairs[i][0]),), i, dtype=torch.long)  # noqa: E731
    streams = {}
    for split, pairs in (("train", train), ("test", test)):
        experiences = []
        for eid in range(len(pairs)):
            x, y = pairs[eid][0], pairs[eid][1]
            task_label = eid if scenario == "task" else 0
            experiences.append(_make_taskaware_classification_dataset(
                TensorDataset(x, y), targets=regime_of(pairs, eid).tolist(), task_labels=[task_label] * len(x),
                transform_groups={"train": (None, None), "eval": (None, None)},
                initial_transform_group="train" if split == "train" else "eval",
            ))
        streams[split] = experiences
    bm = with_task_labels(with_classes_timeline(benchmark_from_datasets(train=streams["train"], test=streams["test"])))
    for stream in (bm.train_stream, bm.test_stream):
        for experience in stream:
            experience.classes_in_this_experience = sorted(experience.classes_in_this_experience)
    classes = [sorted(set(regime_of(train, i).tolist())) for i in range(len(train))]
    return Benchmark(suite, scenario, bm.train_stream, bm.test_stream, classes)


class SequenceCrossEntropy(torch.nn.CrossEntropyLoss):
    """Token-level cross-entropy: (B, L, V) logits and (B, L) targets are flattened to (B*L, V), (B*L,)
    (the mean over every token); 2-D inputs pass through unchanged. Plugins that run their own forward
    passes with the strategy's criterion (EWC, A-GEM) therefore work on sequences too."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:  # noqa: A002 (torch's name)
        if input.dim() == 3:
            input, target = input.reshape(-1, input.shape[-1]), target.reshape(-1)
        return super().forward(input, target)


class FlattenSequenceOutputs(SupervisedPlugin):
    """After each eval forward, (B, L, V) outputs -> (B*L, V), targets (B, L) -> (B*L,), task labels
    (B,) -> (B*L,): Avalanche's accuracy metric then reports next-token accuracy over every token."""

    def after_eval_forward(self, strategy: Any, **kwargs: Any) -> None:
        out = strategy.mb_output
        if out.dim() != 3:
            return
        b, n, v = out.shape
        strategy.mb_output = out.reshape(b * n, v)
        strategy.mbatch[1] = strategy.mbatch[1].reshape(-1)
        strategy.mbatch[-1] = strategy.mbatch[-1].repeat_interleave(n)


class TokenCrossEntropy(SupervisedPlugin):
    """Token cross-entropy (nats, mean over every test token) beside next-token accuracy: one row per eval
    phase, one entry per test experience. The runner evaluates once before training, then after every
    experience, so result.json gets `initial_cross_entropy` and `cross_entropy_matrix` shaped like the
    accuracy matrix. Reads the outputs after `FlattenSequenceOutputs` has flattened them."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[float]] = []
        self._sums: dict[int, list[float]] = {}

    def before_eval(self, strategy: Any, **kwargs: Any) -> None:
        self._sums = {}

    def after_eval_iteration(self, strategy: Any, **kwargs: Any) -> None:
        out, target = strategy.mb_output, strategy.mbatch[1]
        loss = torch.nn.functional.cross_entropy(out.float(), target, reduction="sum")
        entry = self._sums.setdefault(strategy.experience.current_experience, [0.0, 0])
        entry[0] += float(loss)
        entry[1] += target.numel()

    def after_eval(self, strategy: Any, **kwargs: Any) -> None:
        self.rows.append([total / max(count, 1) for _, (total, count) in sorted(self._sums.items())])

    def result_fields(self) -> dict[str, Any]:
        return {"initial_cross_entropy": self.rows[0] if self.rows else [], "cross_entropy_matrix": self.rows[1:]}
