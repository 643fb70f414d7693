"""`nlbench report` on real runs: real baselines trained on split-digits, stored, then reported.

One module-scoped results tree (about 10 short runs) serves every test: adam and replay over seeds
0-2, a small replay grid (mem_size x lr), a real diverged run, a real failed run, a corrupt copy of a
run and an unfinished run directory. Every number checked here is recomputed by hand from the
stored result.json files, without nlbench.core.metrics.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import shutil
import statistics
import warnings
from pathlib import Path

import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from nlbench.errors import UserError
from nlbench.cli.report import report_command
from nlbench.commands.report import build_report, compare_published, find_sweeps, t_critical
from nlbench.core.runner import run_one
from nlbench.core.spec import resolve_spec
from nlbench.core.store import write_run

EPOCHS = 1
T_975_DF2 = 4.302652729749462  # Student t, two-sided 95%, 2 degrees of freedom (t table: 4.303)


def _spec(strategy, seed=0, **hparams):
    return resolve_spec("split-digits", strategy, device="cpu", seed=seed, epochs=EPOCHS, hparams=hparams)


@pytest.fixture(scope="module")
def built(tmp_path_factory, digits, one_thread):
    root = tmp_path_factory.mktemp("results")
    specs = [_spec(s, seed) for s in ("adam", "replay") for seed in (0, 1, 2)]
    specs += [_spec("replay", 0, mem_size=50, lr=1e-3), _spec("replay", 0, mem_size=200, lr=3e-3)]  # L-shaped grid
    # A real divergence: an enormous EWC penalty with plain SGD blows the loss up in experience 1.
    specs.append(_spec("ewc", 0, ewc_lambda=1e9, optimizer="sgd", lr=1.0))
    # A real failure: an evaluation batch size of 0 makes the evaluation loader raise (a ValueError)
    # inside run_one.
    specs.append(dataclasses.replace(_spec("adam", 5), eval_batch_size=0))
    dirs = {}
    for spec in specs:
        dirs[(spec.strategy, spec.seed, spec.hparams)] = write_run(root, spec, run_one(spec, benchmark=digits))
    statuses = {key: json.loads((d / "result.json").read_text())["status"] for key, d in dirs.items()}
    assert statuses[("ewc", 0, _spec("ewc", 0, ewc_lambda=1e9, optimizer="sgd", lr=1.0).hparams)] == "diverged"
    assert sorted(statuses.values()).count("failed") == 1

    # A corrupt copy of adam/seed 0 claiming seed 99: if it were counted, adam would have n=4.
    corrupt = root / "split-digits" / "corrupt-copy"
    shutil.copytree(dirs[("adam", 0, _spec("adam", 0).hparams)], corrupt)
    spec = json.loads((corrupt / "spec.json").read_text())
    spec["seed"] = 99
    (corrupt / "spec.json").write_text(json.dumps(spec))
    text = (corrupt / "result.json").read_text()
    (corrupt / "result.json").write_text(text[: len(text) // 2])
    unfinished = root / "split-digits" / "killed-run"
    unfinished.mkdir()
    (unfinished / "spec.json").write_text(json.dumps(spec))

    out = tmp_path_factory.mktemp("report")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = build_report(root, out)
    return {"root": root, "out": out, "report": report, "warnings": [str(w.message) for w in caught], "corrupt": corrupt}


def _summary_rows(out: Path) -> list[dict]:
    with open(out / "tables" / "summary.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _row(rows, strategy, config=""):
    (row,) = [r for r in rows if r["strategy"] == strategy and r["config"] == config]
    return row


def _stored_runs(root: Path, strategy: str, **hparams) -> list[dict]:
    """Every readable stored run of `strategy` with these hyperparameter values, read from JSON directly."""
    found = []
    for spec_file in sorted(root.rglob("spec.json")):
        try:
            spec = json.loads(spec_file.read_text())
            result = json.loads((spec_file.parent / "result.json").read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if spec["strategy"] == strategy and all(spec["hparams"].get(k) == v for k, v in hparams.items()):
            found.append({"spec": spec, "result": result})
    return found


def _forgetting_by_hand(R: list[list[float]]) -> float:
    T = len(R)
    return sum(max(R[l][j] for l in range(j, T - 1)) - R[T - 1][j] for j in range(T - 1)) / (T - 1)


def test_report_writes_tables_and_figures(built):
    report, out = built["report"], built["out"]
    assert report.report_md == out / "report.md" and report.report_md.read_text().startswith("# nlbench report")
    names = {p.name for p in report.tables}
    assert {"runs.csv", "summary.csv", "published_comparison.csv", "failed_runs.csv", "skipped_runs.csv"} <= names
    assert all(p.exists() and p.stat().st_size > 0 for p in report.tables)
    figures = {p.name for p in report.figures}
    for expected in ("acc_forgetting_split-digits_class.png", "matrix_split-digits_class_adam.png",
                     "matrix_split-digits_class_replay.png", "accuracy_over_time_split-digits_class.png",
                     "cost_split-digits_class.png"):
        assert expected in figures
    assert any(name.startswith("sweep_") for name in figures)
    text = report.report_md.read_text()
    for section in ("## What was run", "## Metric definitions", "## Main results", "## Published comparison",
                    "## Failed and diverged runs", "## Skipped run directories", "## Notes on reading these numbers"):
        assert section in text
    assert "Chaudhry" in text and "divided by T-1" in text  # every table says which definition it uses
    assert all(f"({p.relative_to(out).as_posix()})" in text for p in report.figures)


def test_a_table_metric_recomputed_by_hand_from_stored_matrices(built):
    adam = _stored_runs(built["root"], "adam")
    completed = [r for r in adam if r["result"]["status"] == "completed"]
    assert sorted(r["spec"]["seed"] for r in completed) == [0, 1, 2]
    by_hand = [_forgetting_by_hand(r["result"]["accuracy_matrix"]) for r in completed]
    row = _row(_summary_rows(built["out"]), "adam")
    assert float(row["forgetting_mean"]) == pytest.approx(sum(by_hand) / 3, abs=1e-12)
    acc_by_hand = [sum(r["result"]["accuracy_matrix"][-1]) / 5 for r in completed]
    assert float(row["acc_mean"]) == pytest.approx(statistics.mean(acc_by_hand), abs=1e-12)


def test_mean_std_and_confidence_interval_match_a_hand_computation(built):
    replay = [r for r in _stored_runs(built["root"], "replay", mem_size=200, lr=1e-3) if r["result"]["status"] == "completed"]
    acc = [sum(r["result"]["accuracy_matrix"][-1]) / len(r["result"]["accuracy_matrix"][-1]) for r in replay]
    assert len(acc) == 3
    mean, sd = statistics.mean(acc), statistics.stdev(acc)
    ci = T_975_DF2 * sd / math.sqrt(3)
    assert t_critical(3) == pytest.approx(T_975_DF2, rel=1e-9)
    row = _row(_summary_rows(built["out"]), "replay", "lr=0.001; mem_size=200")
    assert (int(row["n"]), row["seeds"]) == (3, "0,1,2")
    assert float(row["acc_mean"]) == pytest.approx(mean, abs=1e-12)
    assert float(row["acc_std"]) == pytest.approx(sd, abs=1e-12)
    assert float(row["acc_ci95"]) == pytest.approx(ci, abs=1e-12)
    assert f"{100 * mean:.1f} ± {100 * ci:.1f}" in built["report"].report_md.read_text()
    single = _row(_summary_rows(built["out"]), "replay", "lr=0.001; mem_size=50")
    assert single["n"] == "1" and single["acc_ci95"] == ""  # no interval from one run


def test_figure_is_a_readable_png(built):
    path = next(p for p in built["report"].figures if p.name.startswith("acc_forgetting"))
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 200
        image.load()


def test_diverged_and_failed_runs_are_listed_but_never_aggregated(built):
    report, text = built["report"], built["report"].report_md.read_text()
    assert report.n_not_completed == 2
    failed = text.split("## Failed and diverged runs")[1].split("## Skipped")[0]
    assert "| diverged | training loss became NaN/inf" in failed
    assert "| failed | ValueError: " in failed  # the loader's own words depend on the data path
    rows = _summary_rows(built["out"])
    assert not [r for r in rows if r["strategy"] == "ewc"]  # its only run diverged
    adam = _row(rows, "adam")
    assert (adam["n"], adam["seeds"], adam["excluded"], adam["excluded_status"]) == ("3", "0,1,2", "1", "1 failed")


def test_corrupt_run_is_skipped_with_a_warning_naming_it_and_not_counted(built):
    corrupt_file = str(built["corrupt"] / "result.json")
    assert any(corrupt_file in message for message in built["warnings"])
    assert any(corrupt_file in message for message in built["report"].skipped)
    skipped = built["report"].report_md.read_text().split("## Skipped run directories")[1]
    assert corrupt_file in skipped and "killed-run" in skipped
    assert "99" not in _row(_summary_rows(built["out"]), "adam")["seeds"].split(",")


def test_sweep_heatmap_falls_back_to_the_hyperparameters_that_vary(built):
    (grid,) = built["report"].sweeps  # no periods/alpha here: the two replay hparams that vary
    assert (grid.strategy, grid.x, grid.y) == ("replay", "lr", "mem_size")
    cells = {(c["lr"], c["mem_size"]): c["n"] for _, c in grid.table.iterrows()}
    assert cells == {("0.001", "200"): 3, ("0.001", "50"): 1, ("0.003", "200"): 1}
    assert grid.figure.exists() and grid.csv.exists()
    (swapped,) = find_sweeps(built["report"].summary, axes=("mem_size", "lr"))
    assert (swapped.x, swapped.y) == ("mem_size", "lr")


def test_sweep_prefers_periods_x_alpha_and_splits_on_a_third_hparam(built):
    """The Nested Learning sweep layout, on the real replay configurations relabelled as clock sweeps."""
    import pandas as pd

    summary = built["report"].summary
    replay = summary[summary["strategy"] == "replay"]
    periods = {"50": (1, 8), "200": (1, 8, 64)}
    alpha = {"0.001": 0.5, "0.003": 0.25}
    blocks = []
    for beta in (0.0, 1.0):
        block = replay.copy()
        block["_k_hp.periods"] = [f"({','.join(map(str, periods[m]))})" for m in block["_k_hp.mem_size"]]
        block["_k_hp.alpha"] = [f"{alpha[lr]:g}" for lr in block["_k_hp.lr"]]
        block["_k_hp.beta"] = f"{beta:g}"
        block["_hp"] = [{"periods": periods[m], "alpha": alpha[lr], "beta": beta} for m, lr in zip(block["_k_hp.mem_size"], block["_k_hp.lr"])]
        block["_k_hp.mem_size"] = block["_k_hp.lr"] = "-"
        blocks.append(block)
    grids = find_sweeps(pd.concat(blocks, ignore_index=True))
    assert [(g.x, g.y, g.fixed["beta"]) for g in grids] == [("periods", "alpha", "0"), ("periods", "alpha", "1")]
    assert set(grids[0].table["periods"]) == {"(1,8)", "(1,8,64)"} and set(grids[0].table["alpha"]) == {"0.5", "0.25"}


def test_published_rows_are_joined_but_never_comparable_without_a_preset(built, tmp_path):
    from nlbench.commands.report.published import load_published

    real = load_published()
    assert "split-digits" not in set(real["suite"])  # nothing to compare on this suite
    rows = real.iloc[:2].copy()
    rows[["suite", "scenario", "strategy", "metric", "protocol", "our_backbone", "epochs_per_task", "n_tasks"]] = [
        "split-digits", "class", "replay", "acc", "", "mlp-2x100", str(EPOCHS), "5"]
    rows["buffer_size"] = ["200", "200"]
    rows["method_hparams"] = ["", "optimizer=sgd"]  # the second identifies another method: not paired
    rows["value_frac"] = [0.5, 0.5]
    path = tmp_path / "published.csv"
    rows.to_csv(path, index=False)
    table = compare_published(built["report"].summary, load_published(path))
    assert len(table) == 3  # one published row x three replay configurations
    assert not table["comparable"].any()
    assert table["reason"].str.contains("no nlbench preset reproduces this source's protocol").all()
    default = table[table["config"] == "lr=0.001; mem_size=200"].iloc[0]
    assert default["difference"] == pytest.approx(default["ours_mean"] - 0.5)
    small = table[table["config"] == "lr=0.001; mem_size=50"].iloc[0]
    assert "buffer 50 vs published 200" in small["reason"]


def test_missing_empty_and_all_corrupt_directories_are_user_errors(built, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        build_report(tmp_path / "nowhere", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no finished runs"):
        build_report(tmp_path / "empty", tmp_path / "out")
    only_corrupt = tmp_path / "corrupt"
    shutil.copytree(built["corrupt"], only_corrupt / "x")
    with pytest.raises(UserError, match="corrupt.*result.json"):
        build_report(only_corrupt, tmp_path / "out")


def test_command_line(built, tmp_path, monkeypatch):
    app = typer.Typer()
    app.callback()(lambda: None)
    app.command("report")(report_command)
    runner = CliRunner()
    missing = runner.invoke(app, ["report", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    assert "RESULTS_DIR" in runner.invoke(app, ["report", "--help"]).output
    # A small tree (one run and the corrupt copy): the default --out is reports/<name of RESULTS_DIR>.
    small = tmp_path / "small"
    adam0 = next(p.parent for p in built["root"].rglob("done")
                 if json.loads((p.parent / "spec.json").read_text())["strategy"] == "adam"
                 and json.loads((p.parent / "result.json").read_text())["status"] == "completed")
    shutil.copytree(adam0, small / "a")
    shutil.copytree(built["corrupt"], small / "b")
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["report", str(small)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "reports" / "small" / "report.md").exists()
    assert "warning: skipping" in result.output and "result.json" in result.output
    assert "ACC" in result.output and "adam" in result.output
    # One seed: said plainly, and no interval is promised or drawn anywhere.
    assert "one seed per configuration" in " ".join(result.output.split()) and "± n/a" not in result.output
    text = (tmp_path / "reports" / "small" / "report.md").read_text()
    assert "Every configuration here has one seed (n=1)" in text and "One seed per configuration (n=1)" in text
    assert "n/a" not in text and "t-interval" not in text and "t = " not in text
    # --latex: the LaTeX tables, written beside the CSV tables, named in the output.
    latex = runner.invoke(app, ["report", str(small), "--latex", "--out", str(tmp_path / "tex")])
    assert latex.exit_code == 0, latex.output
    assert "LaTeX tables" in latex.output and (tmp_path / "tex" / "tables" / "main_split-digits_class.tex").exists()


def _latex_rows(text: str) -> list[list[str]]:
    body = text.split("\\midrule", 1)[1].split("\\bottomrule", 1)[0]
    return [[c.strip() for c in line.rstrip("\\ ").split(" & ")] for line in body.strip().splitlines()]


def test_latex_main_table_mean_ci_and_best_in_bold(built, tmp_path):
    from nlbench.commands.report.latex import write_latex

    summary = built["report"].summary
    paths = write_latex(summary, built["report"].comparison, tmp_path)
    text = (tmp_path / "main_split-digits_class.tex").read_text()
    assert tmp_path / "main_split-digits_class.tex" in paths
    assert text.startswith("\\begin{table}") and "\\toprule" in text and "ACC (\\%)" in text
    rows = _latex_rows(text)
    header = text.split("\\toprule", 1)[1].split("\\midrule", 1)[0].strip().rstrip("\\ ").split(" & ")
    acc, forgetting = header.index("ACC (\\%)"), header.index("Forgetting (\\%)")
    assert len(rows) == len(summary)
    for (_, row), cells in zip(summary.iterrows(), rows):
        shown = f"{100 * row['acc_mean']:.1f}" + (f" $\\pm$ {100 * row['acc_ci95']:.1f}" if row["n"] > 1 else "")
        assert cells[acc] in (shown, f"\\textbf{{{shown}}}")
        assert ("mem\\_size" in cells[1]) == ("mem_size" in row["config"])  # text is escaped for LaTeX
    # The replay grid points have one seed, so no interval: no difference is supported, nothing is bold
    # (tests/test_report_display.py checks the rule on hand-made intervals).
    assert (summary["n"] == 1).any() and "textbf" not in text
    assert "bold: the best mean whose 95\\% CI overlaps no other configuration" in text  # what bold means
    assert "a configuration with one seed shows its single value" in text  # the caption: n is mixed here


def test_bad_stored_results_are_each_named_in_a_warning_and_never_counted(built, tmp_path):
    """A truncated result.json, a spec.json without `done`, and a result of an older schema, beside one
    good run, through `nlbench report`: three warnings naming the paths, n=1, exit code 0."""
    adam0 = next(p.parent for p in built["root"].rglob("done")
                 if json.loads((p.parent / "spec.json").read_text())["strategy"] == "adam"
                 and json.loads((p.parent / "result.json").read_text())["status"] == "completed")
    results = tmp_path / "results"
    shutil.copytree(adam0, results / "good")
    bad = {}
    for name, seed in (("truncated", 7), ("unfinished", 8), ("old-schema", 9)):
        bad[name] = results / name
        shutil.copytree(adam0, bad[name])
        spec = json.loads((bad[name] / "spec.json").read_text())
        (bad[name] / "spec.json").write_text(json.dumps({**spec, "seed": seed}))  # a distinct run if it were counted
    text = (bad["truncated"] / "result.json").read_text()
    (bad["truncated"] / "result.json").write_text(text[: len(text) // 3])
    (bad["unfinished"] / "done").unlink()
    (bad["unfinished"] / "result.json").unlink()
    old = json.loads((bad["old-schema"] / "result.json").read_text())
    (bad["old-schema"] / "result.json").write_text(json.dumps({**old, "schema": 0}))

    app = typer.Typer()
    app.callback()(lambda: None)
    app.command("report")(report_command)
    result = CliRunner().invoke(app, ["report", str(results), "--out", str(tmp_path / "report")], terminal_width=200)
    assert result.exit_code == 0, result.output
    warned = [line for line in result.stderr.splitlines() if line.startswith("warning: skipping")]
    assert len(warned) == 3, result.stderr
    assert any(str(bad["truncated"] / "result.json") in w and "truncated" in w for w in warned)
    assert any(str(bad["unfinished"]) in w and "no 'done' marker" in w for w in warned)
    assert any(str(bad["old-schema"] / "result.json") in w and "schema 0; this nlbench reads schema 1" in w for w in warned)
    (row,) = _summary_rows(tmp_path / "report")
    good_seed = json.loads((adam0 / "spec.json").read_text())["seed"]
    assert (row["strategy"], row["n"], row["seeds"]) == ("adam", "1", str(good_seed))
    with open(tmp_path / "report" / "tables" / "skipped_runs.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 3


def test_unwritable_report_directory_fails_before_drawing(built, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UserError, match="not writable"):
        build_report(built["root"], blocker / "report")
    app = typer.Typer()
    app.callback()(lambda: None)
    app.command("report")(report_command)
    result = CliRunner().invoke(app, ["report", str(built["root"]), "--out", str(blocker / "report")])
    assert result.exit_code == 2 and "not writable" in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_report_package_import_is_light():
    """The CLI imports nlbench.commands.report at startup: no Typer, rich or numeric library on import."""
    import subprocess
    import sys

    code = ("import sys, nlbench.commands.report; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'typer', 'rich', 'click', 'pandas', 'numpy', "
            "'scipy', 'matplotlib', 'seaborn', 'torch'}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout


def test_tuning_trials_are_dropped_without_shifting_other_runs_columns(tmp_path, digits, one_thread):
    """Trials (holdout > 0) are left out of the report; the per-run columns read from result.json (time,
    error, device) must stay with their own runs. They once shifted by the number of trials read before
    a run, so test runs showed a trial's training time (HOPE at 0.36 s per experience instead of 9 s)."""
    from nlbench.commands.report.load import load_runs

    root = tmp_path / "results"
    trial = dataclasses.replace(_spec("adam", 0), holdout=0.1, name="a-trials")  # read before the test run
    trial_dir = write_run(root, trial, run_one(trial, benchmark=digits))
    test = dataclasses.replace(_spec("adam", 1), name="b-tuned")
    test_dir = write_run(root, test, run_one(test, benchmark=digits))
    stored = json.loads((trial_dir / "result.json").read_text())
    stored["experience_train_time_s"] = [100.0] * len(stored["experience_train_time_s"])
    (trial_dir / "result.json").write_text(json.dumps(stored))
    runs = load_runs(root)[0]
    assert list(runs["run_id"]) == [test.run_id]
    own = json.loads((test_dir / "result.json").read_text())["experience_train_time_s"]
    assert runs["time_per_exp_s"].iloc[0] == pytest.approx(statistics.mean(own))
