"""The service's wire forms (REST JSON, V2 tensors) of what :mod:`fencebox.policy` exposes.

The reduction itself (which labels, top-k or scores a client may see) lives in :func:`fencebox.policy.expose`,
shared with the harness's oracles; this module only formats it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fencebox.policy import DEFAULT_DECIMALS, expose, exposes_scores
from fencebox.service.v2codec import Tensor


def rest_answers(
    out: np.ndarray, kind: str, class_names: list[str], policy: str, k: int
) -> list[dict[str, Any]]:
    """One JSON object per image, with only the fields the policy allows."""
    shown = expose(out, policy, kind, k)
    answers: list[dict[str, Any]] = []
    for i, lab in enumerate(shown.labels.tolist()):
        a: dict[str, Any] = {"label": int(lab), "class_name": class_names[lab]}
        if shown.topk is not None:
            a["topk"] = [{"label": int(j), "class_name": class_names[j]} for j in shown.topk[i].tolist()]
        elif shown.scores is not None:
            values = shown.scores[i].astype(np.float64).tolist()
            if policy == "rounded":
                values = [round(v, DEFAULT_DECIMALS) for v in values]
            a["scores"] = {class_names[j]: float(v) for j, v in enumerate(values)}
        answers.append(a)
    return answers


def v2_output_signature(policy: str, k: int, classes: int) -> list[dict[str, Any]]:
    """The V2 metadata of the outputs the policy exposes."""
    sig: list[dict[str, Any]] = [{"name": "label", "datatype": "INT64", "shape": [-1]}]
    if policy == "topk":
        sig.append({"name": "topk", "datatype": "INT64", "shape": [-1, min(k, classes)]})
    elif exposes_scores(policy):
        sig.append({"name": "scores", "datatype": "FP32", "shape": [-1, classes]})
    return sig


def v2_outputs(out: np.ndarray, kind: str, policy: str, k: int) -> list[Tensor]:
    """The V2 output tensors the policy allows: ``label``, and ``topk`` or ``scores``."""
    shown = expose(out, policy, kind, k)
    n = shown.labels.shape[0]
    tensors = [Tensor("label", "INT64", [n], shown.labels)]
    if shown.topk is not None:
        tensors.append(Tensor("topk", "INT64", list(shown.topk.shape), shown.topk))
    elif shown.scores is not None:
        tensors.append(Tensor("scores", "FP32", list(shown.scores.shape), shown.scores))
    return tensors
