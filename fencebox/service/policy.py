"""Output policy: how much of the model's answer a client sees.

- ``label`` (default): the predicted label only: score-based black-box attacks get nothing to climb.
- ``topk``: the k most likely labels, in order, without scores.
- ``rounded``: every class probability rounded to 2 decimals (coarse scores).
- ``scores``: every class probability at full precision.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fencebox.service.v2codec import Tensor


def probabilities(out: np.ndarray, kind: str) -> np.ndarray:
    """Softmax of logits (stable), or the probabilities as given."""
    if kind == "probabilities":
        return out.astype(np.float32)
    z = out.astype(np.float64) - out.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def _shown(probs: np.ndarray, policy: str) -> np.ndarray:
    return np.round(probs, 2).astype(np.float32) if policy == "rounded" else probs


def rest_answers(
    out: np.ndarray, kind: str, class_names: list[str], policy: str, k: int
) -> list[dict[str, Any]]:
    """One JSON object per image, with only the fields the policy allows."""
    labels = out.argmax(axis=1)
    answers: list[dict[str, Any]] = []
    probs = probabilities(out, kind) if policy != "label" else None
    for i, lab in enumerate(labels.tolist()):
        a: dict[str, Any] = {"label": int(lab), "class_name": class_names[lab]}
        if policy == "topk" and probs is not None:
            order = np.argsort(-probs[i], kind="stable")[: min(k, probs.shape[1])]
            a["topk"] = [{"label": int(j), "class_name": class_names[j]} for j in order.tolist()]
        elif policy in ("rounded", "scores") and probs is not None:
            values = probs[i].astype(np.float64).tolist()
            if policy == "rounded":
                values = [round(v, 2) for v in values]
            a["scores"] = {class_names[j]: float(v) for j, v in enumerate(values)}
        answers.append(a)
    return answers


def v2_output_signature(policy: str, k: int, classes: int) -> list[dict[str, Any]]:
    """The V2 metadata of the outputs the policy exposes."""
    sig: list[dict[str, Any]] = [{"name": "label", "datatype": "INT64", "shape": [-1]}]
    if policy == "topk":
        sig.append({"name": "topk", "datatype": "INT64", "shape": [-1, min(k, classes)]})
    elif policy in ("rounded", "scores"):
        sig.append({"name": "scores", "datatype": "FP32", "shape": [-1, classes]})
    return sig


def v2_outputs(out: np.ndarray, kind: str, policy: str, k: int) -> list[Tensor]:
    """The V2 output tensors the policy allows: ``label``, and ``topk`` or ``scores``."""
    labels = out.argmax(axis=1).astype(np.int64)
    n = out.shape[0]
    tensors = [Tensor("label", "INT64", [n], labels)]
    if policy == "topk":
        probs = probabilities(out, kind)
        kk = min(k, probs.shape[1])
        top = np.argsort(-probs, axis=1, kind="stable")[:, :kk].astype(np.int64)
        tensors.append(Tensor("topk", "INT64", [n, kk], top))
    elif policy in ("rounded", "scores"):
        probs = _shown(probabilities(out, kind), policy)
        tensors.append(Tensor("scores", "FP32", [n, probs.shape[1]], probs))
    return tensors
