"""Continual-learning metrics from the accuracy matrix.

Convention (0-based, T experiences):

    R[i, j]  accuracy on test experience j after training on experiences 0..i, in [0, 1]
    b[j]     accuracy on test experience j before any training (the pre-training row)

so row ``T-1`` is the final model, the diagonal ``R[i, i]`` is accuracy just after learning an
experience, the lower triangle (j < i) is old experiences and the upper triangle (j > i)
experiences not seen yet. Only ``forward_transfer`` reads the upper triangle (and ``b``); the
upper triangle may hold NaN where a pipeline does not evaluate unseen experiences.

Metrics that average over "the first T-1 experiences" (BWT, forgetting, FWT) are NaN for T=1.
Pure numpy; no torch or pandas.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "DEFINITIONS",
    "final_average_accuracy",
    "average_incremental_accuracy",
    "backward_transfer",
    "forgetting",
    "learning_accuracy",
    "forward_transfer",
    "summarize",
]

ArrayLike = np.ndarray | Sequence[Sequence[float]]

DEFINITIONS: dict[str, str] = {
    "acc": "ACC (GEM): mean accuracy over all T experiences after training on the last one",
    "avg_inc_acc": "Avg. incremental accuracy (iCaRL): mean over steps i of mean accuracy on experiences 0..i",
    "bwt": "BWT (GEM, mean over first T-1 experiences): final minus just-learned accuracy; <0 is forgetting",
    "forgetting": "Forgetting (Chaudhry et al. 2018, mean over first T-1 experiences): best earlier minus final accuracy",
    "learning_acc": "Learning accuracy (Riemer et al. 2019): mean accuracy on each experience just after learning it",
    "fwt": "FWT (GEM, mean over experiences 1..T-1): accuracy before learning it minus pre-training accuracy",
}


def _matrix(R: ArrayLike) -> np.ndarray:
    """R as a float (T, T) array; ValueError if empty, not 2-D, not square or out of [0, 1]."""
    a = np.asarray(R, dtype=float)
    if a.ndim != 2:
        raise ValueError(f"accuracy matrix must be 2-D (T x T), got shape {a.shape}")
    if a.size == 0:
        raise ValueError("accuracy matrix is empty")
    if a.shape[0] != a.shape[1]:
        raise ValueError(f"accuracy matrix must be square (T x T), got shape {a.shape}")
    if np.any(a[~np.isnan(a)] < 0) or np.any(a[~np.isnan(a)] > 1):
        raise ValueError("accuracies must lie in [0, 1] (a fraction, not a percentage)")
    return a


def _baseline(b: ArrayLike, T: int) -> np.ndarray:
    v = np.asarray(b, dtype=float)
    if v.shape != (T,):
        raise ValueError(f"pre-training accuracies b must have length T={T}, got shape {v.shape}")
    if np.any(v[~np.isnan(v)] < 0) or np.any(v[~np.isnan(v)] > 1):
        raise ValueError("pre-training accuracies must lie in [0, 1] (a fraction, not a percentage)")
    return v


def final_average_accuracy(R: ArrayLike) -> float:
    """ACC = (1/T) sum_j R[T-1, j]: mean accuracy of the final model over all experiences.

    Lopez-Paz & Ranzato, "Gradient Episodic Memory for Continual Learning", NeurIPS 2017.
    """
    a = _matrix(R)
    return float(a[-1].mean())


def average_incremental_accuracy(R: ArrayLike) -> float:
    """(1/T) sum_i A_i with A_i = (1/(i+1)) sum_{j<=i} R[i, j]: the mean, over training steps,
    of the mean accuracy on the experiences seen so far.

    Rebuffi et al., "iCaRL: Incremental Classifier and Representation Learning", CVPR 2017.
    iCaRL's A_i is accuracy over all seen classes; this unweighted mean over experiences equals
    it when the test experiences have equal size.
    """
    a = _matrix(R)
    return float(np.mean([a[i, : i + 1].mean() for i in range(a.shape[0])]))


def backward_transfer(R: ArrayLike) -> float:
    """BWT = 1/(T-1) sum_{j<T-1} (R[T-1, j] - R[j, j]); NaN when T=1.

    Lopez-Paz & Ranzato, "Gradient Episodic Memory for Continual Learning", NeurIPS 2017.
    Negative BWT means learning later experiences lowered accuracy on earlier ones.
    """
    a = _matrix(R)
    T = a.shape[0]
    if T == 1:
        return math.nan
    j = np.arange(T - 1)
    return float(np.mean(a[-1, j] - a[j, j]))


def forgetting(R: ArrayLike) -> float:
    """F = 1/(T-1) sum_{j<T-1} ( max_{l in [j, T-2]} R[l, j] - R[T-1, j] ); NaN when T=1.

    Average forgetting of Chaudhry et al., "Riemannian Walk for Incremental Learning:
    Understanding Forgetting and Intransigence" (RWalk), ECCV 2018, evaluated after
    the last experience: the best accuracy an experience ever had (from the step it was learned,
    l >= j, to the step before last) minus its final accuracy. Because the max includes l = j,
    F >= -BWT always; they are equal when each experience peaks right after it is learned.
    """
    a = _matrix(R)
    T = a.shape[0]
    if T == 1:
        return math.nan
    drops = [a[j : T - 1, j].max() - a[-1, j] for j in range(T - 1)]
    return float(np.mean(drops))


def learning_accuracy(R: ArrayLike) -> float:
    """LA = (1/T) sum_i R[i, i]: mean accuracy on each experience just after learning it.

    Riemer et al., "Learning to Learn without Forgetting by Maximizing Transfer and Minimizing
    Interference" (MER), ICLR 2019, "learning accuracy". A measure of plasticity.
    """
    a = _matrix(R)
    return float(np.diag(a).mean())


def forward_transfer(R: ArrayLike, b: ArrayLike) -> float:
    """FWT = 1/(T-1) sum_{j>=1} (R[j-1, j] - b[j]); NaN when T=1.

    Lopez-Paz & Ranzato, "Gradient Episodic Memory for Continual Learning", NeurIPS 2017:
    accuracy on experience j just before training on it, minus the accuracy of the untrained
    (randomly initialised) model ``b[j]``. Reads the upper triangle R[j-1, j].
    """
    a = _matrix(R)
    T = a.shape[0]
    v = _baseline(b, T)
    if T == 1:
        return math.nan
    j = np.arange(1, T)
    return float(np.mean(a[j - 1, j] - v[j]))


def summarize(R: ArrayLike, b: ArrayLike | None = None) -> dict[str, float]:
    """All metrics of this module by ``DEFINITIONS`` key; "fwt" is NaN when ``b`` is None."""
    a = _matrix(R)
    return {
        "acc": final_average_accuracy(a),
        "avg_inc_acc": average_incremental_accuracy(a),
        "bwt": backward_transfer(a),
        "forgetting": forgetting(a),
        "learning_acc": learning_accuracy(a),
        "fwt": math.nan if b is None else forward_transfer(a, b),
    }
