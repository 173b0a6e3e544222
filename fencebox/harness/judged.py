"""Verdicts for the rows outside the L∞ grid (patch threats, AdvGAN): the runner's selection + scoring draws.

A patch or AdvGAN row is judged exactly like every other threat (:mod:`fencebox.harness.verdict`): per
example, the clean image and every candidate adversarial are ranked on *selection* draws, and the worst
is scored on *fresh, independent scoring* draws (one draw for a deterministic chain).  Robust accuracy
is the mean fraction of scoring draws correct; ``strict`` is correct on every scoring draw; the success
rate is the mean fraction of scoring draws wrong over the examples the attack was run on.

The draws of a row are seeded by the evaluation seed and the row's *group* (chain and threat, not the
gradient estimator), so the rows of one group share their draws and combine (:meth:`Judge.combine`).
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from fencebox.errors import ConfigError
from fencebox.harness.stats import wilson
from fencebox.harness.verdict import Draws, select_worst
from fencebox.models.base import Classifier
from fencebox.transforms.base import Transform


@dataclass(frozen=True)
class VerdictConfig:
    """How rows are judged: the evaluation seed, selection and scoring draws (as ``EvalConfig``)."""

    seed: int = 0
    select_draws: int = 10
    score_draws: int = 20
    workers: int = 1

    def validate(self) -> None:
        """Raise ConfigError naming the first bad setting."""
        if self.select_draws < 1 or self.score_draws < 1:
            raise ConfigError(
                f"select and score draws must be >= 1, got {self.select_draws} and {self.score_draws}"
            )


def _seed(base: int, *parts: Any) -> int:
    return (base * 1_000_003 + zlib.crc32(repr(parts).encode())) % (2**31)


@dataclass
class Judged:
    """One row's verdict: the selected candidates and, per example, what the scoring draws said."""

    images: np.ndarray
    """(N, H, W, C) uint8: per example, the candidate worst for the defence on the selection draws."""
    key: np.ndarray
    """(N, 2) selection key of ``images`` (:meth:`Outcome.key`)."""
    chosen: np.ndarray
    """(N,) which candidate was selected (0: the clean image)."""
    clean: np.ndarray
    """(N,) fraction of the clean draws correct on the clean image."""
    attacked: np.ndarray
    """(N,) bool: the examples the attack ran on (some selection draw got the clean image right)."""
    score: np.ndarray
    """(N,) fraction of scoring draws correct on ``images``."""
    strict: np.ndarray
    """(N,) bool: correct on every scoring draw."""
    verdict: dict[str, Any]

    def per_example(self) -> dict[str, list[Any]]:
        """Per example: clean fraction, whether attacked, scoring fraction and whether broken on every draw."""
        return {
            "clean": self.clean.tolist(),
            "attacked": self.attacked.tolist(),
            "score": self.score.tolist(),
            "broken": (self.attacked & (self.score == 0.0)).tolist(),
        }

    def summary(self) -> dict[str, Any]:
        """The row's numbers: clean, robust and strict accuracy with Wilson CIs, and the success rate."""
        n, a = len(self.score), int(self.attacked.sum())
        wrong = float((1.0 - self.score[self.attacked]).sum())
        return {
            "n": n,
            "clean_accuracy": float(self.clean.mean()) if n else 0.0,
            "attacked": a,
            "broken": int((self.attacked & (self.score == 0.0)).sum()),
            "success_rate": wrong / a if a else 0.0,
            "ci95": wilson(round(wrong), a),
            "robust_accuracy": float(self.score.mean()) if n else 0.0,
            "strict_accuracy": float(self.strict.mean()) if n else 0.0,
            "robust_ci95": wilson(round(float(self.score.sum())), n),
        }


@dataclass(kw_only=True)
class JudgedRow:
    """The fields every judged row shares (:meth:`Judged.summary`'s numbers, the verdict, per-example data).

    ``success_rate`` is the mean fraction of scoring draws wrong over the attacked examples (``ci95``
    its Wilson interval); ``robust_accuracy`` the mean fraction correct over every example
    (``strict_accuracy``: correct on every draw; ``robust_ci95``).  ``adversarials`` are the selected
    candidates (uint8, in example order) and ``labels`` theirs: not part of the JSON form.
    """

    n: int
    clean_accuracy: float
    attacked: int
    broken: int
    success_rate: float
    ci95: tuple[float, float]
    robust_accuracy: float
    strict_accuracy: float
    robust_ci95: tuple[float, float]
    verdict: dict[str, Any] = field(default_factory=dict)
    per_example: dict[str, list[Any]] = field(default_factory=dict)
    adversarials: np.ndarray | None = field(default=None, repr=False, compare=False)
    labels: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (without the adversarial images)."""
        d = {k: v for k, v in asdict(self).items() if k not in ("adversarials", "labels")}
        d["ci95"], d["robust_ci95"] = list(self.ci95), list(self.robust_ci95)
        return d


class Judge:
    """The deployed system's verdicts for one row group: clean, selection and scoring draws of ``chain``."""

    def __init__(self, model: Classifier, chain: Transform, cfg: VerdictConfig, group: str) -> None:
        cfg.validate()
        self.chain, self.cfg = chain, cfg
        tag = (str(chain), group)
        self.clean_draws = Draws(model, chain, _seed(cfg.seed, "clean", *tag), cfg.score_draws, cfg.workers)
        self.select = Draws(model, chain, _seed(cfg.seed, "select", *tag), cfg.select_draws, cfg.workers)
        self.score = Draws(model, chain, _seed(cfg.seed, "score", *tag), cfg.score_draws, cfg.workers)

    def attackable(self, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """(N,) bool: the examples worth attacking, those some selection draw classifies correctly."""
        return np.asarray(self.select.outcome(images, labels).fraction > 0)

    def __call__(self, images: np.ndarray, labels: np.ndarray, candidates: list[np.ndarray]) -> Judged:
        """Judge the clean ``images`` and ``candidates`` (same examples): select the worst, score it."""
        best, key, chosen = select_worst(self.select, labels, [images, *candidates])
        clean_sel = self.select.outcome(images, labels).fraction
        out = self.score.outcome(best, labels)
        return Judged(
            images=best,
            key=key,
            chosen=chosen,
            clean=self.clean_draws.outcome(images, labels).fraction,
            attacked=np.asarray(clean_sel > 0),
            score=out.fraction,
            strict=np.asarray(out.correct.all(axis=1)),
            verdict={
                "select": self.select.describe(),
                "score": self.score.describe(),
                "randomized": bool(self.chain.randomized),
            },
        )
