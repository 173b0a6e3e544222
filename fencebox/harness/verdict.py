"""Verdicts on seeded draws of the deployed system: how often a chain, with fresh randomness, gets an image right.

A randomised chain answers differently on every request, so one draw says little and an AND over
attacks counts the draws, not the attacks.  The harness therefore judges on fixed, seeded sets of
draws (:class:`Draws`): draw ``r`` of a seed samples the chain's params for the whole batch from
``numpy.random.default_rng([seed, r])``, so image ``i`` of a batch gets the same params every time
the same batch shape is judged (per-image invariance makes its output depend on nothing else).

- *selection* draws rank the candidate adversarials of every attack and threat per example;
- *scoring* draws, from an independent seed, score the one selected worst candidate.

Selection and scoring never share draws, so running more (or weaker) attacks cannot bias the score.
A deterministic chain needs one draw: every draw would give the same answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fencebox.models.base import Classifier
from fencebox.transforms.base import Transform, apply_parallel, slice_params


@dataclass(frozen=True)
class Outcome:
    """Per example and draw: correct or not, and the logit margin ``z_y - max_{j != y} z_j``."""

    correct: np.ndarray
    """(N, R) bool."""
    margin: np.ndarray
    """(N, R) float64."""

    @property
    def fraction(self) -> np.ndarray:
        """(N,) fraction of draws correct."""
        return self.correct.mean(axis=1)

    def key(self) -> np.ndarray:
        """(N, 2) ranking key, lower = worse for the defence: fraction correct, then mean margin."""
        return np.stack([self.fraction, self.margin.mean(axis=1)], axis=1)


def worse(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per example, whether key ``a`` (from :meth:`Outcome.key`) is strictly worse for the defence than ``b``."""
    return (a[:, 0] < b[:, 0]) | ((a[:, 0] == b[:, 0]) & (a[:, 1] < b[:, 1]))


class Draws:
    """``draws`` seeded draws of ``chain`` in front of ``model``; deterministic chains use one."""

    def __init__(
        self, model: Classifier, chain: Transform, seed: int, draws: int, workers: int = 1, chunk: int = 512
    ) -> None:
        self.model, self.chain, self.seed = model, chain, int(seed)
        self.draws = int(draws) if chain.randomized else 1
        self.workers, self.chunk = workers, chunk

    def params(self, r: int, shape: tuple[int, int, int, int]) -> object:
        """The chain params of draw ``r`` for a batch of ``shape``."""
        return self.chain.sample(np.random.default_rng([self.seed, r]), shape)

    def outcome(self, images: np.ndarray, labels: np.ndarray) -> Outcome:
        """Judge a uint8 NHWC batch on every draw."""
        n = images.shape[0]
        correct = np.zeros((n, self.draws), dtype=bool)
        margin = np.zeros((n, self.draws), dtype=np.float64)
        rows = np.arange(n)
        for r in range(self.draws):
            params = self.params(r, images.shape)
            for s in range(0, n, self.chunk):
                sl = slice(s, min(n, s + self.chunk))
                out = apply_parallel(self.chain, images[sl], slice_params(params, sl), self.workers)
                z = self.model.predict_logits(out).astype(np.float64)
                y, at = labels[sl], rows[: z.shape[0]]
                correct[sl, r] = z.argmax(1) == y  # exactly the served label (argmax, first on ties)
                true = z[at, y].copy()
                z[at, y] = -np.inf
                margin[sl, r] = true - z.max(1)
        return Outcome(correct, margin)

    def describe(self) -> dict[str, int]:
        """The seed and number of draws, as recorded in reports (what replay needs)."""
        return {"seed": self.seed, "draws": self.draws}


def select_worst(
    select: Draws, labels: np.ndarray, candidates: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per example, the candidate worst for the defence on the selection draws: (images, key, index).

    ``candidates`` are uint8 NHWC batches of the same examples (put the clean images first, so an
    attack can never make an example look better than no attack).  Ties keep the earlier candidate.
    """
    if not candidates:
        raise ValueError("select_worst needs at least one candidate batch")
    best = candidates[0].copy()
    key = select.outcome(best, labels).key()
    chosen = np.zeros(len(best), dtype=np.int64)
    for i, cand in enumerate(candidates[1:], start=1):
        k = select.outcome(cand, labels).key()
        take = worse(k, key)
        best[take], key[take], chosen[take] = cand[take], k[take], i
    return best, key, chosen


def save_candidates(
    folder: Path, name: str, images: np.ndarray, labels: npt.ArrayLike, index: npt.ArrayLike
) -> dict[str, Any]:
    """Write a row's selected adversarials (uint8 NHWC, labels, data-set indices) as ``folder/name``.

    The one format ``fencebox replay`` reads back, for every kind of row; returns the record a row
    keeps under ``verdict.adversarials`` (the path relative to the report folder).
    """
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        folder / name,
        images=images,
        labels=np.asarray(labels, dtype=np.int64),
        index=np.asarray(index, dtype=np.int64),
    )
    return {"file": f"{folder.name}/{name}"}
