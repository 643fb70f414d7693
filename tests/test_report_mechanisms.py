"""The report says whether DeepL2GD's rho guard acted in a periods x alpha sweep: per alpha, the share of
projections it cut and the mean alpha_eff / alpha, summed over the runs' clock levels (store written through
the real store; the numbers are chosen so each line is known in advance)."""

from __future__ import annotations

from nlbench.commands.report.build import build_report
from nlbench.core.spec import resolve_spec
from nlbench.core.store import write_run


def _result(seed, acc, diagnostics):
    result = {"status": "completed", "error": None, "seed": seed, "accuracy_matrix": [[acc] * 5] * 5,
              "initial_accuracy": [0.1] * 5,
              "metrics": {"acc": acc, "forgetting": 0.1, "bwt": -0.1, "learning_acc": acc + 0.1, "avg_inc_acc": acc,
                          "fwt": 0.0},
              "experience_train_time_s": [1.0], "eval_time_s": [0.1], "wall_time_s": 5.0, "peak_memory_mb": 900,
              "peak_memory_kind": "rss_peak", "device": "cpu",
              "clocks": {"global_step": 200, "periods": [1, 2, 4], "updates": [200, 100, 50]}}
    if diagnostics is not None:
        result["diagnostics"] = diagnostics
    return result


def _level(n, bound, ratio):
    return {"projections": n, "guard_bound": bound, "guard_rate": bound / n, "alpha_eff_over_alpha": ratio, "layers": {}}


def test_the_sweep_section_says_how_often_the_guard_cut_alpha(tmp_path):
    store = tmp_path / "store"
    for alpha in (1e-4, 1e-2):
        for seed in (1, 2):
            if alpha == 1e-4:  # the guard never binds
                diagnostics = {"level_0": _level(200, 0, 1.0), "level_1": _level(100, 0, 1.0)}
            else:  # it binds on every level-0 projection, at a quarter of alpha
                diagnostics = {"level_0": _level(200, 200, 0.25), "level_1": _level(100, 0, 1.0)}
            for periods in ("1,2,4", "1,4,8"):
                spec = resolve_spec("split-digits", "cms+deep-l2gd", device="cpu", seed=seed, name="grid",
                                    hparams={"alpha": alpha, "periods": periods})
                write_run(store, spec, _result(seed, 0.5 + alpha, diagnostics))
    text = build_report(store, tmp_path / "out").report_md.read_text()
    sweeps = text.split("## Sweeps")[1].split("## Figures")[0]
    line = next(s for s in sweeps.splitlines() if "rho guard" in s)
    assert "alpha=0.0001: cut alpha in 0% of 1200 projections, mean alpha_eff/alpha 1 (4 runs)" in line
    # 800 of 1200 cut; mean ratio (800 * 0.25 + 400 * 1.0) / 1200 = 0.5
    assert "alpha=0.01: cut alpha in 67% of 1200 projections, mean alpha_eff/alpha 0.5 (4 runs)" in line


def test_a_sweep_without_guard_measurements_has_no_guard_line(tmp_path):
    store = tmp_path / "store"
    for alpha in (1e-4, 1e-2):
        for seed in (1, 2):
            spec = resolve_spec("split-digits", "cms+deep-l2gd", device="cpu", seed=seed, name="grid",
                                hparams={"alpha": alpha})
            write_run(store, spec, _result(seed, 0.5 + alpha, None))
    text = build_report(store, tmp_path / "out").report_md.read_text()
    assert "## Sweeps" in text and "rho guard" not in text
