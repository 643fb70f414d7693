"""Protocol presets, the published-baselines mapping, and the "protocol matches?" rule."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest

from nlbench.errors import UserError
from nlbench.core.protocols import (
    DER2020,
    backbone_descriptor,
    get_protocol,
    method_matches,
    protocol_overrides,
    run_buffer_size,
)
from nlbench.core.spec import resolve_spec
from nlbench.commands.report.published import (
    load_published,
    map_published,
    protocol_matches,
    published_csv_path,
    published_extra_path,
)

@pytest.fixture(scope="module")
def published():
    return load_published()


def _der2020_spec(strategy: str, buffer_size: int | None = None, **user_hp):
    o = protocol_overrides("der2020", "split-cifar10", strategy, buffer_size=buffer_size, hparams=user_hp)
    spec = resolve_spec("split-cifar10", strategy, device="cpu", scenario=o["scenario"], backbone=o["backbone"],
                        epochs=o["epochs"], batch_size=o["batch_size"], hparams={**o["hparams"], **user_hp})
    return dataclasses.replace(spec, protocol=o["protocol"])


def _row(published, method: str, buffer: str, scenario: str = "class_il"):
    rows = published[(published["method"] == method) & (published["buffer_size"] == buffer)
                     & (published["published_scenario"] == scenario) & (published["benchmark"] == "split_cifar10")
                     & published["source"].str.startswith("Buzzega")]
    assert len(rows) == 1
    return rows.iloc[0]


def test_der2020_preset_pins_the_published_protocol():
    p = get_protocol("der2020")
    assert (p.suite, p.scenarios, p.epochs, p.batch_size, p.buffer_sizes) == ("split-cifar10", ("class",), 50, 32, (200, 500, 5120))
    assert p.backbone == "resnet18"  # Mammoth's ResNet-18 has nf=64; GEM's reduced one (nf=20) is not the DER protocol
    assert "Buzzega" in p.citation
    with pytest.raises(UserError, match="unknown protocol 'der2021'; valid: der2020"):
        get_protocol("der2021")


def test_overrides_per_strategy_and_buffer():
    o = protocol_overrides("der2020", "split-cifar", "der", buffer_size=500)  # the alias resolves
    assert {k: o[k] for k in ("scenario", "backbone", "epochs", "batch_size", "protocol")} == {
        "scenario": "class", "backbone": "resnet18", "epochs": 50, "batch_size": 32, "protocol": "der2020"}
    assert o["hparams"] == {"optimizer": "sgd", "momentum": 0.0, "weight_decay": 0.0, "lr": 0.03,
                            "mem_size": 500, "der_alpha": 0.2, "der_beta": 0.5}
    assert protocol_overrides("der2020", "split-cifar10", "der", hparams={"der_beta": 0})["hparams"]["der_alpha"] == 0.3  # DER
    assert protocol_overrides("der2020", "split-cifar10", "der")["hparams"]["mem_size"] == 200  # default buffer
    assert protocol_overrides("der2020", "split-cifar10", "agem", buffer_size=5120)["hparams"]["patterns_per_exp"] == 1024
    assert protocol_overrides("der2020", "split-cifar10", "sgd")["hparams"] == {"lr": 0.1, "momentum": 0.0, "weight_decay": 0.0}
    ewc = protocol_overrides("der2020", "split-cifar10", "ewc")["hparams"]
    assert (ewc["ewc_mode"], ewc["ewc_lambda"], ewc["lr"]) == ("online", 10.0, 0.03)


@pytest.mark.parametrize("args, message", [
    (("der2020", "split-digits", "der"), "defined for suite split-cifar10"),
    (("der2020", "split-cifar10", "ewc+replay"), "composition"),
    (("der2020", "split-cifar10", "adam"), "covers: agem, der, ewc, lwf, replay, sgd, si"),
])
def test_overrides_reject_what_the_paper_did_not_run(args, message):
    with pytest.raises(UserError, match=message):
        protocol_overrides(*args)
    with pytest.raises(UserError, match="buffer sizes 200, 500, 5120, not 300"):
        protocol_overrides("der2020", "split-cifar10", "replay", buffer_size=300)


def test_every_preset_setting_is_a_valid_run_spec():
    for method in DER2020.methods:
        spec = _der2020_spec(method.strategy, method.buffer_size or None,
                             **({"der_beta": 0.0} if method.method == "DER" else {}))
        assert spec.hp == {**spec.hp, **method.hparams}
        assert (spec.backbone, spec.epochs, spec.batch_size, spec.protocol) == ("resnet18", 50, 32, "der2020")


def test_a_run_under_the_preset_matches_the_published_row(published):
    spec = _der2020_spec("der", 500)
    ok, reason = protocol_matches(spec, _row(published, "DER++", "500"))
    assert ok, reason
    assert "resnet18" in reason and "50 epochs" in reason and "buffer 500" in reason


@pytest.mark.parametrize("change, expected", [
    ({"protocol": None}, "run not made with --protocol der2020"),
    ({"backbone": "reduced-resnet18"}, "backbone reduced-resnet18 vs published ResNet-18 (from scratch) (resnet18)"),
    ({"epochs": 1}, "epochs 1 vs published 50"),
    ({"batch_size": 128}, "batch size 128 vs preset 32"),
])
def test_a_differing_protocol_is_never_comparable(published, change, expected):
    spec = dataclasses.replace(_der2020_spec("der", 500), **change)
    ok, reason = protocol_matches(spec, _row(published, "DER++", "500"))
    assert not ok and expected in reason


def test_buffer_and_hyperparameters_are_checked(published):
    ok, reason = protocol_matches(_der2020_spec("der", 200), _row(published, "DER++", "500"))
    assert not ok and "buffer 200 vs published 500" in reason
    spec = _der2020_spec("replay", 500)
    spec = dataclasses.replace(spec, hparams=tuple({**spec.hp, "lr": 0.05}.items()))
    ok, reason = protocol_matches(spec, _row(published, "ER", "500"))
    assert not ok and "lr=0.05 vs preset 0.1" in reason


def test_unverified_preset_values_are_said_so(published):
    ok, reason = protocol_matches(_der2020_spec("ewc"), _row(published, "oEWC", "0"))
    assert ok and "UNVERIFIED" in reason


def test_task_il_and_other_sources_have_no_preset(published):
    spec = dataclasses.replace(_der2020_spec("der", 500), scenario="task", head="mask")
    ok, reason = protocol_matches(spec, _row(published, "DER++", "500", "task_il"))
    assert not ok and "no nlbench preset reproduces this source's protocol" in reason


def test_a_load_results_row_works_as_spec(published):
    spec = _der2020_spec("agem", 200)
    row = {k: v for k, v in spec.to_dict().items() if k != "hparams"}
    row.update({f"hp.{k}": v for k, v in spec.hp.items()})
    row["hp.mem_size"] = float("nan")  # a column another strategy declares
    assert protocol_matches(row, _row(published, "A-GEM", "200"))[0]
    assert run_buffer_size("agem", spec.hp, 5) == 200


def test_run_buffer_sizes_and_backbones():
    assert run_buffer_size("adam", {"lr": 0.001}, 5) == 0
    assert run_buffer_size("replay", {"mem_size": 500}, 5) == 500
    assert run_buffer_size("cumulative", {}, 5) is None
    assert backbone_descriptor("split-digits", "mlp") == "mlp-2x100"
    assert backbone_descriptor("split-mnist", "mlp") == "mlp-2x400"
    assert backbone_descriptor("split-cifar10", "resnet18") == "resnet18"


def test_published_table_keeps_every_row_and_maps_names_honestly(published):
    assert len(load_published(extra_path=None)) == 393  # the shared source's rows; published-extra.csv adds its own
    for column in ("benchmark", "published_scenario", "method", "published_metric", "value", "std", "n_tasks",
                   "epochs_per_task", "backbone", "buffer_size", "source", "source_detail"):
        assert column in published.columns
    assert (published["value_frac"] - published["value"] / 100).abs().max() < 1e-12
    by_method = published.drop_duplicates("method").set_index("method")
    assert by_method.loc["JOINT (upper bound)", "strategy"] == ""  # joint training is not `cumulative`
    assert "cumulative" not in set(published["strategy"])
    assert (by_method.loc["DER", "strategy"], by_method.loc["DER", "method_hparams"]) == ("der", "der_beta=0")
    assert by_method.loc["DER++", "method_hparams"] == "der_beta!=0"
    assert by_method.loc["oEWC", "method_hparams"] == "ewc_mode=online"
    assert (by_method.loc["ER", "strategy"], by_method.loc["A-GEM", "strategy"], by_method.loc["GEM", "strategy"]) == ("replay", "agem", "")
    der2020 = published[published["protocol"] == "der2020"]
    assert set(der2020["published_scenario"]) == {"class_il"} and set(der2020["benchmark"]) == {"split_cifar10"}
    assert set(der2020["our_backbone"]) == {"resnet18"} and len(der2020) == 27
    assert set(published.loc[published["published_scenario"] == "class_il", "scenario"]) <= {"class", ""}
    assert published.loc[published["published_metric"] == "final_avg_acc", "metric"].eq("acc").all()
    assert published.loc[published["published_metric"] == "avg_incremental_acc_excl_first", "metric"].eq("").all()
    assert set(published["spread"]) <= {"", "sd", "sem", "unknown"}


def test_method_identity():
    assert method_matches("der_beta=0", {"der_beta": 0.0}) and not method_matches("der_beta=0", {"der_beta": 0.5})
    assert method_matches("der_beta!=0", {"der_beta": 0.5}) and method_matches("", {})
    assert not method_matches("ewc_mode=online", {"ewc_mode": "separate"})


SOURCE_COLUMNS = {"benchmark": "benchmark", "published_scenario": "scenario", "method": "method",
                  "published_metric": "metric", "value": "value", "std": "std", "n_tasks": "n_tasks",
                  "epochs_per_task": "epochs_per_task", "backbone": "backbone", "buffer_size": "buffer_size",
                  "source": "source", "source_detail": "source_detail"}


def test_shipped_published_csv_is_the_mapping_of_its_own_source_columns():
    """What the package ships is self-consistent: the published columns kept in baselines/published.csv,
    mapped again by `map_published`, give the shipped file byte for byte (no file outside the project)."""
    shipped_path = published_csv_path()
    shipped = pd.read_csv(shipped_path)
    source = shipped[list(SOURCE_COLUMNS)].rename(columns=SOURCE_COLUMNS)
    assert map_published(source).to_csv(index=False) == shipped_path.read_text()


def test_extra_published_rows_are_mapped_and_merged(tmp_path):
    """baselines/published-extra.csv (same columns as the shared source) is mapped and appended by the loader."""
    extra = published_extra_path()
    assert extra.exists() and list(pd.read_csv(extra).columns) == list(SOURCE_COLUMNS.values())
    row = {"benchmark": "split_cifar10", "scenario": "class_il", "method": "ER", "metric": "final_avg_acc",
           "value": 50.0, "std": 1.0, "n_tasks": 5, "epochs_per_task": 50, "backbone": "ResNet-18 (from scratch)",
           "buffer_size": 500, "source": "Test et al. 2099 Table 9", "source_detail": "mean ± sd, 3 runs"}
    path = tmp_path / "extra.csv"
    pd.DataFrame([row]).to_csv(path, index=False)
    merged = load_published(extra_path=path)
    assert len(merged) == len(load_published(extra_path=None)) + 1
    added = merged.iloc[-1]
    assert (added["suite"], added["strategy"], added["metric"], added["value_frac"]) == ("split-cifar10", "replay", "acc", 0.5)
    assert added["spread"] == "sd" and added["our_backbone"] == "resnet18"


SHARED_SOURCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "published-baselines.csv"


@pytest.mark.skipif(not SHARED_SOURCE.exists(), reason="optional cross-check with the steering repository's source file")
def test_published_csv_is_regenerated_from_the_shared_source():
    fresh = map_published(pd.read_csv(SHARED_SOURCE)).to_csv(index=False)
    assert fresh == published_csv_path().read_text()
