"""The report's continual section: stability-gap table and figure, relearning (A -> B -> A), probe figure, token CE."""

from __future__ import annotations

import pytest

from nlbench.core.runner import run_one
from nlbench.core.spec import resolve_spec
from nlbench.core.store import write_run

pytestmark = pytest.mark.usefixtures("one_thread")


def test_report_shows_the_continual_measurements(tmp_path, digits):
    from nlbench.commands.report import build_report
    from nlbench.data.bigram import build_bigram_benchmark
    from nlbench.data.suites import configure_suite

    results = tmp_path / "results"
    for strategy in ("adam", "cms"):
        spec = resolve_spec("split-digits", strategy, device="cpu", epochs=1, eval_every=4, probes=True)
        write_run(results, spec, run_one(spec, benchmark=digits))
    bigram = build_bigram_benchmark(configure_suite("bigram-shift", {"regime": "reexposure"}), "domain", n_train=96, n_test=16)
    spec = resolve_spec("bigram-shift", "adam", device="cpu", epochs=1, batch_size=32, eval_every=1,
                        suite_options={"regime": "reexposure"})
    write_run(results, spec, run_one(spec, benchmark=bigram))

    summary = build_report(results, tmp_path / "report")
    text = summary.report_md.read_text()
    for heading in ("## Continual evaluation: the stability gap", "## Relearning after re-exposure",
                    "## Clock-level probes", "## Token cross-entropy"):
        assert heading in text
    names = {p.name for p in summary.figures}
    assert {"continual_exp0_split-digits_class.png", "relearning_bigram_reexposure.png",
            "probes_split-digits_class_cms.png"} <= names
    assert not any(n.startswith("probes_") and "adam" in n for n in names)  # adam has no clock levels
    assert (tmp_path / "report" / "tables" / "stability_gap.csv").exists()
    # suite options are part of a configuration's key: runs of another regime never average together
    assert "regime=reexposure" in set(summary.summary["suite_options"])
