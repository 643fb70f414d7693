"""`adam-matched`: the suite's plain MLP, widened to the parameter count of the network `cms` builds, trained
with the default optimizer. Sizes are checked on the real networks both strategies build (their own
model transforms), on split-digits (class, task with mask and multi-head, heads grown by Avalanche over a
real stream) and on permuted-fmnist's metadata (no Fashion-MNIST loaded)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nlbench.baselines.adam_matched import DEFAULT_LEVELS, MLP_BACKBONES
from nlbench.core.backbones import build_backbone
from nlbench.core.registry import BuildContext, build_parts, strategies
from nlbench.core.runner import build_strategy
from nlbench.core.spec import resolve_spec
from nlbench.data.readers import DEFAULT_DATA_ROOT
from nlbench.data.streams import build_benchmark
from nlbench.data.suites import configure_suite, get_suite
from nlbench.errors import UserError
from nlbench.models.heads import MultiHeadNet, unwrap_backbone, wrap_for_scenario
from nlbench.models.mlp import MLP
from nlbench.strategies.cms.hparams import STRATEGY_PERIODS

pytestmark = pytest.mark.usefixtures("one_thread")
# The console script beside this interpreter (a venv's own), so the CLI runs the tree under test.
NLBENCH = str(Path(sys.executable).with_name("nlbench")) if Path(sys.executable).with_name("nlbench").exists() else shutil.which("nlbench")


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def transformed(strategy: str, spec, model: torch.nn.Module) -> torch.nn.Module:
    """`model` after `strategy`'s own model transform (what the runner trains)."""
    ctx = BuildContext(spec=spec, suite=configure_suite(spec.suite, spec.suite_options), model=model, device=torch.device("cpu"))
    return build_parts(strategy, ctx, spec.hp).model_transform(model)


def metadata_model(spec) -> torch.nn.Module:
    """The runner's model for `spec` from the suite's metadata alone (as nlbench.core.runner.build_model)."""
    suite = get_suite(spec.suite)
    backbone = build_backbone(spec.backbone, suite.input_shape, suite.n_classes, **suite.backbone_kwargs)
    classes = [list(range(suite.n_classes))] * suite.n_experiences  # every task has every class (domain shift)
    return wrap_for_scenario(backbone, spec.head, classes, suite.n_classes)


def one_head(model: torch.nn.Module) -> int:
    return count(model.classifier.classifiers["0"])


def assert_matched(plain, cms_size: int, matched, heads: int, matched_size: int) -> None:
    """Within 1% of the cms size, the closest of all widths, the plain MLP's depth and everything else."""
    plain_mlp, mlp = unwrap_backbone(plain), unwrap_backbone(matched)
    assert isinstance(mlp, MLP) and type(matched) is type(plain)
    assert abs(matched_size - cms_size) <= 0.01 * cms_size, (matched_size, cms_size)
    depth = len(plain_mlp.config.hidden)
    assert len(mlp.config.hidden) == depth and len(set(mlp.config.hidden)) == 1
    assert sum(isinstance(m, torch.nn.ReLU) for m in mlp.modules()) == depth  # same activation, same depth
    width = mlp.config.hidden[0]
    d, c = mlp.config.input_dim, mlp.config.n_classes
    # an independent count: input layer, square hidden layers, one head per task
    size = lambda w: (d + 1) * w + (depth - 1) * (w + 1) * w + heads * (w * c + c)  # noqa: E731
    assert size(width) == matched_size
    assert abs(size(width) - cms_size) <= min(abs(size(width - 1) - cms_size), abs(size(width + 1) - cms_size))
    for field in ("input_dim", "n_classes", "dropout", "init", "input_mean", "input_std"):
        assert getattr(mlp.config, field) == getattr(plain_mlp.config, field), field


def test_registered_as_a_baseline_that_brings_no_optimizer_and_matches_cms_default_levels():
    info = strategies()["adam-matched"]
    assert info.family == "baseline" and not info.provides_optimizer and not info.wraps_optimizer
    assert info.backbones == MLP_BACKBONES
    assert info.defaults["levels"] == DEFAULT_LEVELS == len(STRATEGY_PERIODS)
    spec = resolve_spec("split-digits", "adam-matched", device="cpu")
    assert spec.hp["optimizer"] == "adam" and spec.hp["lr"] == 1e-3  # the shared default optimizer
    from nlbench.commands.tune.space import search_space

    assert search_space("adam-matched") == search_space("replay")  # the default optimizer's lr, nothing else


@pytest.mark.parametrize("scenario, head", [("class", None), ("task", "mask")])
def test_split_digits_matches_the_cms_network(scenario, head):
    spec = resolve_spec("split-digits", "adam-matched", device="cpu", scenario=scenario, head=head)
    benchmark = build_benchmark(get_suite("split-digits"), scenario, seed=0, data_root=DEFAULT_DATA_ROOT)
    from nlbench.core.runner import build_model

    plain = build_model(spec, benchmark)
    cms = transformed("cms", resolve_spec("split-digits", "cms", device="cpu", scenario=scenario, head=head),
                      build_model(spec, benchmark))
    matched = transformed("adam-matched", spec, build_model(spec, benchmark))
    assert (count(plain), count(cms)) == (17_610, 68_910)
    assert_matched(plain, count(cms), matched, 1, count(matched))


@pytest.mark.parametrize("scenario", ["domain", "task"])
def test_permuted_fmnist_matches_the_cms_network_from_metadata(scenario):
    spec = resolve_spec("permuted-fmnist", "adam-matched", device="cpu", scenario=scenario)
    cms_spec = resolve_spec("permuted-fmnist", "cms", device="cpu", scenario=scenario)
    plain = metadata_model(spec)
    cms = transformed("cms", cms_spec, metadata_model(cms_spec))
    matched = transformed("adam-matched", spec, metadata_model(spec))
    if scenario == "domain":
        assert (count(plain), count(cms)) == (478_410, 1_283_610)
        assert_matched(plain, count(cms), matched, 1, count(matched))
    else:  # one head per task: each network carries 10 heads by the end of the stream
        assert isinstance(matched, MultiHeadNet)
        heads = get_suite("permuted-fmnist").n_experiences
        stream_size = lambda m: count(m) + (heads - 1) * one_head(m)  # noqa: E731
        assert_matched(plain, stream_size(cms), matched, heads, stream_size(matched))


def test_more_levels_match_a_wider_mlp():
    spec = resolve_spec("permuted-fmnist", "adam-matched", device="cpu")
    widths = [unwrap_backbone(transformed("adam-matched", resolve_spec("permuted-fmnist", "adam-matched", device="cpu",
                                                                       hparams={"levels": k}), metadata_model(spec))).config.hidden[0]
              for k in (1, 3, 6)]
    assert widths[0] < widths[1] < widths[2]


def test_multi_head_sizes_match_after_avalanche_grew_one_head_per_task():
    """Real strategies over the real split-digits stream: heads are added by Avalanche as tasks appear."""
    benchmark = build_benchmark(get_suite("split-digits"), "task", seed=0, data_root=DEFAULT_DATA_ROOT)
    sizes, models = {}, {}
    for name in ("cms", "adam-matched"):
        spec = resolve_spec("split-digits", name, device="cpu", scenario="task", head="multi", epochs=1)
        strategy, _ = build_strategy(spec, benchmark, torch.device("cpu"))
        for experience in benchmark.train_stream:
            strategy.train(experience)
        models[name], sizes[name] = strategy.model, count(strategy.model)
    assert len(models["adam-matched"].classifier.classifiers) == 5
    assert abs(sizes["adam-matched"] - sizes["cms"]) <= 0.01 * sizes["cms"], sizes
    assert len(unwrap_backbone(models["adam-matched"]).config.hidden) == 2


@pytest.mark.parametrize("suite, flags", [("bigram-shift", []), ("split-cifar10", []), ("split-fmnist", ["--backbone", "cnn"])])
def test_other_backbones_exit_2_with_one_line_and_write_nothing(tmp_path, suite, flags):
    with pytest.raises(UserError, match="does not support the"):
        resolve_spec(suite, "adam-matched", device="cpu", backbone=(flags or [None, None])[1])
    out = tmp_path / "out"
    result = subprocess.run([NLBENCH, "run", "--strategy", "adam-matched", "--suite", suite,
                             *flags, "--epochs", "1", "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1 and "adam-matched" in lines[0] and "mlp, mlp-2x256" in lines[0], lines
    assert not out.exists()


def test_nlbench_run_trains_the_matched_mlp_on_split_digits(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run([NLBENCH, "run", "--strategy", "adam-matched", "--suite", "split-digits",
                             "--epochs", "1", "--device", "cpu", "--out", str(out)],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    (path,) = out.glob("*/*/result.json")
    record = json.loads(path.read_text())
    assert record["status"] == "completed", record["error"]
    assert len(record["accuracy_matrix"]) == 5 and record["metrics"]["acc"] > 0.2
