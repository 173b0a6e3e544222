"""Output policy: how much of a model's answer a client may see. One definition for every consumer.

The service's REST and V2 routes and the harness's query oracles all reduce model outputs through
:func:`expose`, so a black-box attack in the harness sees exactly what a client of the service sees.

- ``label`` (default): the predicted label only: score-based black-box attacks get nothing to climb.
- ``topk``: the k most likely labels, in order, without scores.
- ``rounded``: every class probability rounded to ``decimals`` (2) decimals (coarse scores).
- ``scores``: every class probability at full precision (float32, as the service sends them).

Dependency-free apart from NumPy, so importing it never loads the web stack or torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fencebox.errors import ConfigError

POLICIES = ("label", "topk", "rounded", "scores")
"""Every output policy a route (or an oracle) may use."""

DEFAULT_DECIMALS = 2
"""Decimals kept by the ``rounded`` policy."""


@dataclass(frozen=True)
class Exposed:
    """What one policy lets a client see of a batch: labels always; top-k labels or scores where allowed."""

    labels: np.ndarray
    """(N,) int64 predicted labels."""
    scores: np.ndarray | None = None
    """(N, classes) float32 probabilities (rounded under ``rounded``), or None."""
    topk: np.ndarray | None = None
    """(N, k) int64 labels, most likely first, or None."""


def check_policy(policy: str) -> str:
    """Return ``policy`` if it is a known output policy, else raise :class:`ConfigError` naming the choices."""
    if policy not in POLICIES:
        raise ConfigError(f"unknown output policy {policy!r}; expected one of {', '.join(POLICIES)}")
    return policy


def probabilities(out: np.ndarray, kind: str = "logits") -> np.ndarray:
    """Class probabilities (float32) of model outputs: a stable softmax of logits, or the probabilities as given."""
    if kind == "probabilities":
        return np.asarray(out, dtype=np.float32)
    z = np.asarray(out, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def exposes_scores(policy: str) -> bool:
    """Whether a policy gives a score-based attacker the scores it needs (``scores`` or ``rounded``)."""
    return policy in ("scores", "rounded")


def expose(
    out: np.ndarray, policy: str, kind: str = "logits", k: int = 5, decimals: int = DEFAULT_DECIMALS
) -> Exposed:
    """Reduce model outputs (N, classes) to exactly what ``policy`` lets a client see."""
    check_policy(policy)
    labels = np.asarray(out).argmax(axis=1).astype(np.int64)
    if policy == "label":
        return Exposed(labels)
    probs = probabilities(out, kind)
    if policy == "topk":
        kk = min(int(k), probs.shape[1])
        top = np.argsort(-probs, axis=1, kind="stable")[:, :kk].astype(np.int64)
        return Exposed(labels, topk=top)
    if policy == "rounded":
        probs = np.round(probs, decimals).astype(np.float32)
    return Exposed(labels, scores=probs)
