"""`nlbench cost`: state bytes counted by hand, exact step counts, the cost.json contract, bad input.

Everything runs the real command or the real runner machinery on split-digits (tiny and offline).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from nlbench.cli import app

runner = CliRunner()

# split-digits' network from first principles: 8x8 inputs, the suite's MLP with hidden layers (100, 100),
# 10 classes; float32 everywhere. (Checked against the suite below, so a changed suite fails loudly.)
LAYERS = [(64, 100), (100, 100), (100, 10)]  # (in, out) of each Linear
FLOAT, INT64 = 4, 8
N_PARAMS = sum(i * o + o for i, o in LAYERS)  # weights and biases
N_TENSORS = 2 * len(LAYERS)
PARAM_BYTES = N_PARAMS * FLOAT
# torch.optim.Adam keeps per parameter tensor exp_avg and exp_avg_sq (its shape, float32) and a step
# counter, a float32 scalar tensor (capturable=False).
ADAM_BYTES = 2 * PARAM_BYTES + N_TENSORS * FLOAT
SAMPLE_BYTES = 64 * FLOAT + INT64 + INT64  # a buffered image, its class label and its task label


def test_the_suite_is_the_network_the_counts_assume():
    from nlbench.data.suites import get_suite

    suite = get_suite("split-digits")
    assert suite.input_shape == (1, 8, 8) and suite.backbone == "mlp" and suite.n_classes == 10
    assert tuple(suite.backbone_kwargs["hidden"]) == (100, 100)


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """One cost run of adam, clocked-adam (periods 1,4), replay and DER++ (20 samples each), 3 rounds
    of 4 steps."""
    out = tmp_path_factory.mktemp("cost")
    args = ["cost", "--suite", "split-digits", "--strategy", "adam,clocked-adam,replay,der", "--hp", "periods=1,4",
            "--hp", "mem_size=20", "--steps", "4", "--repeats", "3", "--warmup", "1", "--device", "cpu",
            "--out", str(out)]
    result = runner.invoke(app, args, terminal_width=200)
    assert result.exit_code == 0, result.output
    path = out / "cost-split-digits-class-cpu" / "cost.json"
    return out, json.loads(path.read_text()), result


def _row(record, strategy):
    return next(row for row in record["rows"] if row["strategy"] == strategy)["state_bytes"]


def test_adam_state_is_parameters_gradients_and_two_moments(measured):
    assert _row(measured[1], "adam") == {
        "parameters": PARAM_BYTES, "gradients": PARAM_BYTES, "optimizer": ADAM_BYTES,
        "clock": 0, "buffer": 0, "logits": 0, "other": 0, "total": 2 * PARAM_BYTES + ADAM_BYTES}


def test_clocked_adam_adds_the_open_window_accumulators_once(measured):
    """periods 1,4 on a two-hidden-layer MLP, wired by depth: the first layer and the head are on the
    fast level, the second hidden layer (100x100 + 100) on C=4, whose gradient sum A waits in the
    clock's state for 3 steps out of 4. One Adam per level: the same moments as plain Adam."""
    accumulator = (100 * 100 + 100) * FLOAT
    assert _row(measured[1], "clocked-adam") == {
        "parameters": PARAM_BYTES, "gradients": PARAM_BYTES, "optimizer": ADAM_BYTES,
        "clock": accumulator, "buffer": 0, "logits": 0, "other": 0,
        "total": 2 * PARAM_BYTES + ADAM_BYTES + accumulator}


def test_replay_buffer_holds_mem_size_samples_however_many_experiences(measured):
    """20 samples whichever round: 20 of experience 0, then 10 + 10, then 6 + 6 + 6 (a slice of the
    older groups, which must not keep their whole old storage)."""
    assert _row(measured[1], "replay") == {
        "parameters": PARAM_BYTES, "gradients": PARAM_BYTES, "optimizer": ADAM_BYTES,
        "clock": 0, "buffer": 20 * SAMPLE_BYTES, "logits": 0, "other": 0,
        "total": 2 * PARAM_BYTES + ADAM_BYTES + 20 * SAMPLE_BYTES}


def test_der_stores_samples_and_their_logits(measured):
    """DER++'s buffer: 20 samples (image, class and task label, and a float32 reservoir weight) and the
    10 logits stored with each."""
    buffer, logits = 20 * (SAMPLE_BYTES + FLOAT), 20 * 10 * FLOAT
    assert _row(measured[1], "der") == {
        "parameters": PARAM_BYTES, "gradients": PARAM_BYTES, "optimizer": ADAM_BYTES,
        "clock": 0, "buffer": buffer, "logits": logits, "other": 0,
        "total": 2 * PARAM_BYTES + ADAM_BYTES + buffer + logits}


def test_cost_json_holds_the_contract_and_round_trips_through_load_costs(measured):
    from nlbench.core.cost import load_costs

    out, record, result = measured
    assert (record["kind"], record["schema"], record["steps"], record["repeats"], record["reference"]) == \
        ("nlbench-cost", 1, 4, 3, "adam")
    assert record["setting"] == {"suite": "split-digits", "suite_options": {}, "scenario": "class", "head": "single",
                                 "backbone": "mlp", "batch_size": 32, "device": "cpu",
                                 "device_name": record["setting"]["device_name"], "threads": 1}
    for row in record["rows"]:
        assert len(row["step_time_s"]) == 3 and all(t > 0 for t in row["step_time_s"])
        ratio = row["ratio_to_reference"]
        assert ratio["spread"] == "iqr" and ratio["low"] <= ratio["median"] <= ratio["high"]
        assert row["cuda_peak_bytes"] is None
    assert _ratio(record, "adam") == {"median": 1.0, "low": 1.0, "high": 1.0, "spread": "iqr"}
    assert next(r for r in record["rows"] if r["strategy"] == "clocked-adam")["hp"]["periods"] == [1, 4]

    frame = load_costs(out)
    assert sorted(frame["strategy"]) == ["adam", "clocked-adam", "der", "replay"]
    assert set(frame["suite_options"]) == {"default"} and set(frame["device"]) == {"cpu"}
    for row in record["rows"]:
        loaded = frame[frame["strategy"] == row["strategy"]].iloc[0]
        assert loaded["state_bytes_total"] == row["state_bytes"]["total"]
        assert loaded["state_bytes_clock"] == row["state_bytes"]["clock"]
        assert loaded["ratio_median"] == row["ratio_to_reference"]["median"]
        assert loaded["step_time_median_s"] == row["step_time_median_s"]
        assert loaded["step_time_s"] == row["step_time_s"]
    assert "thread CPU time" in result.stdout and "x adam [IQR]" in result.stdout


def _ratio(record, strategy):
    return next(row for row in record["rows"] if row["strategy"] == strategy)["ratio_to_reference"]


def test_load_costs_skips_a_bad_file_with_a_warning_naming_it(measured, tmp_path):
    from nlbench.core.cost import load_costs

    record = measured[1]
    good, bad = tmp_path / "good" / "cost.json", tmp_path / "bad" / "cost.json"
    good.parent.mkdir()
    good.write_text(json.dumps(record))
    broken = json.loads(json.dumps(record))
    broken["rows"][0]["state_bytes"]["total"] += 1
    bad.parent.mkdir()
    bad.write_text(json.dumps(broken))
    with pytest.warns(UserWarning, match=f"skipping {bad}: .*total .* is not the sum of the categories"):
        frame = load_costs(tmp_path)
    assert len(frame) == len(record["rows"]) and set(frame["path"]) == {str(good)}


def test_ratios_are_per_round_and_summarised_over_rounds():
    from nlbench.core.cost import summarise_ratio

    assert summarise_ratio([2.0, 4.0, 6.0], [1.0, 2.0, 2.0], "iqr", 0) == \
        {"median": 2.0, "low": 2.0, "high": 2.5, "spread": "iqr"}  # ratios 2, 2, 3
    ci = summarise_ratio([1.0, 1.2, 1.1, 1.3, 1.15], [1.0] * 5, "ci95", 0)
    assert ci["spread"] == "ci95" and 1.0 <= ci["low"] <= ci["median"] == 1.15 <= ci["high"] <= 1.3


def test_a_turn_trains_exactly_the_asked_iterations(digits, one_thread):
    """The timer stops training after warmup + steps iterations, mid-epoch or not: the clock's global
    step (one per optimizer call) advances by exactly that much per turn."""
    import torch

    from nlbench.core.cost_timing import StepTimer, train_turn
    from nlbench.core.runner import build_strategy
    from nlbench.core.spec import resolve_spec

    spec = resolve_spec("split-digits", "clocked-adam", device="cpu")
    strategy, _ = build_strategy(spec, digits, torch.device("cpu"))
    timer = StepTimer(torch.device("cpu"))
    strategy.plugins.append(timer)
    strategy.train(digits.train_stream[0])
    before = strategy.optimizer.global_step
    assert before == 5 * 8  # 5 epochs of ceil(251 / 32) minibatches: the timer is idle
    for iterations in (3, 11, 8):  # within an epoch, across one, exactly one
        train_turn(strategy, timer, digits.train_stream[1], iterations, cuda=False)
        assert len(timer.times) == iterations and all(t > 0 for t in timer.times)
        assert strategy.optimizer.global_step == before + iterations
        before += iterations


def test_a_plugin_without_checkpoint_state_is_walked_and_its_datasets_count_by_sample(digits, one_thread):
    """Avalanche's ReplayPlugin (the stock data path) has no state_dict: the fallback walks it. Its
    buffer is two datasets of 10 samples that index into the experiences' full data; they count as
    20 samples, not as the 503 samples of the data behind them. The reservoir weights beside them are
    tensors, counted by their storage."""
    import torch

    from nlbench.core.runner import build_strategy
    from nlbench.core.spec import resolve_spec
    from nlbench.core.state_bytes import state_bytes

    spec = resolve_spec("split-digits", "replay", device="cpu", hparams={"mem_size": 20}, data_path="avalanche")
    strategy, _ = build_strategy(spec, digits, torch.device("cpu"))
    for experience in digits.train_stream[:2]:
        strategy.train(experience)
    groups = strategy.plugins[0].storage_policy.buffer_groups.values()
    weights = sum(g._buffer_weights.untyped_storage().nbytes() for g in groups)
    counted = state_bytes(strategy)
    assert counted["buffer"] == 20 * SAMPLE_BYTES + weights
    assert counted["total"] == 2 * PARAM_BYTES + ADAM_BYTES + counted["buffer"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--suite", "split-imagenet", "--strategy", "adam"], "unknown suite 'split-imagenet'"),
        (["--strategy", "adam,nope"], "unknown strategy 'nope'"),
        (["--strategy", ""], "--strategy is empty"),
        (["--strategy", "adam,adam"], "names a strategy twice"),
        (["--strategy", "adam", "--steps", "0"], "--steps must be at least 1, got 0"),
        (["--strategy", "adam", "--repeats", "0"], "--repeats must be at least 1, got 0"),
        (["--strategy", "adam", "--warmup", "-1"], "--warmup must be at least 0"),
        (["--strategy", "adam", "--threads", "0"], "--threads must be at least 1"),
        (["--strategy", "adam", "--hp", "bogus=3"], "unknown hyperparameter 'bogus'"),
        (["--strategy", "adam", "--hp", "lr=abc"], "lr='abc' is not valid"),
        (["--strategy", "adam", "--hp", "lr"], "--hp expects KEY=VALUE"),
        (["--strategy", "adam,cms", "--reference", "sgd"], "--reference 'sgd' is not one of the strategies"),
        (["--strategy", "adam", "--spread", "sd"], "--spread 'sd' is not valid; valid: iqr, ci95"),
        (["--strategy", "adam", "--suite-option", "n_tasks=3"], "unknown suite option 'n_tasks' for split-digits"),
        (["--strategy", "adam", "--device", "tpu"], "unknown device 'tpu'"),
        (["--strategy", "adam", "--name", "../up"], "--name '../up' must be a relative directory name"),
        (["--strategy", "adam", "--steps", "x"], "Invalid value for '--steps'"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(args, message, tmp_path):
    out = tmp_path / "results"
    result = subprocess.run([sys.executable, "-m", "nlbench.cli", "cost", "--out", str(out), *args],
                            capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr and not out.exists()


def test_help_fits_80_columns():
    import os

    out = subprocess.run([sys.executable, "-m", "nlbench.cli", "cost", "--help"], capture_output=True, text=True,
                         env={**os.environ, "COLUMNS": "80", "TERMINAL_WIDTH": "80"})
    assert out.returncode == 0 and "--steps" in out.stdout and "--reference" in out.stdout
    assert max(len(line) for line in out.stdout.splitlines()) <= 80 and "<int>" not in out.stdout


def test_the_cost_loader_needs_no_torch():
    code = "import sys, nlbench.core.cost; print('torch' in sys.modules, 'avalanche' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_bad_input_is_answered_without_torch():
    code = ("import sys; from nlbench.cli.common import run_app; from nlbench.cli import app\n"
            "try: run_app(app, ['cost', '--strategy', 'adam', '--steps', '0'])\n"
            "except SystemExit as e: print(e.code, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["2", "False"]


@pytest.mark.gpu
def test_cuda_cost_records_the_allocator_peak(tmp_path):
    args = ["cost", "--strategy", "adam,replay", "--steps", "3", "--repeats", "2", "--device", "cuda",
            "--out", str(tmp_path)]
    result = runner.invoke(app, args, terminal_width=200)
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "cost-split-digits-class-cuda" / "cost.json").read_text())
    assert record["timer"] == "cuda_wall" and all(row["cuda_peak_bytes"] > 0 for row in record["rows"])
    assert _row(record, "adam")["total"] == 2 * PARAM_BYTES + ADAM_BYTES
