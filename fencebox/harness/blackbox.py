"""Black-box attacks through a query oracle: Square (score-based) and HopSkipJump (decision-based).

Both work on uint8 NHWC images, the way a remote client must, and count queries per image.

- :func:`square_linf`: Square Attack (Andriushchenko et al. 2020), L∞: vertical-stripe
  initialisation, random square updates of ±ε whose side follows the paper's p-schedule (p halves at
  iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 of 10 000, rescaled to the budget), a
  change accepted only when the margin loss falls.  p_init = 0.8 as in AutoAttack.
- :func:`hop_skip_jump`: HopSkipJumpAttack (Chen, Jordan & Wainwright 2020), L2 or L∞: random-noise
  start, binary search to the boundary, Monte-Carlo gradient-direction estimate with baseline
  subtraction (100·sqrt(t) probes), geometric step-size search, binary search again; stops as soon
  as the (quantised) distance is within ε or the budget is spent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fencebox.attacks.geometry import check_norm, eps_levels
from fencebox.errors import InputError
from fencebox.harness.oracle import Oracle, margins


@dataclass
class BlackboxOutput:
    """Adversarial candidates (uint8 NHWC), queries spent per image, and whether the attack saw success."""

    x_adv: np.ndarray
    queries: np.ndarray
    success: np.ndarray


def _to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def square_p(p_init: float, it: int, budget: int) -> float:
    """Square Attack's fraction of pixels changed at iteration ``it`` of ``budget`` (paper's schedule)."""
    i = int(it / max(budget, 1) * 10000)
    halvings = sum(i > t for t in (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000))
    return p_init / (2**halvings)


def square_linf(
    oracle: Oracle,
    images: np.ndarray,
    y: np.ndarray,
    eps: float,
    budget: int = 1000,
    p_init: float = 0.8,
    seed: int = 0,
) -> BlackboxOutput:
    """Score-based L∞ Square Attack on a uint8 NHWC batch with at most ``budget`` queries per image."""
    if budget < 1:
        raise InputError(f"the query budget must be >= 1, got {budget}")
    rng = np.random.default_rng(seed)
    n, h, w, c = images.shape
    x = images.astype(np.float64) / 255.0
    e = eps_levels(eps) / 255.0
    x_best = np.clip(x + e * rng.choice([-1.0, 1.0], size=(n, 1, w, c)), 0.0, 1.0)
    margin = margins(oracle.query(_to_u8(x_best)), y)
    queries = np.ones(n, dtype=np.int64)
    for it in range(1, budget):
        active = np.flatnonzero(margin > 0)
        if active.size == 0:
            break
        p = square_p(p_init, it, budget)
        s = min(max(round(math.sqrt(p * h * w)), 1), max(h - 1, 1))
        r0, c0 = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
        xa, best = x[active], x_best[active]
        delta = best - xa
        win = (slice(None), slice(r0, r0 + s), slice(c0, c0 + s), slice(None))
        for _ in range(10):  # resample windows that would not change the image (paper's guard)
            same = np.all(np.abs(np.clip(xa[win] + delta[win], 0, 1) - best[win]) < 1e-7, axis=(1, 2, 3))
            if not same.any():
                break
            new = e * rng.choice([-1.0, 1.0], size=(int(same.sum()), 1, 1, c))
            sub = delta[same]
            sub[win] = new
            delta[same] = sub
        cand = np.clip(xa + delta, 0.0, 1.0)
        m_new = margins(oracle.query(_to_u8(cand)), y[active])
        queries[active] += 1
        better = m_new < margin[active]
        x_best[active[better]] = cand[better]
        margin[active[better]] = m_new[better]
    return BlackboxOutput(_to_u8(x_best), queries, margin <= 0)


def _dist(a: np.ndarray, b: np.ndarray, norm: str) -> np.ndarray:
    """Per-image distance of float NHWC batches ``a`` and ``b``."""
    d = (a - b).reshape(a.shape[0], -1)
    return np.abs(d).max(1) if norm == "linf" else np.sqrt((d**2).sum(1))


def _project(x0: np.ndarray, xs: np.ndarray, alphas: np.ndarray, norm: str) -> np.ndarray:
    """HSJA's path from ``x0`` to ``xs``: blend (L2) or clip to an L∞ box of radius alpha, per image."""
    a = alphas.reshape(-1, *([1] * (x0.ndim - 1)))
    if norm == "l2":
        return (1.0 - a) * x0 + a * xs
    return np.clip(xs, x0 - a, x0 + a)


class _Batch:
    """Label-only access for a batch of images in lockstep, with a per-image query budget."""

    def __init__(self, oracle: Oracle, y: np.ndarray, budget: int, chunk: int = 256) -> None:
        self.oracle, self.y, self.budget, self.chunk = oracle, y, budget, chunk
        self.used = np.zeros(len(y), dtype=np.int64)

    def affordable(self, idx: np.ndarray, cost: int) -> np.ndarray:
        """The subset of ``idx`` that still has ``cost`` queries left."""
        return idx[self.used[idx] + cost <= self.budget]

    def adversarial(self, idx: np.ndarray, xs: np.ndarray, per_image: int = 1) -> np.ndarray:
        """Misclassified? for ``per_image`` candidates of each image in ``idx`` (xs grouped by image)."""
        self.used[idx] += per_image
        labels = np.repeat(self.y[idx], per_image)
        out = [
            self.oracle.query(_to_u8(xs[i : i + self.chunk])).labels != labels[i : i + self.chunk]
            for i in range(0, xs.shape[0], self.chunk)
        ]
        return np.concatenate(out) if out else np.zeros(0, dtype=bool)


def _binary_search(
    ask: _Batch, idx: np.ndarray, x0: np.ndarray, x_adv: np.ndarray, norm: str, theta: float
) -> tuple[np.ndarray, np.ndarray]:
    """HSJA Alg. 2 for the images ``idx``: move each x_adv toward x0 to just outside the boundary.

    Returns the new points and the mask of images that finished (the others ran out of budget and
    keep their input, which is adversarial).
    """
    if norm == "linf":
        high = _dist(x_adv, x0, norm)
        threshold = np.minimum(high * theta, theta)
    else:
        high, threshold = np.ones(len(idx)), np.full(len(idx), theta)
    low = np.zeros(len(idx))
    alive = np.ones(len(idx), dtype=bool)
    while True:
        todo = np.flatnonzero(alive & ((high - low) / threshold > 1))
        if todo.size == 0:
            break
        ok = np.isin(idx[todo], ask.affordable(idx[todo], 1))
        alive[todo[~ok]] = False
        todo = todo[ok]
        if todo.size == 0:
            break
        mid = (high[todo] + low[todo]) / 2.0
        adv = ask.adversarial(idx[todo], _project(x0[todo], x_adv[todo], mid, norm))
        high[todo] = np.where(adv, mid, high[todo])
        low[todo] = np.where(adv, low[todo], mid)
    out = _project(x0, x_adv, high, norm)
    return out, alive


def hop_skip_jump(
    oracle: Oracle,
    images: np.ndarray,
    y: np.ndarray,
    eps: float,
    norm: str = "linf",
    budget: int = 1000,
    init_evals: int = 100,
    max_evals: int = 10_000,
    seed: int = 0,
) -> BlackboxOutput:
    """Decision-based HopSkipJump on a uint8 NHWC batch (images in lockstep, batched queries).

    Each image stops as soon as its quantised distance is within ε (success) or its budget is spent.
    """
    check_norm(norm)
    if budget < 1:
        raise InputError(f"the query budget must be >= 1, got {budget}")
    rng = np.random.default_rng(seed)
    n = len(images)
    x0 = images.astype(np.float64) / 255.0
    d = x0[0].size
    theta = 1.0 / (d**1.5) if norm == "l2" else 1.0 / (d**2)
    limit = eps_levels(eps) / 255.0 if norm == "linf" else eps
    ask = _Batch(oracle, y, budget)
    best = x0.copy()
    have = np.zeros(n, dtype=bool)  # best is adversarial
    every = np.arange(n)

    def within(idx: np.ndarray) -> np.ndarray:
        """Is the best point of each image in ``idx`` inside the ε-ball once quantised?"""
        return _dist(np.rint(best[idx] * 255.0) / 255.0, x0[idx], norm) <= limit + 1e-9

    have[:] = ask.adversarial(every, x0)
    # start: uniform noise until misclassified (up to 100 tries), then blend toward x0
    start = np.zeros_like(x0)
    found = have.copy()
    for _ in range(100):
        idx = ask.affordable(np.flatnonzero(~found), 1)
        if idx.size == 0:
            break
        noise = rng.uniform(0.0, 1.0, (idx.size, *x0.shape[1:]))
        adv = ask.adversarial(idx, noise)
        start[idx[adv]] = noise[adv]
        found[idx[adv]] = True
    idx = np.flatnonzero(found & ~have)
    lo, hi = np.zeros(idx.size), np.ones(idx.size)
    while True:
        todo = np.flatnonzero(hi - lo > 0.001)
        todo = todo[np.isin(idx[todo], ask.affordable(idx[todo], 1))]
        if todo.size == 0:
            break
        mid = (lo[todo] + hi[todo]) / 2.0
        blend = _project(x0[idx[todo]], start[idx[todo]], mid, "l2")
        adv = ask.adversarial(idx[todo], blend)
        hi[todo] = np.where(adv, mid, hi[todo])
        lo[todo] = np.where(adv, lo[todo], mid)
    if idx.size:
        best[idx] = _project(x0[idx], start[idx], hi, "l2")
        have[idx] = True
        best[idx], _ = _binary_search(ask, idx, x0[idx], best[idx], norm, theta)
    active = np.flatnonzero(have & ~within(every))
    t = 0
    while active.size:
        t += 1
        dist = _dist(best[active], x0[active], norm)
        evals = min(int(init_evals * math.sqrt(t)), max_evals)
        active = ask.affordable(active, evals + 1)
        if active.size == 0:
            break
        dist = _dist(best[active], x0[active], norm)
        delta = (
            np.full(active.size, 0.1)
            if t == 1
            else (math.sqrt(d) * theta * dist if norm == "l2" else d * theta * dist)
        )
        # gradient-direction estimate at each boundary point (HSJA Eq. 16, baseline-subtracted)
        shape = (active.size, evals, *x0.shape[1:])
        rv = rng.standard_normal(shape) if norm == "l2" else rng.uniform(-1.0, 1.0, shape)
        rv /= np.sqrt((rv.reshape(active.size, evals, -1) ** 2).sum(2)).reshape(
            active.size, evals, *([1] * (x0.ndim - 1))
        )
        dl = delta.reshape(-1, 1, *([1] * (x0.ndim - 1)))
        probes = np.clip(best[active][:, None] + dl * rv, 0.0, 1.0)
        rv = (probes - best[active][:, None]) / dl
        f = (
            2.0
            * ask.adversarial(active, probes.reshape(-1, *x0.shape[1:]), evals).reshape(active.size, evals)
            - 1.0
        )
        mean = f.mean(1, keepdims=True)
        weights = np.where(np.abs(mean) == 1.0, mean, f - mean).reshape(
            active.size, evals, *([1] * (x0.ndim - 1))
        )
        g = (weights * rv).mean(1)
        g /= np.maximum(np.sqrt((g.reshape(active.size, -1) ** 2).sum(1)), 1e-12).reshape(
            -1, *([1] * (x0.ndim - 1))
        )
        update = np.sign(g) if norm == "linf" else g
        # geometric step-size search: halve until the step stays adversarial
        step = dist / math.sqrt(t)
        pending = np.ones(active.size, dtype=bool)
        stepped = np.zeros(active.size, dtype=bool)
        while pending.any():
            todo = np.flatnonzero(pending)
            todo = todo[np.isin(active[todo], ask.affordable(active[todo], 1))]
            pending[np.setdiff1d(np.flatnonzero(pending), todo)] = False
            if todo.size == 0:
                break
            cand = np.clip(
                best[active[todo]] + step[todo].reshape(-1, *([1] * (x0.ndim - 1))) * update[todo], 0, 1
            )
            adv = ask.adversarial(active[todo], cand)
            pending[todo[adv]] = False
            stepped[todo[adv]] = True
            step[todo[~adv]] /= 2.0
            pending[todo[step[todo] < 1e-8]] = False
        # only images whose step stayed adversarial move; the others keep their boundary point
        go = active[stepped]
        if go.size:
            moved = np.clip(
                best[go] + step[stepped].reshape(-1, *([1] * (x0.ndim - 1))) * update[stepped], 0.0, 1.0
            )
            best[go], _ = _binary_search(ask, go, x0[go], moved, norm, theta)
        active = active[~within(active)]
    success = have & within(every)
    return BlackboxOutput(_to_u8(best), ask.used.copy(), success)
