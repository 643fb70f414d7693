"""The report's continual-learning section: stability gap, relearning, clock-level probes, token cross-entropy.

Reads what the measurement plugins stored in result.json (only runs that have it; nothing otherwise):
- `continual_eval` (`--eval-every`): the stability-gap table (min-ACC, WC-ACC, gap, times to the minimum
  and to recover; definitions in `nlbench.core.stability`, De Lange, van de Ven, Tuytelaars, ICLR 2023)
  and, per suite and scenario, a figure of accuracy on experience 0 over training iterations, one line per
  configuration (mean over seeds);
- `continual_eval` of bigram-shift `regime=reexposure` runs: relearning speed (iterations to reach 90%
  of the first exposure's final accuracy on A, first time vs re-exposure; savings = their ratio) and the
  A -> B -> A figure (accuracy on A against iterations since the phase started, first exposure solid,
  re-exposure dashed);
- `probes` (`--probes`): per run group, one figure of per-level update counts, weight change and the
  accuracy change on earlier experiences when the level is reverted (`nlbench.core.probes`);
- `cross_entropy_matrix` (sequence suites): final token cross-entropy per test experience beside ACC.

`continual_section` writes the tables and figures and returns the markdown to append to report.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from nlbench.commands.report.figures import save_figure
from nlbench.commands.report.labels import is_missing, pct, scenario_title, slug

_GAP_COLUMNS = ("min_acc", "wc_acc", "gap", "gap_previous", "iterations_to_min", "iterations_to_recover", "recovered_share")


def _results(runs: Any) -> list[tuple[Any, dict]]:
    """(row, result.json) of every completed run that carries a continual measurement."""
    from nlbench.core.store import read_run

    out = []
    for _, row in runs[runs["status"] == "completed"].iterrows():
        try:
            result = read_run(Path(row["path"]))[1]
        except ValueError:
            continue
        if any(k in result for k in ("continual_eval", "probes", "cross_entropy_matrix")):
            out.append((row, result))
    return out


def _mean(values: list) -> Any:
    values = [v for v in values if v is not None and not is_missing(v)]
    return sum(values) / len(values) if values else None


def _groups(items: list[tuple[Any, dict]], field: str) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for row, result in items:
        if result.get(field):
            groups.setdefault((row["suite"], row["scenario"], row["group_label"]), []).append(result)
    return groups


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _mean_curve(results: list[dict], j: int = 0) -> tuple[list[int], list[float], list[int]]:
    """Accuracy on test experience j over iterations, averaged over seeds at the iterations all share."""
    per_seed = []
    for result in results:
        curve = result["continual_eval"]
        points: dict[int, float] = {}
        for n, row in zip(curve["iteration"], curve["accuracy"]):
            if j < len(row):
                points[int(n)] = row[j]  # the later point wins at a boundary (start of the next experience)
        per_seed.append(points)
    common = sorted(set.intersection(*(set(p) for p in per_seed))) if per_seed else []
    return common, [sum(p[n] for p in per_seed) / len(per_seed) for n in common], results[0]["continual_eval"]["boundaries"]


def _stability(items, write_csv, figures_dir, figures, rel) -> list[str]:
    import pandas as pd

    from nlbench.core.stability import summarize_curve

    groups = _groups(items, "continual_eval")
    if not groups:
        return []
    rows = []
    for (suite, scenario, group), results in sorted(groups.items()):
        # Recomputed from the stored curve, so the table always follows the definitions in the code.
        summaries = [summarize_curve(r["continual_eval"]) if r["continual_eval"].get("ends") else {} for r in results]
        rows.append({"suite": suite, "scenario": scenario, "configuration": group, "n": len(results),
                     "every": results[0]["continual_eval"]["every"],
                     **{c: _mean([s.get(c) for s in summaries]) for c in _GAP_COLUMNS}})
    table = pd.DataFrame(rows)
    write_csv(table, "stability_gap.csv")
    lines = ["## Continual evaluation: the stability gap", "",
             "Accuracy on every seen experience every N iterations, on a fixed subsample (`--eval-every N`; "
             "De Lange, van de Ven, Tuytelaars, ICLR 2023). min-ACC: mean over past experiences of their lowest "
             "accuracy after they were learned; WC-ACC: final accuracy on the last experience / K + (1 - 1/K) "
             "min-ACC; gap: accuracy on a past experience at a boundary minus its minimum during the next "
             "experience (all pairs; 'gap prev.': the experience just before); to min / to recover: iterations "
             "from the boundary to the minimum, and until back within 10% of the gap (over the pairs that dropped; "
             "'recovered': their share). Means over seeds.", "",
             "| suite | scenario | configuration | n | every | min-ACC % | WC-ACC % | gap % | gap prev. % | to min | to recover | recovered % |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        it = lambda v: "-" if v is None else f"{v:.0f}"  # noqa: E731
        lines.append(f"| {row['suite']} | {row['scenario']} | {row['configuration']} | {row['n']} | {row['every']} | "
                     f"{pct(row['min_acc'])} | {pct(row['wc_acc'])} | {pct(row['gap'])} | {pct(row['gap_previous'])} | "
                     f"{it(row['iterations_to_min'])} | {it(row['iterations_to_recover'])} | {pct(row['recovered_share'], 0)} |")
    lines.append("")
    plt = _plt()
    for suite, scenario in sorted({(s, c) for s, c, _ in groups}):
        fig, ax = plt.subplots(figsize=(9, 4.5))
        boundaries: list[int] = []
        for (s, c, group), results in sorted(groups.items()):
            if (s, c) != (suite, scenario):
                continue
            x, y, boundaries = _mean_curve(results)
            ax.plot(x, [100 * v for v in y], label=f"{group} (n={len(results)})", linewidth=1.4)
        for b in boundaries[1:]:
            ax.axvline(b, color="grey", linewidth=0.6, linestyle=":")
        ax.set_xlabel("training iteration")
        ax.set_ylabel("accuracy on experience 0 (%)")
        ax.set_title(f"Accuracy on experience 0 during training, {scenario_title(suite, scenario)}")
        ax.legend(fontsize=8, loc="best")
        path = figures_dir / f"continual_exp0_{slug(f'{suite}_{scenario}')}.png"
        save_figure(fig, path, figures)
        lines += [f"![accuracy on experience 0 over iterations, {suite} {scenario}]({rel(path)})", ""]
    return lines


def _relearning(items, write_csv, figures_dir, figures, rel) -> list[str]:
    import pandas as pd

    from nlbench.core.stability import relearning

    chosen = [(row, r) for row, r in items if r.get("continual_eval")
              and isinstance(row.get("suite_options"), dict) and row["suite_options"].get("regime") == "reexposure"]
    if not chosen:
        return []
    rows, curves = [], {}
    for row, result in chosen:
        measured = relearning(result["continual_eval"])
        if measured is None:
            continue
        rows.append({"configuration": row["group_label"], "seed": row["seed"], **measured})
        curves.setdefault(row["group_label"], []).append(result)
    if not rows:
        return []
    table = pd.DataFrame(rows)
    write_csv(table, "relearning.csv")
    lines = ["## Relearning after re-exposure (bigram-shift, A -> B -> A)", "",
             "Iterations into an experience until accuracy on regime A reaches 90% of its value at the end of "
             "the first exposure: first exposure vs re-exposure; savings = first / again (> 1: relearning is faster). "
             "Means over seeds.", "", "| configuration | n | iterations, first | iterations, again | savings |", "|---|---|---|---|---|"]
    for group, block in table.groupby("configuration", sort=True):
        f = lambda c: "-" if block[c].isna().all() else f"{block[c].mean():.2f}" if c == "savings" else f"{block[c].mean():.0f}"  # noqa: E731
        lines.append(f"| {group} | {len(block)} | {f('iterations_first')} | {f('iterations_again')} | {f('savings')} |")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (group, results) in enumerate(sorted(curves.items())):
        x, y, boundaries = _mean_curve(results)
        ends = results[0]["continual_eval"]["ends"]
        for phase, style in ((0, "-"), (2, "--")):
            xs = [(n - boundaries[phase], 100 * a) for n, a in zip(x, y) if boundaries[phase] <= n <= ends[phase]]
            ax.plot([p[0] for p in xs], [p[1] for p in xs], style, color=colors[i % len(colors)],
                    label=f"{group}, {'first exposure' if phase == 0 else 're-exposure'}")
    ax.set_xlabel("iterations since the experience started")
    ax.set_ylabel("accuracy on regime A (%)")
    ax.set_title("Learning A the first time vs relearning A after B")
    ax.legend(fontsize=7)
    path = figures_dir / "relearning_bigram_reexposure.png"
    save_figure(fig, path, figures)
    return lines + ["", f"![relearning A after B]({rel(path)})", ""]


def _probes(items, figures_dir, figures, rel) -> list[str]:
    groups = _groups(items, "probes")
    if not groups:
        return []
    lines = ["## Clock-level probes", "",
             "Per clock level (period C) and experience: updates applied, weight change norm, and the change of "
             "accuracy when the level's parameters are reverted to their start-of-experience value (others kept): "
             "on earlier experiences (> 0: the level is where they were forgotten) and on the current one "
             "(< 0: the level learned it). Means over seeds and experiences.", ""]
    plt = _plt()
    for (suite, scenario, group), results in sorted(groups.items()):
        levels = results[0]["probes"]["levels"]
        n_exp = max(len(r["probes"]["experiences"]) for r in results)
        fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
        for li, level in enumerate(levels):
            series: dict[str, list] = {"updates": [], "change": [], "past": [], "current": []}
            for k in range(n_exp):
                recs = [r["probes"]["experiences"][k] for r in results if k < len(r["probes"]["experiences"])]
                recs = [rec for rec in recs if li < len(rec["updates"])]
                series["updates"].append(_mean([rec["updates"][li] for rec in recs]))
                series["change"].append(_mean([rec["change_norm"][li] for rec in recs]))
                past, current = [], []
                for rec in recs:
                    reverted = rec["reverted_accuracy"][li]
                    if reverted is None:
                        continue
                    delta = [a - b for a, b in zip(reverted, rec["accuracy"])]
                    past += delta[:-1]
                    current.append(delta[-1])
                series["past"].append(_mean(past))
                series["current"].append(_mean(current))
            label = f"level {li} (C={level['period']})"
            for ax, key in zip(axes, ("updates", "change", "past", "current")):
                ys = [None if v is None else (100 * v if key in ("past", "current") else v) for v in series[key]]
                ax.plot(range(n_exp), ys, marker="o", label=label)
        titles = ("updates per experience", "weight change norm", "Δ acc. on earlier exps when reverted (pts)",
                  "Δ acc. on current exp when reverted (pts)")
        for ax, title in zip(axes, titles):
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("experience")
        axes[0].legend(fontsize=7)
        fig.suptitle(f"{group}, {scenario_title(suite, scenario)} (n={len(results)})", fontsize=10)
        path = figures_dir / f"probes_{slug(f'{suite}_{scenario}_{group}')}.png"
        save_figure(fig, path, figures)
        lines += [f"![clock-level probes, {group}]({rel(path)})", ""]
    return lines


def _cross_entropy(items) -> list[str]:
    groups = _groups(items, "cross_entropy_matrix")
    if not groups:
        return []
    lines = ["## Token cross-entropy (sequence suites)", "",
             "Final next-token accuracy and token cross-entropy (nats) on each test experience, means over seeds.", "",
             "| suite | configuration | n | accuracy % per experience | cross-entropy per experience |", "|---|---|---|---|---|"]
    for (suite, _, group), results in sorted(groups.items()):
        ce = [r["cross_entropy_matrix"][-1] for r in results if r["cross_entropy_matrix"]]
        acc = [r["accuracy_matrix"][-1] for r in results if r.get("accuracy_matrix")]
        if not ce or not acc:
            continue
        mean_ce = [_mean([row[j] for row in ce]) for j in range(len(ce[0]))]
        mean_acc = [_mean([row[j] for row in acc]) for j in range(len(acc[0]))]
        lines.append(f"| {suite} | {group} | {len(ce)} | {' / '.join(pct(a) for a in mean_acc)} | "
                     f"{' / '.join(f'{c:.3f}' for c in mean_ce)} |")
    return lines + [""]


def continual_section(runs: Any, out: Path, write_csv: Callable[[Any, str], Path], figures: list[Path]) -> str:
    """Write the section's tables (through the report's `write_csv`) and figures under `out`; return its
    markdown ("" when no run has any)."""
    items = _results(runs)
    if not items:
        return ""
    figures_dir = out / "figures"
    rel = lambda p: Path(p).relative_to(out).as_posix()  # noqa: E731
    lines = (_stability(items, write_csv, figures_dir, figures, rel)
             + _relearning(items, write_csv, figures_dir, figures, rel)
             + _probes(items, figures_dir, figures, rel) + _cross_entropy(items))
    return "\n" + "\n".join(lines) + "\n" if lines else ""
