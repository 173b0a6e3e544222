"""Small statistics for reporting robust accuracy honestly: Wilson intervals and a noise tolerance."""

from __future__ import annotations

import math


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
