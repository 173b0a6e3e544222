"""Query oracles for black-box attacks: what a remote attacker sees of the deployed system.

An oracle takes uint8 NHWC images and answers labels, plus scores only when its output policy
exposes them, counting every image it is asked about.  :class:`LocalOracle` runs the exact serving
path in-process (the chain's ``apply`` with a fresh draw per query, then the model);
:class:`fencebox.harness.http_oracle.HttpOracle` asks the running FenceBox service.

Policies (one definition shared with the service: :mod:`fencebox.policy`): ``label`` (label
only), ``topk`` (the k most likely labels in order, no scores), ``rounded`` (every probability
rounded to ``decimals``), ``scores`` (every probability at full precision).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from fencebox.errors import InputError
from fencebox.harness.defended import DefendedClassifier
from fencebox.policy import DEFAULT_DECIMALS, check_policy, expose, exposes_scores


@dataclass
class OracleAnswer:
    """What the deployed system returns for a batch: labels, probabilities or a top-k ranking where exposed."""

    labels: np.ndarray
    scores: np.ndarray | None
    topk: np.ndarray | None = None


class Oracle(Protocol):
    """Anything that answers queries the way the service does."""

    policy: str
    queries: int

    def query(self, images: np.ndarray) -> OracleAnswer:
        """Classify a uint8 NHWC batch; each image counts as one query."""
        ...


def apply_policy(
    out: np.ndarray, policy: str, k: int = 5, decimals: int = DEFAULT_DECIMALS, kind: str = "probabilities"
) -> OracleAnswer:
    """Reduce model outputs to what an output policy exposes (:func:`fencebox.policy.expose`, as the service does)."""
    shown = expose(out, policy, kind, k, decimals)
    # the float32 values the service sends (V2 FP32 tensors), widened exactly as the HTTP oracle widens them
    scores = None if shown.scores is None else shown.scores.astype(np.float64)
    return OracleAnswer(shown.labels, scores, shown.topk)


class LocalOracle:
    """The exact serving path in-process: fresh chain draw per query, the model, then the output policy."""

    def __init__(
        self,
        defended: DefendedClassifier,
        policy: str = "label",
        k: int = 5,
        decimals: int = DEFAULT_DECIMALS,
    ) -> None:
        check_policy(policy)
        self.defended = defended
        self.policy = policy
        self.k = k
        self.decimals = decimals
        self.queries = 0

    def query(self, images: np.ndarray) -> OracleAnswer:
        """Answer a uint8 NHWC batch as the service would under this oracle's policy."""
        self.queries += int(images.shape[0])
        logits = self.defended.judge_logits(images)
        return apply_policy(logits, self.policy, self.k, self.decimals, kind="logits")


exposes_margin = exposes_scores


def margins(answer: OracleAnswer, y: np.ndarray) -> np.ndarray:
    """Log-probability margin ``log p_y - max_{j != y} log p_j``; negative when misclassified.

    An image whose label is already wrong gets -1 whatever the scores say (rounded scores can tie);
    a correctly labelled one gets at least 0.
    """
    if answer.scores is None:
        raise InputError("this oracle's policy exposes no scores; use a decision-based attack")
    s = np.log(np.clip(answer.scores, 1e-12, None))
    rows = np.arange(len(y))
    true = s[rows, y].copy()
    s[rows, y] = -np.inf
    m = true - s.max(1)
    return np.where(answer.labels != y, -1.0, np.maximum(m, 0.0))
