"""What a paired design can detect: the minimum detectable effect (MDE) and an equivalence test (TOST).

"No detectable difference" is only informative next to the smallest difference the design could have
detected. For a row with n paired seeds whose differences have sample standard deviation sd, the MDE at
80% power is the difference mde = d* x sd for which a two-sided paired t-test at level alpha rejects
with probability 0.8; d* is the standardised effect solving power(d*, n, alpha) = 0.8 under the
noncentral t distribution (statsmodels `TTestPower`, df = n - 1).

Why not `TTestPower().solve_power(nobs, alpha, power)`: at small n and small alpha its root finder can
return a value whose power is not 0.8 (n = 5, alpha = 0.05/111 gives d = 2.99, whose power is 0.20),
and its two-sided power is NaN there, because scipy's noncentral t cdf underflows to NaN in the far
lower tail. So the root is found here with scipy's brentq on statsmodels' power, the two-sided power is
the upper tail at alpha/2 plus the lower tail where that is a number (the lower tail of a positive
effect is below alpha/2, so leaving out a NaN one errs by less than alpha/2, towards a larger MDE), and
the root's power is checked.

alpha is the family's per-test level under Bonferroni (alpha / m for m tests in the Holm family of the
row): the most stringent step of Holm's procedure, so the MDE is what the row could detect even if it
were tested first. TOST (statsmodels `ttost_paired`): two one-sided paired t-tests against the margin
+-`MARGIN` points; a p below alpha says the difference lies within the margin.
"""

from __future__ import annotations

import math

POWER = 0.8
MARGIN = 1.0  # equivalence margin of the accuracy metrics, in percentage points


def _power(effect: float, n: int, alpha: float) -> float:
    import numpy as np
    from statsmodels.stats.power import TTestPower

    analysis = TTestPower()
    upper = float(analysis.power(effect_size=effect, nobs=n, alpha=alpha / 2, alternative="larger"))
    lower = float(analysis.power(effect_size=effect, nobs=n, alpha=alpha / 2, alternative="smaller"))
    return upper + float(np.nan_to_num(lower, nan=0.0))


def detectable_effect(n: int, alpha: float, power: float = POWER) -> float:
    """The standardised effect d* (mean / sd of the paired differences) detected with `power` at `alpha`."""
    from scipy.optimize import brentq

    if n < 2 or not 0 < alpha < 1:
        return math.nan
    high = 1.0
    while _power(high, n, alpha) < power:  # bracket the root; power grows with the effect
        high *= 2
        if high > 1e6:
            return math.nan
    root = float(brentq(lambda d: _power(d, n, alpha) - power, 1e-9, high, xtol=1e-10))
    if abs(_power(root, n, alpha) - power) > 1e-4:
        raise ArithmeticError(f"power at d={root} is {_power(root, n, alpha)}, not {power}")
    return root


def mde(sd: float, n: int, alpha: float, power: float = POWER) -> float:
    """The smallest paired mean difference (in the unit of sd) detectable with `power` at `alpha`."""
    if n < 2 or not math.isfinite(sd):
        return math.nan
    return detectable_effect(n, alpha, power) * sd


def tost_p(differences: list[float] | tuple[float, ...], margin: float = MARGIN) -> float:
    """p of the paired TOST that the mean difference lies within +-margin (NaN when it cannot be tested)."""
    import numpy as np
    from statsmodels.stats.weightstats import ttost_paired

    d = np.asarray(differences, dtype=float)
    if len(d) < 2 or float(d.std(ddof=1)) <= 1e-12 * max(1.0, abs(float(d.mean()))):
        # a constant difference has no t statistic: within the margin for sure, or outside for sure
        return math.nan if len(d) < 2 else float(abs(float(d.mean())) >= margin)
    p, _, _ = ttost_paired(d, np.zeros_like(d), -margin, margin)
    return float(p)
