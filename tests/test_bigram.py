"""The `bigram-shift` sequence suite and the multi-clock tiny Transformer (nl-math.md section 5)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from nlbench.data.bigram import (
    FlattenSequenceOutputs,
    SequenceCrossEntropy,
    bayes_accuracy,
    bayes_cross_entropy,
    build_bigram_benchmark,
    make_synth_bigrams,
    oracle_accuracy,
    transition_counts,
)
from nlbench.errors import UserError
from nlbench.models.transformer import TinyTransformer, TransformerConfig
from nlbench.core.runner import build_strategy, evaluate_row, run_one
from nlbench.core.spec import resolve_spec
from nlbench.strategies.cms.clocks import ClockedOptimizer
from nlbench.strategies.cms.wiring import wire_clocks
from nlbench.data.streams import build_benchmark
from nlbench.data.suites import SUITES, get_suite

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def small():
    """bigram-shift with 128 train / 32 test sequences per regime (same generator, fewer samples)."""
    return build_bigram_benchmark(get_suite("bigram-shift"), "domain", n_train=128, n_test=32)


# --------------------------------------------------------------------------------------------------
# The generator (P5.1, P5.4)


def test_bayes_numbers():
    assert bayes_accuracy(32, 0.1) == pytest.approx(0.903125)
    assert bayes_cross_entropy(32, 0.1) == pytest.approx(0.6508, abs=1e-4)


def test_transitions_follow_the_regime_law():
    """P5.1: chi-square of the empirical transition counts against P_r, at ~10^5 transitions."""
    V, eps = 32, 0.1
    data = make_synth_bigrams(n_train=3200, n_test=1, seed=7)
    for regime, (x, y) in enumerate(data.train):
        counts = transition_counts(x, y, V).double()  # (V, V), 102400 transitions
        law = torch.full((V, V), eps / V, dtype=torch.float64)
        law[torch.arange(V), data.perms[regime]] += 1 - eps
        expected = counts.sum(1, keepdim=True) * law
        chi2 = ((counts - expected) ** 2 / expected).sum().item()
        assert stats.chi2.sf(chi2, V * (V - 1)) > 0.01


def test_regimes_disagree_everywhere_and_the_data_is_seed_fixed():
    a, b = make_synth_bigrams(n_train=8, n_test=8), make_synth_bigrams(n_train=8, n_test=8)
    assert (a.perms[0] != a.perms[1]).all()  # overlap 0
    assert torch.equal(a.perms, b.perms) and all(torch.equal(p, q) for p, q in zip(a.train[1], b.train[1]))
    other = make_synth_bigrams(n_train=8, n_test=8, seed=1)
    assert not torch.equal(other.train[0][0], a.train[0][0])
    half = make_synth_bigrams(n_train=1, n_test=1, overlap=0.5)
    assert int((half.perms[0] == half.perms[1]).sum()) == 16
    for perm in half.perms:
        assert torch.equal(perm.sort().values, torch.arange(32))


def test_a_lookup_oracle_reaches_the_bayes_accuracy_on_held_out_data():
    """P5.4 (oracle half): within 4 standard errors on 512 x 32 held-out tokens."""
    data = make_synth_bigrams()
    bayes = bayes_accuracy()
    sigma = (bayes * (1 - bayes) / data.test[0][0].numel()) ** 0.5
    for train, test in zip(data.train, data.test):
        assert abs(oracle_accuracy(train, test, 32) - bayes) < 4 * sigma


# --------------------------------------------------------------------------------------------------
# The suite


def test_the_suite_is_a_two_experience_sequence_stream(small):
    suite = get_suite("bigram-shift")
    assert suite.kind == "sequence" and suite.n_experiences == 2 and suite.backbone == "transformer"
    assert SUITES["bigram-shift"] is suite
    assert len(small.train_stream) == len(small.test_stream) == 2
    for regime, experience in enumerate(small.train_stream):
        assert experience.classes_in_this_experience == [regime]  # targets = regime id
        x, y, t = experience.dataset[0]
        assert x.shape == y.shape == (32,) and x.dtype == y.dtype == torch.long and int(t) == 0
        assert torch.equal(x[1:], y[:-1])  # y is x shifted by one token
    full = build_benchmark(suite, "domain", seed=3, data_root=None)  # seed-fixed: same data for every run seed
    assert torch.equal(full.train_stream[0].dataset[0][0], build_benchmark(suite, "domain", 0, None).train_stream[0].dataset[0][0])


def test_token_level_loss_and_accuracy_seam():
    logits, targets = torch.randn(2, 5, 7), torch.randint(7, (2, 5))
    assert torch.allclose(SequenceCrossEntropy()(logits, targets),
                          nn.functional.cross_entropy(logits.reshape(10, 7), targets.reshape(10)))
    strategy = type("S", (), {})()
    strategy.mb_output, strategy.mbatch = logits, [torch.zeros(2, 5), targets, torch.tensor([0, 1])]
    FlattenSequenceOutputs().after_eval_forward(strategy)
    assert strategy.mb_output.shape == (10, 7) and strategy.mbatch[1].shape == (10,)
    assert strategy.mbatch[2].tolist() == [0] * 5 + [1] * 5


def test_strategies_and_backbones_that_cannot_run_on_sequences_say_why(small):
    for strategy, pattern in (("lwf", "LwF distils"), ("ewc+der", "DER")):
        with pytest.raises(UserError, match=pattern):
            run_one(resolve_spec("bigram-shift", strategy, device="cpu"), benchmark=small)
    with pytest.raises(UserError, match="backbone 'mlp' does not fit"):
        run_one(resolve_spec("bigram-shift", "adam", device="cpu", backbone="mlp"), benchmark=small)
    with pytest.raises(UserError, match="backbone 'transformer' takes token sequences"):
        run_one(resolve_spec("split-digits", "adam", device="cpu", backbone="transformer"))


@pytest.mark.parametrize("strategy", ["replay", "ewc", "agem", "si", "cumulative"])
def test_classic_baselines_run_on_sequences(strategy, small):
    result = run_one(resolve_spec("bigram-shift", strategy, device="cpu", epochs=1, batch_size=32), benchmark=small)
    assert result["status"] == "completed", result["error"]
    assert np.array(result["accuracy_matrix"]).shape == (2, 2)


def test_runs_are_deterministic_and_accuracy_is_per_token(small):
    spec = resolve_spec("bigram-shift", "clocked-adam", device="cpu", epochs=1, batch_size=32)
    first, second = run_one(spec, benchmark=small), run_one(spec, benchmark=small)
    assert first["status"] == "completed", first["error"]
    assert first["accuracy_matrix"] == second["accuracy_matrix"]
    # 32 test sequences x 32 tokens: every accuracy is a multiple of 1/1024
    assert all(abs(a * 1024 - round(a * 1024)) < 1e-6 for row in first["accuracy_matrix"] for a in row)
    assert first["clocks"] == {"global_step": 8, "periods": [1, 8, 64], "updates": [8, 1, 0], "pending": [0, 0, 8],
                               "reduction": "sum"}


def test_a_model_trained_on_regime_a_reaches_the_bayes_accuracy_on_a():
    """P5.4 (model half): the tiny Transformer trained on A alone reaches >= Bayes - 0.03 on A."""
    benchmark = build_bigram_benchmark(get_suite("bigram-shift"), "domain", n_train=2048, n_test=128)
    strategy, evaluator = build_strategy(resolve_spec("bigram-shift", "adam", device="cpu", epochs=1, hparams={"lr": 3e-3}),
                                         benchmark, torch.device("cpu"))
    strategy.train(benchmark.train_stream[0])
    accuracy_a, _ = evaluate_row(strategy, evaluator, benchmark.test_stream)
    assert accuracy_a >= bayes_accuracy() - 0.03


# --------------------------------------------------------------------------------------------------
# The multi-clock Transformer (P5.2, P5.3)


def _lm_steps(model, optimizer, batches):
    for x, y in batches:
        optimizer.zero_grad()
        SequenceCrossEntropy()(model(x), y).backward()
        optimizer.step()
        yield


def test_transformer_clocks_update_t_t_over_8_t_over_64_times():
    """P5.2: after T steps the update counts are T, floor(T/8), floor(T/64) for QKV/embeddings/head, W_o and
    the FFN; the FFN weights are bitwise constant between their due steps."""
    torch.manual_seed(0)
    model = TinyTransformer(TransformerConfig(n_layers=1, d_model=32))
    optimizer = ClockedOptimizer(wire_clocks(model, (1, 8, 64)), lambda m, p: torch.optim.Adam(p, lr=1e-3), model=model)
    x, y = make_synth_bigrams(n_train=8 * 70, n_test=1, seq_len=16).train[0]
    batches = list(zip(x.split(8), y.split(8)))
    ffn = model.blocks[0].ffn[0].weight
    last = ffn.detach().clone()
    for s, _ in enumerate(_lm_steps(model, optimizer, batches), start=1):
        assert torch.equal(ffn, last) == (s % 64 != 0)
        last = ffn.detach().clone()
    T = len(batches)
    assert optimizer.level_updates == [T, T // 8, T // 64] == [70, 8, 1]
    assert int(optimizer.bases[2].state[ffn]["step"]) == 1


def test_transformer_with_every_clock_at_one_equals_a_single_adam():
    """P5.3: per-level Adam instances equal one Adam when every period is 1."""
    torch.manual_seed(0)
    plain = TinyTransformer(TransformerConfig(n_layers=1, d_model=32))
    clocked = TinyTransformer(TransformerConfig(n_layers=1, d_model=32))
    clocked.load_state_dict(plain.state_dict())
    reference = torch.optim.Adam(plain.parameters(), lr=1e-3)
    optimizer = ClockedOptimizer(wire_clocks(clocked, (1, 1, 1)), lambda m, p: torch.optim.Adam(p, lr=1e-3), model=clocked)
    assert len(optimizer.bases) == 3
    x, y = make_synth_bigrams(n_train=40, n_test=1, seq_len=16).train[1]
    batches = list(zip(x.split(8), y.split(8)))
    for _ in zip(_lm_steps(plain, reference, batches), _lm_steps(clocked, optimizer, batches)):
        pass
    assert all(torch.equal(a, b) for a, b in zip(plain.parameters(), clocked.parameters()))


def test_transformer_shapes_and_causality():
    torch.manual_seed(0)
    for config in (TransformerConfig(), TransformerConfig().with_cms(3)):
        model = TinyTransformer(config).eval()
        x = torch.randint(32, (3, 32))
        y = x.clone()
        y[:, 10] = (y[:, 10] + 1) % 32
        with torch.no_grad():
            a, b = model(x), model(y)
        assert a.shape == (3, 32, 32)
        assert torch.allclose(a[:, :10], b[:, :10], atol=1e-6, rtol=0) and not torch.allclose(a[:, 10:], b[:, 10:])


# --------------------------------------------------------------------------------------------------
# The real runs of the issue (minutes on a CPU)


def _cli_run(tmp_path, suite, strategies):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "nlbench.cli", "run", "--suite", suite, "--strategy", strategies,
                          "--device", "cpu", "--out", str(tmp_path)], capture_output=True, text=True, env=env, timeout=3600)
    assert out.returncode == 0, out.stderr[-3000:]
    results = [json.loads(p.read_text()) for p in (tmp_path / suite).glob("*/result.json")]
    assert len(results) == len(strategies.split(",")) and all(r["status"] == "completed" for r in results)
    return out.stdout, results


@pytest.mark.slow
def test_real_run_on_bigram_shift(tmp_path):
    stdout, results = _cli_run(tmp_path, "bigram-shift", "adam,clocked-adam,cms,hope")
    for result in results:
        matrix = np.array(result["accuracy_matrix"])
        assert matrix[0, 0] >= bayes_accuracy() - 0.03 and matrix[1, 1] >= bayes_accuracy() - 0.03


@pytest.mark.slow
def test_real_run_on_split_fmnist(tmp_path):
    from nlbench.data.readers import DEFAULT_DATA_ROOT, load_arrays
    from nlbench.errors import DataUnavailable

    try:
        load_arrays("fashion-mnist", DEFAULT_DATA_ROOT, train=False, download=False)
    except DataUnavailable:
        pytest.skip("Fashion-MNIST is not installed")
    _cli_run(tmp_path, "split-fmnist", "cms,hope,cms+replay")


# --------------------------------------------------------------------------------------------------
# In-context regime variants (nl-math.md 5.2 option) and token cross-entropy


def _regime_suite(regime="blocked", **more):
    from nlbench.data.suites import configure_suite

    return configure_suite("bigram-shift", {"regime": regime, **more})


def test_in_context_regimes_mix_the_training_data_and_test_on_pure_regimes():
    suite = _regime_suite("reexposure")
    assert suite.n_experiences == 3 and _regime_suite("alternating", blocks=4).n_experiences == 4
    bm = build_bigram_benchmark(suite, "domain", n_train=2000, n_test=64)
    shares = [np.mean([int(t) for t in exp.dataset.targets]) for exp in bm.train_stream]
    assert shares[0] == pytest.approx(0.1, abs=0.03) and shares[1] == pytest.approx(0.9, abs=0.03)  # share of B
    assert shares[2] == pytest.approx(0.1, abs=0.03)
    tests = [exp.dataset for exp in bm.test_stream]
    assert [sorted(set(int(t) for t in d.targets)) for d in tests] == [[0], [1], [0]]  # pure test sets
    assert all(torch.equal(tests[0][i][0], tests[2][i][0]) for i in range(64))  # A re-tested on the same data
    data = make_synth_bigrams(n_train=1, n_test=1, seed=1)  # the in-context variants draw with DATA_SEED + 1
    x, y = tests[1][0][0], tests[1][0][1]
    follows_b = float((data.perms[1][x] == y).float().mean())
    assert follows_b > 0.7  # regime B's law (1 - eps + eps/V of the tokens, within noise)


def test_in_context_default_size_is_ten_times_the_slowest_clock():
    from nlbench.data.bigram_regimes import DEFAULT_STEPS

    from nlbench.strategies.cms.hparams import STRATEGY_PERIODS

    assert DEFAULT_STEPS >= 10 * max(STRATEGY_PERIODS)
    bm = build_bigram_benchmark(_regime_suite("mixture"), "domain", n_test=8)
    suite = get_suite("bigram-shift")
    assert len(bm.train_stream[0].dataset) * suite.epochs // suite.batch_size == DEFAULT_STEPS


def test_token_cross_entropy_is_recorded_beside_accuracy(small):
    spec = resolve_spec("bigram-shift", "adam", device="cpu", epochs=1, batch_size=32)
    strategy, evaluator = build_strategy(spec, small, torch.device("cpu"))
    recorder = next(p for p in strategy.plugins if hasattr(p, "rows"))
    strategy.train(small.train_stream[0])
    evaluate_row(strategy, evaluator, small.test_stream)
    strategy.model.eval()
    with torch.no_grad():
        for j, exp in enumerate(small.test_stream):
            x = torch.stack([exp.dataset[i][0] for i in range(len(exp.dataset))])
            y = torch.stack([exp.dataset[i][1] for i in range(len(exp.dataset))])
            direct = float(SequenceCrossEntropy()(strategy.model(x), y))
            assert recorder.rows[-1][j] == pytest.approx(direct, rel=1e-5)
    result = run_one(spec, benchmark=small)
    assert np.array(result["cross_entropy_matrix"]).shape == (2, 2) and len(result["initial_cross_entropy"]) == 2


@pytest.mark.slow  # 12 runs x 256 steps of the tiny Transformer (~6 CPU-minutes, HOPE most of it)
def test_the_in_context_variant_separates_methods():
    """Over 3 seeds, at least two of adam, clocked-adam, cms and hope end with different mean matrices,
    on the in-context variant at its defaults (90/10 -> 10/90 mixture) with 128 steps per experience
    (2x the slowest clock period; the default 640 costs 5x more). The blocked protocol, nl-math.md
    5.2's default, gives all four the same matrix: the fast path alone solves it."""
    options = {"regime": "mixture", "steps": 128}
    bm = build_bigram_benchmark(_regime_suite(**options), "domain")
    means = {}
    for strategy in ("adam", "clocked-adam", "cms", "hope"):
        matrices = []
        for seed in (0, 1, 2):
            spec = resolve_spec("bigram-shift", strategy, device="cpu", seed=seed, suite_options=options)
            result = run_one(spec, benchmark=bm)
            assert result["status"] == "completed", result["error"]
            matrices.append(result["accuracy_matrix"])
        means[strategy] = np.mean(matrices, axis=0)
    spread = max(np.abs(a - b).max() for a in means.values() for b in means.values())
    assert spread > 0.02, means
