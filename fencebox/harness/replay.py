"""Re-judge a report's saved adversarials (``--save-adversarials``) through its chains: the numbers, again.

Locally, every saved group is scored on the very scoring draws its verdict used (seed and draw count
are in the report), so the numbers are the same to the last digit.  Through a running service
(``--url``), each image is sent once per scoring draw; the service draws its own randomness, so for
a random chain the numbers agree within sampling noise, and for a deterministic chain exactly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from fencebox.errors import ConfigError
from fencebox.harness.http_oracle import HttpOracle
from fencebox.harness.verdict import Draws
from fencebox.models import load_model
from fencebox.spec import load_chain


def _rows_to_replay(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Every row with saved adversarials: the L-inf/L2 groups, then the patch and AdvGAN rows."""
    every = [*doc.get("results", []), *doc.get("patch_results", []), *doc.get("advgan_results", [])]
    rows = [r for r in every if r.get("verdict", {}).get("adversarials")]
    if not rows:
        raise ConfigError("the report holds no saved adversarials; evaluate with --save-adversarials")
    return rows


def _local_scores(
    target: Any, chain: Any, score: dict[str, Any], images: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per example: fraction of the verdict's scoring draws correct, and correct on all of them.

    A sharded run (``--shard``, ``--ray``) scored each shard on its own seed: ``score["shards"]``.
    """
    parts = score.get("shards") or [{"start": 0, "stop": len(images), "seed": score["seed"]}]
    outs = [
        Draws(target, chain, int(p["seed"]), int(score["draws"])).outcome(
            images[p["start"] : p["stop"]], labels[p["start"] : p["stop"]]
        )
        for p in parts
    ]
    return (
        np.concatenate([o.fraction for o in outs]),
        np.concatenate([o.correct.all(axis=1) for o in outs]),
    )


def _service_fraction(url: str, route: str, images: np.ndarray, labels: np.ndarray, draws: int) -> np.ndarray:
    oracle = HttpOracle(url, route)
    try:
        hits = [oracle.query(images).labels == labels for _ in range(draws)]
    finally:
        oracle.close()
    return np.stack(hits, axis=1).mean(axis=1)


def _threat(row: dict[str, Any]) -> str:
    """A row's threat as printed: the norm of an L-inf/L2 group, else patch shape/size or AdvGAN, and the gradient."""
    if "norm" in row:
        return str(row["norm"])
    if row.get("attack") == "advgan":
        return f"advgan {row['gradient']}"
    size = "" if row.get("size") is None else f" {100 * row['size']:g}%"
    return f"{row['threat']}{size} {row['gradient']}"


def replay_report(
    report: Path,
    model: str | None = None,
    device: str = "cpu",
    url: str | None = None,
    routes: dict[str, str] | None = None,
) -> tuple[list[str], bool]:
    """Re-judge every saved group of ``report``; return printable lines and whether every number matched.

    ``url``/``routes``: judge through the service route serving each chain (``routes[chain name]``,
    default: the chain name) instead of in-process.
    """
    try:
        doc = json.loads(Path(report).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read report {report}: {exc}") from None
    folder = Path(report).parent
    ref = model or doc["config"]["model"]
    target = load_model(ref, device=device)
    lines = [f"replaying {report} with {ref} " + (f"through {url}" if url else "locally")]
    lines.append(
        "| chain | threat | eps | n | reported robust | replayed robust | reported strict | replayed strict |"
    )
    lines.append("|---|---|---|---|---|---|---|---|")
    same = True
    for r in _rows_to_replay(doc):
        v = r["verdict"]
        saved = v["adversarials"]
        with np.load(folder / saved["file"]) as f:
            images, labels = np.asarray(f["images"]), np.asarray(f["labels"])
        chain = load_chain(r["chain_spec"] or "none")
        draws = int(v["score"]["draws"])
        if url is None:
            frac, strict = _local_scores(target, chain, v["score"], images, labels)
        else:
            route = (routes or {}).get(r["chain"], r["chain"])
            frac = _service_fraction(url, route, images, labels, draws)
            strict = frac == 1.0
        robust, strict_acc = float(frac.mean()), float(strict.mean())
        exact = url is None or not v.get("randomized", False)
        match = (robust == r["robust_accuracy"] and strict_acc == r["strict_accuracy"]) if exact else True
        same &= match
        lines.append(
            f"| {r['chain']} | {_threat(r)} | {r.get('eps', '-')} | {r['n']} | {100 * r['robust_accuracy']:.1f}% | "
            f"{100 * robust:.1f}% | {100 * r['strict_accuracy']:.1f}% | {100 * strict_acc:.1f}%"
            + ("" if match else " MISMATCH")
            + ("" if exact else " (service draws: agreement within noise)")
            + " |"
        )
    lines.append("all numbers match" if same else "MISMATCH: the replayed numbers differ from the report")
    return lines, same
