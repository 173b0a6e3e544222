"""Small statistics for reporting robust accuracy honestly: Wilson intervals and a noise tolerance."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def wilson(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score 95 % interval for a binomial proportion (well-behaved at 0 % and 100 %)."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def noise_tolerance(p: float, n: int) -> float:
    """How far apart two accuracies on ``n`` examples may be by chance alone (about two standard errors).

    Used by the checks so that a random chain's draw-to-draw noise is not flagged as a failure,
    while a real inversion (e.g. adaptive clearly weaker than oblivious) is.
    """
    if n <= 0:
        return 1.0
    var = max(p * (1.0 - p), 1.0 / n)
    return 1.0 / n + 2.0 * math.sqrt(var / n)


def excess_p_value(strong: Sequence[float], weak: Sequence[float]) -> float:
    """One-sided p-value that ``strong`` scores higher than ``weak`` on the same examples (paired).

    ``strong``/``weak`` are per-example robust scores (fractions of draws correct).  A normal
    approximation to the paired mean difference; with no spread, 0 when the mean difference is
    positive, else 1.  A check fails when this is below 0.05.
    """
    d = np.asarray(strong, dtype=np.float64) - np.asarray(weak, dtype=np.float64)
    if d.size == 0:
        return 1.0
    mean = float(d.mean())
    sd = float(d.std(ddof=1)) if d.size > 1 else 0.0
    if sd == 0.0:
        return 0.0 if mean > 0 else 1.0
    z = mean / (sd / math.sqrt(d.size))
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def above_p_value(p_hat: float, p0: float, n: int) -> float:
    """One-sided p-value that an accuracy measured as ``p_hat`` on ``n`` examples is above ``p0`` (normal approx.)."""
    if n <= 0:
        return 1.0
    se = math.sqrt(max(p0 * (1.0 - p0), 1e-12) / n)
    return 0.5 * math.erfc(((p_hat - p0) / se) / math.sqrt(2.0))
