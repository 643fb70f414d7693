"""`nlbench list` piped (issue 26): every suite option names its valid values, and no value is cut short
with '…' (the piped output is at most 100 columns wide, tests/test_cli.py)."""

from __future__ import annotations

import subprocess

import pytest

from nlbench.core.registry import OPTIMIZER_HPARAMS, strategies
from nlbench.data.suites import SUITES


@pytest.fixture(scope="module")
def piped() -> str:
    out = subprocess.run(["nlbench", "list"], capture_output=True, text=True, check=True).stdout
    return " ".join(out.split())  # the suites' lines wrap at 100 columns: compare the words


def test_every_suite_option_lists_its_choices_or_its_range(piped):
    options = [(suite, option) for suite in SUITES.values() for option in suite.options]
    assert any(option.choices for _, option in options)
    for suite, option in options:
        if option.choices:
            assert f"{option.name}={option.default} (one of {', '.join(option.choices)})" in piped, (suite.name, option.name)
        elif option.low is not None:
            assert f"{option.name}={option.default} ({option.kind} in [{option.low:g}, {option.high:g}])" in piped


def test_no_value_is_truncated_when_piped(piped):
    assert "…" not in piped
    for info in strategies().values():
        hparams = list(info.hparams) + ([] if info.provides_optimizer else list(OPTIMIZER_HPARAMS))
        for hparam in hparams:
            assert f" {hparam.name}={hparam.default} " in f" {piped} ", (info.name, hparam.name)
