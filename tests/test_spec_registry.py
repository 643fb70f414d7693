"""The run spec and the strategy registry: defaults, validation, composition, stable run ids."""

from __future__ import annotations

import pytest

from nlbench.errors import UserError
from nlbench.core.registry import HParam, declared_hparams, resolve_hparams, strategies
from nlbench.core.spec import RunSpec, resolve_spec

BASELINES = {"adam", "sgd", "ewc", "replay", "lwf", "si", "agem", "der", "cumulative"}


def test_every_baseline_is_registered_with_declared_hyperparameters():
    registered = strategies()
    assert BASELINES <= set(registered)
    for name in BASELINES:
        info = registered[name]
        assert info.family == "baseline"
        assert info.description
        for hparam in info.hparams:
            assert hparam.validate(hparam.default) == hparam.default


def test_plugin_only_strategies_get_the_shared_optimizer_hyperparameters():
    assert {"optimizer", "lr", "mem_size"} <= set(declared_hparams("replay"))
    assert "optimizer" not in declared_hparams("adam")  # adam brings its own optimizer


def test_composition_merges_hyperparameters_and_rejects_conflicts():
    declared = declared_hparams("ewc+replay")
    assert {"ewc_lambda", "mem_size", "lr"} <= set(declared)
    with pytest.raises(UserError, match="two optimizers"):
        declared_hparams("adam+sgd")
    with pytest.raises(UserError, match="unknown strategy 'nope'"):
        declared_hparams("replay+nope")


def test_resolve_hparams_fills_defaults_and_parses_strings():
    hp = resolve_hparams("replay", {"mem_size": "500", "lr": "3e-4"})
    assert hp["mem_size"] == 500 and hp["lr"] == pytest.approx(3e-4) and hp["optimizer"] == "adam"
    with pytest.raises(UserError, match="unknown hyperparameter 'alpha'.*valid: .*mem_size"):
        resolve_hparams("replay", {"alpha": "1"})
    with pytest.raises(UserError, match="mem_size='abc' is not valid"):
        resolve_hparams("replay", {"mem_size": "abc"})
    with pytest.raises(UserError, match="mem_size=0 is not valid"):
        resolve_hparams("replay", {"mem_size": 0})


@pytest.mark.parametrize(
    "hparam, text, expected",
    [
        (HParam("a", 1e-4, "float", low=0.0), "3e-4", 3e-4),
        (HParam("n", 1, "int", low=1), "8", 8),
        (HParam("b", False, "bool"), "true", True),
        (HParam("p", (1,), "ints", low=1, increasing=True), "1,8,64", (1, 8, 64)),
        (HParam("o", "adam", "str", choices=("adam", "sgd")), "sgd", "sgd"),
    ],
)
def test_hparam_parse(hparam, text, expected):
    assert hparam.parse(text) == expected


@pytest.mark.parametrize(
    "hparam, text",
    [
        (HParam("a", 1e-4, "float", low=0.0), "abc"),
        (HParam("a", 1e-4, "float", low=0.0), "-1"),
        (HParam("a", 1e-4, "float", low=0.0), "nan"),
        (HParam("p", (1,), "ints", low=1, increasing=True), "0"),
        (HParam("p", (1,), "ints", low=1, increasing=True), "8,1"),
        (HParam("p", (1,), "ints", low=1, increasing=True), ""),
        (HParam("o", "adam", "str", choices=("adam", "sgd")), "rmsprop"),
        (HParam("b", False, "bool"), "maybe"),
    ],
)
def test_hparam_rejects_bad_values_with_one_line(hparam, text):
    with pytest.raises(UserError) as err:
        hparam.parse(text)
    assert "\n" not in str(err.value) and hparam.name in str(err.value)


def test_resolve_spec_uses_suite_defaults():
    spec = resolve_spec("split-fmnist", "replay", device="cpu")
    assert (spec.scenario, spec.backbone, spec.epochs, spec.batch_size, spec.head) == ("class", "mlp", 1, 128, "single")
    assert spec.name == "split-fmnist"
    task = resolve_spec("split-cifar", "adam", device="cpu", scenario="task")
    assert task.suite == "split-cifar10" and task.head == "mask" and task.backbone == "reduced-resnet18"
    assert resolve_spec("permuted-mnist", "adam", device="cpu", scenario="task").head == "multi"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"suite": "nope"}, "unknown suite 'nope'"),
        ({"scenario": "domain"}, "scenario 'domain' is not available"),
        ({"backbone": "vgg"}, "unknown backbone 'vgg'"),
        ({"epochs": 0}, "--epochs must be a positive integer"),
        ({"batch_size": -3}, "--batch-size must be a positive integer"),
        ({"strategy": "der", "scenario": "task"}, "does not support the 'task' scenario"),
        ({"head": "multi"}, "head 'multi' does not fit scenario 'class'"),
    ],
)
def test_resolve_spec_rejects_bad_input(kwargs, message):
    args = {"suite": "split-digits", "strategy": "adam", **kwargs}
    with pytest.raises(UserError, match=message):
        resolve_spec(args.pop("suite"), args.pop("strategy"), device="cpu", **args)


def test_run_id_is_a_stable_content_hash():
    a = resolve_spec("split-digits", "replay", device="cpu", seed=1)
    b = resolve_spec("split-digits", "replay", device="cpu", seed=1, name="elsewhere")
    assert a.run_id == b.run_id  # the name files a run, it does not change it
    assert a.run_id != resolve_spec("split-digits", "replay", device="cpu", seed=2).run_id
    assert a.run_id != resolve_spec("split-digits", "replay", device="cpu", seed=1, hparams={"mem_size": 50}).run_id
    # Round trip through JSON (lists come back for tuples) keeps the spec and its id.
    again = RunSpec.from_dict(__import__("json").loads(a.to_json()))
    assert again == a and again.run_id == a.run_id
    # Pinned: an accidental change to the hashed fields or the hash itself would orphan stored results.
    pinned = RunSpec(suite="split-digits", strategy="adam", scenario="class", backbone="mlp", seed=0, epochs=5,
                     batch_size=32, eval_batch_size=256, device="cpu", hparams=(("lr", 0.001), ("weight_decay", 0.0)))
    assert pinned.run_id == "09a9fe5915e601d6"
