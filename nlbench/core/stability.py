"""Stability-gap metrics from a continual-evaluation curve (pure Python; torch-free, the report reads it).

Source: M. De Lange, G. van de Ven, T. Tuytelaars, "Continual Evaluation for Lifelong Learning:
Identifying the Stability Gap", ICLR 2023. With per-iteration evaluation, accuracy on a past experience
drops sharply right after a new experience starts and partly recovers: the stability gap. End-of-
experience evaluation (the accuracy matrix) cannot see it.

Notation: a_j(n) is the accuracy on test experience j at training iteration n (on the fixed subsample of
`nlbench.core.continual_eval`); experience k is trained over iterations (b_k, e_k], b_k = e_{k-1}; K
experiences in all.

- min-ACC (De Lange et al. Eq. 5, taken at the end of the stream): the mean over past experiences
  j < K-1 of the minimum accuracy on j at any evaluation after j was learned,
      min-ACC = 1/(K-1) sum_{j<K-1} min_{n > e_j} a_j(n).
- WC-ACC, worst-case accuracy (Eq. 6, at the end of the stream): the current experience's final
  accuracy weighted 1/K, the past ones' worst case (K-1)/K:
      WC-ACC = a_{K-1}(e_{K-1}) / K + (1 - 1/K) min-ACC      (= final accuracy when K = 1).
- stability gap of j at boundary k > j: the accuracy on j at the start of k minus its minimum while k
  trains, gap_jk = a_j(b_k) - min_{b_k < n <= e_k} a_j(n) (>= 0; 0 when it never drops);
- time to the minimum: argmin_n a_j(n) - b_k, in iterations;
- time to recover: the iterations from b_k until a_j first comes back, after its minimum, to within
  10% of the gap of its start value: a_j(n) >= a_j(b_k) - 0.1 gap_jk; None when it does not recover
  before e_k (the drop then stayed: forgetting, not a gap). A gap of 0 recovers at once (time 0).

`summarize_curve` gives the per-(j, k) table and the means the report shows.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

RECOVERY_FRACTION = 0.1  # recovered: back within 10% of the gap of the boundary value


def _series(curve: Mapping[str, Any], j: int) -> list[tuple[int, int, float]]:
    """(iteration, experience being trained, accuracy on j) for every point that evaluated j."""
    out = []
    for n, k, row in zip(curve["iteration"], curve["experience"], curve["accuracy"]):
        if j < len(row) and row[j] is not None:
            out.append((int(n), int(k), float(row[j])))
    return out


def boundary_gaps(curve: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One record per past experience j and later experience k: start, minimum, end accuracy, gap, times."""
    boundaries: Sequence[int] = curve["boundaries"]
    ends: Sequence[int] = curve["ends"]
    records = []
    for k in range(1, len(ends)):
        for j in range(k):
            series = [(n, a) for n, kk, a in _series(curve, j) if kk == k]
            if not series:
                continue
            start = series[0][1]  # the point at b_k (evaluated before the first step of k)
            during = [(n, a) for n, a in series if n > boundaries[k]] or series
            n_min, a_min = min(during, key=lambda p: (p[1], p[0]))
            gap = max(0.0, start - a_min)
            recover = None
            if gap == 0.0:
                recover = 0
            else:
                for n, a in during:
                    if n >= n_min and a >= start - RECOVERY_FRACTION * gap:
                        recover = n - boundaries[k]
                        break
            records.append({"past": j, "experience": k, "start": start, "min": a_min, "end": during[-1][1],
                            "gap": gap, "iterations_to_min": n_min - boundaries[k], "iterations_to_recover": recover})
    return records


def min_acc(curve: Mapping[str, Any]) -> float | None:
    """min-ACC at the end of the stream (module docstring); None with fewer than two experiences."""
    ends = curve["ends"]
    if len(ends) < 2:
        return None
    minima = []
    for j in range(len(ends) - 1):
        after = [a for n, _, a in _series(curve, j) if n > ends[j]]
        if after:
            minima.append(min(after))
    return sum(minima) / len(minima) if minima else None


def wc_acc(curve: Mapping[str, Any]) -> float | None:
    """WC-ACC at the end of the stream (module docstring)."""
    ends = curve["ends"]
    if not ends:
        return None
    last = [a for n, _, a in _series(curve, len(ends) - 1) if n == ends[-1]]
    if not last:
        return None
    K = len(ends)
    low = min_acc(curve)
    return last[-1] if low is None else last[-1] / K + (1 - 1 / K) * low


def summarize_curve(curve: Mapping[str, Any]) -> dict[str, Any]:
    """min-ACC, WC-ACC, mean stability gap (all (j, k) pairs; `gap_previous`: j = k-1 only), mean time to
    the minimum, mean time to recover and the share that recovered (both over the pairs whose accuracy
    dropped at all), and the per-pair records."""
    gaps = boundary_gaps(curve)
    dips = [g for g in gaps if g["gap"] > 0]
    recovered = [g["iterations_to_recover"] for g in dips if g["iterations_to_recover"] is not None]
    mean = (lambda xs: sum(xs) / len(xs) if xs else None)
    return {
        "min_acc": min_acc(curve),
        "wc_acc": wc_acc(curve),
        "gap": mean([g["gap"] for g in gaps]),
        "gap_previous": mean([g["gap"] for g in gaps if g["past"] == g["experience"] - 1]),
        "iterations_to_min": mean([g["iterations_to_min"] for g in gaps]),
        "iterations_to_recover": mean(recovered),
        "recovered_share": len(recovered) / len(dips) if dips else None,
        "pairs": gaps,
    }


def relearning(curve: Mapping[str, Any], first: int = 0, again: int = 2, level: float = 0.9) -> dict[str, Any] | None:
    """Relearning speed on test experience `first` when experience `again` re-exposes its regime
    (bigram-shift `reexposure`: A -> B -> A). Target = `level` x the accuracy on `first` at the end of its
    own training; t_first = iterations into experience `first` until a_first reaches the target,
    t_again = the same into experience `again`. savings = t_first / t_again (> 1: relearning is faster
    than first learning; Ebbinghaus' savings). None when the curve does not cover both experiences."""
    ends, boundaries = curve["ends"], curve["boundaries"]
    if len(ends) <= max(first, again):
        return None
    series = _series(curve, first)
    final = [a for n, k, a in series if k == first and n == ends[first]]
    if not final:
        return None
    target = level * final[-1]

    def time_to(k: int) -> int | None:
        for n, kk, a in series:
            if kk == k and a >= target:
                return n - boundaries[k]
        return None

    t_first, t_again = time_to(first), time_to(again)
    # t_again floored at one iteration: an immediate recovery is "as fast as can be measured", not infinite.
    savings = t_first / max(t_again, 1) if t_first is not None and t_again is not None else None
    return {"target": target, "iterations_first": t_first, "iterations_again": t_again, "savings": savings}
