"""Continual-learning metrics on hand-computed accuracy matrices, edge cases and properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from nlbench.core.metrics import (
    DEFINITIONS,
    average_incremental_accuracy,
    backward_transfer,
    final_average_accuracy,
    forgetting,
    forward_transfer,
    learning_accuracy,
    summarize,
)

# R[i, j]: accuracy on experience j after training on experience i
R3 = [
    [0.9, 0.1, 0.2],
    [0.7, 0.8, 0.3],
    [0.5, 0.6, 0.95],
]
B3 = [0.1, 0.12, 0.08]

# experience 0 peaks after training on experience 1 (0.8 > 0.6 on the diagonal) and experience 1
# after experience 2 (0.9 > 0.7), so forgetting != -BWT. R4[1, 2] = 0.99 is an upper-triangle
# entry (before experience 2 is learned) that forgetting must NOT count as a best accuracy.
R4 = [
    [0.6, 0.2, 0.1, 0.0],
    [0.8, 0.7, 0.99, 0.2],
    [0.5, 0.9, 0.75, 0.1],
    [0.4, 0.6, 0.7, 0.85],
]
B4 = [0.1, 0.1, 0.1, 0.1]


# ---------------------------------------------------------------------------- 3 x 3


def test_3x3_acc() -> None:
    assert final_average_accuracy(R3) == pytest.approx((0.5 + 0.6 + 0.95) / 3)


def test_3x3_average_incremental_accuracy() -> None:
    expected = (0.9 + (0.7 + 0.8) / 2 + (0.5 + 0.6 + 0.95) / 3) / 3
    assert average_incremental_accuracy(R3) == pytest.approx(expected)


def test_3x3_bwt() -> None:
    expected = ((0.5 - 0.9) + (0.6 - 0.8)) / 2
    assert backward_transfer(R3) == pytest.approx(expected)


def test_3x3_forgetting_equals_minus_bwt_when_diagonal_is_best() -> None:
    expected = ((max(0.9, 0.7) - 0.5) + (0.8 - 0.6)) / 2
    assert forgetting(R3) == pytest.approx(expected)
    assert forgetting(R3) == pytest.approx(-backward_transfer(R3))


def test_3x3_learning_accuracy() -> None:
    assert learning_accuracy(R3) == pytest.approx((0.9 + 0.8 + 0.95) / 3)


def test_3x3_fwt() -> None:
    expected = ((0.1 - 0.12) + (0.3 - 0.08)) / 2  # R[0,1] - b[1], R[1,2] - b[2]
    assert forward_transfer(R3, B3) == pytest.approx(expected)


# ---------------------------------------------------------------------------- 4 x 4


def test_4x4_all_metrics() -> None:
    assert final_average_accuracy(R4) == pytest.approx((0.4 + 0.6 + 0.7 + 0.85) / 4)
    assert average_incremental_accuracy(R4) == pytest.approx(
        (0.6 + (0.8 + 0.7) / 2 + (0.5 + 0.9 + 0.75) / 3 + (0.4 + 0.6 + 0.7 + 0.85) / 4) / 4
    )
    assert backward_transfer(R4) == pytest.approx(((0.4 - 0.6) + (0.6 - 0.7) + (0.7 - 0.75)) / 3)
    assert learning_accuracy(R4) == pytest.approx((0.6 + 0.7 + 0.75 + 0.85) / 4)
    assert forward_transfer(R4, B4) == pytest.approx(((0.2 - 0.1) + (0.99 - 0.1) + (0.1 - 0.1)) / 3)


def test_4x4_forgetting_uses_best_earlier_accuracy_not_the_diagonal() -> None:
    # j=0: best of R[0..2, 0] = 0.8; j=1: best of R[1..2, 1] = 0.9; j=2: R[2, 2] = 0.75
    # (not R[1, 2] = 0.99, which was measured before experience 2 was learned)
    expected = ((0.8 - 0.4) + (0.9 - 0.6) + (0.75 - 0.7)) / 3  # = 0.25
    assert forgetting(R4) == pytest.approx(expected)
    minus_bwt = ((0.6 - 0.4) + (0.7 - 0.6) + (0.75 - 0.7)) / 3  # = 0.11666...
    assert -backward_transfer(R4) == pytest.approx(minus_bwt)
    assert forgetting(R4) > -backward_transfer(R4)


def test_forgetting_is_negative_when_the_final_model_is_best() -> None:
    # the final row is not part of the max (l runs to T-2), so improvement shows as < 0
    assert forgetting([[0.5, 0.0], [0.9, 0.9]]) == pytest.approx(0.5 - 0.9)
    assert backward_transfer([[0.5, 0.0], [0.9, 0.9]]) == pytest.approx(0.9 - 0.5)


def test_numpy_input_and_nested_list_agree() -> None:
    assert summarize(np.array(R4), np.array(B4)) == summarize(R4, B4)


def test_summarize_keys_and_values() -> None:
    s = summarize(R4, B4)
    assert list(s) == ["acc", "avg_inc_acc", "bwt", "forgetting", "learning_acc", "fwt"]
    assert set(s) == set(DEFINITIONS)
    assert all(isinstance(v, float) for v in s.values())
    assert s["acc"] == pytest.approx(final_average_accuracy(R4))
    assert s["avg_inc_acc"] == pytest.approx(average_incremental_accuracy(R4))
    assert s["bwt"] == pytest.approx(backward_transfer(R4))
    assert s["forgetting"] == pytest.approx(0.25)
    assert s["learning_acc"] == pytest.approx(learning_accuracy(R4))
    assert s["fwt"] == pytest.approx(forward_transfer(R4, B4))


def test_summarize_without_b_has_nan_fwt() -> None:
    s = summarize(R3)
    assert math.isnan(s["fwt"])
    assert not any(math.isnan(v) for k, v in s.items() if k != "fwt")


def test_nan_upper_triangle_only_affects_fwt() -> None:
    # pipelines that evaluate only seen experiences leave the upper triangle empty
    r = np.array(R4)
    r[np.triu_indices(4, k=1)] = np.nan
    s = summarize(r, B4)
    assert math.isnan(s["fwt"])
    for k in ["acc", "avg_inc_acc", "bwt", "forgetting", "learning_acc"]:
        assert s[k] == pytest.approx(summarize(R4, B4)[k])


def test_definitions_are_one_line() -> None:
    assert all(isinstance(d, str) and d and "\n" not in d for d in DEFINITIONS.values())


# ---------------------------------------------------------------------------- T = 1


def test_single_experience() -> None:
    r = [[0.7]]
    assert final_average_accuracy(r) == pytest.approx(0.7)
    assert average_incremental_accuracy(r) == pytest.approx(0.7)
    assert learning_accuracy(r) == pytest.approx(0.7)
    assert math.isnan(backward_transfer(r))
    assert math.isnan(forgetting(r))
    assert math.isnan(forward_transfer(r, [0.1]))
    s = summarize(r, [0.1])
    assert s["acc"] == pytest.approx(0.7)
    assert all(math.isnan(s[k]) for k in ["bwt", "forgetting", "fwt"])


# ---------------------------------------------------------------------------- validation

ALL = [
    final_average_accuracy,
    average_incremental_accuracy,
    backward_transfer,
    forgetting,
    learning_accuracy,
    summarize,
]


@pytest.mark.parametrize("fn", ALL, ids=lambda f: f.__name__)
@pytest.mark.parametrize(
    "bad",
    [
        [],  # empty
        [[]],  # empty rows
        [[0.1, 0.2]],  # 1 x 2
        [[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]],  # 3 x 2
        [0.5, 0.5],  # 1-D
        [[[0.5]]],  # 3-D
        [[90.0, 10.0], [80.0, 85.0]],  # percentages, not fractions
        [[0.5, -0.1], [0.5, 0.5]],  # negative
    ],
    ids=["empty", "empty-rows", "1x2", "3x2", "1d", "3d", "percent", "negative"],
)
def test_bad_matrix_raises(fn, bad) -> None:
    with pytest.raises(ValueError):
        fn(bad)


@pytest.mark.parametrize("b", [[0.1, 0.1], [0.1] * 4, [], [[0.1, 0.1, 0.1]], [10.0, 10.0, 10.0]])
def test_bad_b_raises(b) -> None:
    with pytest.raises(ValueError):
        forward_transfer(R3, b)
    with pytest.raises(ValueError):
        summarize(R3, b)


# ---------------------------------------------------------------------------- properties


@st.composite
def accuracy_matrices(draw, max_t: int = 6) -> np.ndarray:
    t = draw(st.integers(1, max_t))
    return draw(arrays(np.float64, (t, t), elements=st.floats(0.0, 1.0)))


@settings(max_examples=200, deadline=None)
@given(R=accuracy_matrices(), data=st.data())
def test_properties(R: np.ndarray, data: st.DataObject) -> None:
    T = R.shape[0]
    b = data.draw(arrays(np.float64, (T,), elements=st.floats(0.0, 1.0)))
    s = summarize(R, b)
    eps = 1e-12
    for k in ["acc", "avg_inc_acc", "learning_acc"]:
        assert -eps <= s[k] <= 1 + eps, k
    if T == 1:
        assert all(math.isnan(s[k]) for k in ["bwt", "forgetting", "fwt"])
        return
    for k in ["bwt", "forgetting", "fwt"]:
        assert -1 - eps <= s[k] <= 1 + eps, k
    # the max over l in [j, T-2] includes l = j, so best-earlier >= just-learned accuracy
    assert s["forgetting"] >= -s["bwt"] - eps
    # ... and equality when no experience improves after it is learned
    lower = np.tril(R)
    peaked = lower.copy()
    for j in range(T):
        peaked[j + 1 : T - 1, j] = np.minimum(lower[j + 1 : T - 1, j], R[j, j])
    assert forgetting(peaked) == pytest.approx(-backward_transfer(peaked), abs=1e-12)


@settings(max_examples=50, deadline=None)
@given(t=st.integers(1, 6), v=st.floats(0.0, 1.0))
def test_constant_matrix_has_no_transfer_or_forgetting(t: int, v: float) -> None:
    s = summarize(np.full((t, t), v), np.full(t, v))
    for k in ["acc", "avg_inc_acc", "learning_acc"]:
        assert s[k] == pytest.approx(v)
    if t > 1:
        for k in ["bwt", "forgetting", "fwt"]:
            assert s[k] == pytest.approx(0.0, abs=1e-12)
