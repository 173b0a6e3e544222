"""Shards of examples: a :class:`ShardedRunner` runs every unit as one sub-unit per shard and merges the rows.

A unit of work is then (chain, threat, norm, ε, shard): the grain a distributed run
(:mod:`fencebox.harness.distributed`) hands to its workers.  The local run uses the very same
shards (``EvalConfig.shard`` examples each), so the attacks see the same batches and the same seeds
in both, and the per-example outcomes agree.  Each shard is an ordinary :class:`Runner` on its slice
of the data, with its own cache entries; with two or more shards each draws its seeds from
``(seed, shard bounds)`` so shards never share random draws; a single shard is exactly the unsharded run.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from fencebox.errors import InputError
from fencebox.harness.runner import (
    AttackRecord,
    EvalConfig,
    OracleFactory,
    Row,
    Runner,
    _seed,
)
from fencebox.harness.stats import wilson
from fencebox.harness.threats import Threat, estimators
from fencebox.models.base import Classifier
from fencebox.transforms.base import Transform


def shard_bounds(n: int, size: int | None) -> list[tuple[int, int]]:
    """``[start, stop)`` of each shard of ``n`` examples, ``size`` each (the last may be shorter)."""
    if size is None or size >= n:
        return [(0, n)]
    return [(a, min(n, a + size)) for a in range(0, n, size)]


class ShardedRunner(Runner):
    """A :class:`Runner` whose units run shard by shard; rows, clean fractions and scores are merged.

    ``parts[k]`` is the runner of shard ``k`` (``bounds[k]`` its examples); the attributes of the
    whole runner (images, model, config, indices) describe all the data, for the checks and latency.
    """

    def __init__(
        self,
        model: Classifier,
        images: np.ndarray,
        labels: np.ndarray,
        config: EvalConfig,
        model_ref: str = "model",
        source: Classifier | None = None,
        source_ref: str | None = None,
        cache_dir: Path | None = None,
        oracle_factory: OracleFactory | None = None,
        indices: np.ndarray | None = None,
    ) -> None:
        super().__init__(
            model, images, labels, config, model_ref, source, source_ref, cache_dir, oracle_factory, indices
        )
        self.bounds = shard_bounds(len(images), config.shard)
        many = len(self.bounds) > 1
        self.parts: list[Runner] = []
        for a, b in self.bounds:
            cfg = dataclasses.replace(config, seed=_seed(config.seed, "shard", a, b)) if many else config
            self.parts.append(
                Runner(
                    model,
                    images[a:b],
                    labels[a:b],
                    cfg,
                    model_ref,
                    source,
                    source_ref,
                    cache_dir,
                    oracle_factory,
                    self.indices[a:b],
                )
            )
        self.driver_units = 0
        """Sub-units this process computed itself (not found complete in its cache)."""

    def within(self, m: int) -> list[tuple[int, int, int]]:
        """``(shard, start, stop)`` of the shards covering the first ``m`` examples, cut at ``m``."""
        return [(k, a, min(b, m)) for k, (a, b) in enumerate(self.bounds) if a < m]

    def clean(self, chain_name: str, chain: Transform) -> np.ndarray:
        """Per example the fraction of scoring draws correct on the clean image, shard by shard."""
        return np.concatenate([p.clean(chain_name, chain) for p in self.parts])

    def unit(
        self,
        chain_name: str,
        chain: Transform,
        threat: Threat,
        norm: str,
        eps: float,
        clean: np.ndarray,
        attacks: list[str] | None = None,
        steps: int | None = None,
        subset: int | None = None,
        start: Row | None = None,
    ) -> Row:
        """One unit as its shards' sub-units (each cached on its own), merged into one row."""
        m = len(self.images) if subset is None else min(subset, len(self.images))
        rows = []
        for k, a, b in self.within(m):
            part = self.parts[k]
            first = None if start is None else slice_row(start, a, b)
            if not unit_complete(part, chain, threat, norm, eps, attacks, steps, b - a, first):
                self.driver_units += 1
            rows.append(
                part.unit(chain_name, chain, threat, norm, eps, clean[a:b], attacks, steps, b - a, first)
            )
        return merge_rows(rows)

    def finish(
        self,
        chain_name: str,
        chain: Transform,
        threat: str,
        norm: str,
        eps: float,
        clean: np.ndarray,
        best: np.ndarray,
        sel_key: np.ndarray,
        broken_by: list[Any],
        attacks: list[AttackRecord],
        seconds: float,
        queries: np.ndarray,
        whitebox: bool | None,
    ) -> Row:
        """Score selected candidates shard by shard (each on its own scoring draws) and merge."""
        rows = [
            self.parts[k].finish(
                chain_name,
                chain,
                threat,
                norm,
                eps,
                clean[a:b],
                best[a:b],
                sel_key[a:b],
                broken_by[a:b],
                [],
                0.0,
                queries[a:b],
                whitebox,
            )
            for k, a, b in self.within(best.shape[0])
        ]
        return dataclasses.replace(merge_rows(rows), attacks=attacks, seconds=seconds)


def slice_row(row: Row, a: int, b: int) -> Row:
    """The part of a merged row on examples ``[a, b)``: what a shard's escalation starts from."""
    if row.adversarials is None:
        raise InputError("a start row needs its candidates (a row built by this runner)")
    return dataclasses.replace(
        row,
        n=b - a,
        adversarials=row.adversarials[a:b],
        select_key=None if row.select_key is None else row.select_key[a:b],
        per_example={k: v[a:b] for k, v in row.per_example.items()},
    )


def unit_complete(
    part: Runner,
    chain: Transform,
    threat: Threat,
    norm: str,
    eps: float,
    attacks: list[str] | None,
    steps: int | None,
    subset: int | None,
    start: Row | None,
) -> bool:
    """Whether ``part``'s cache holds the finished sub-unit (every attack pass done, candidates stored)."""
    key = part.unit_key(chain, threat, norm, eps, attacks, steps, subset, start)
    state = part.cache.get(key)
    if state is None or part.cache.get_array(key) is None:
        return False
    passes = len(key["plan"]) * max(1, len(estimators(threat, chain) if threat.whitebox else ()))
    return len(state.get("done", [])) >= passes


def merge_rows(rows: list[Row]) -> Row:
    """One row from the rows of consecutive shards: per-example lists joined, every aggregate recomputed.

    Attack records add up per pass (every shard runs the same passes in the same order); the
    verdict lists each shard's draw seeds, which is what replay needs.
    """
    if len(rows) == 1:
        return rows[0]
    first = rows[0]
    per = {k: [v for r in rows for v in r.per_example[k]] for k in first.per_example}
    n = sum(r.n for r in rows)
    clean = np.asarray(per["clean"], dtype=np.float64)
    score = np.asarray(per["score"], dtype=np.float64)
    strict = np.asarray(per["robust"], dtype=bool)
    queries = np.asarray(per["queries"], dtype=np.int64)
    q_success = queries[(score < 1.0) & (clean > 0)]
    attacks = [
        dataclasses.replace(
            recs[0],
            broke=sum(r.broke for r in recs),
            attacked=sum(r.attacked for r in recs),
            seconds=sum(r.seconds for r in recs),
            queries=sum(r.queries for r in recs),
            lowered=sum(r.lowered for r in recs),
        )
        for recs in zip(*(r.attacks for r in rows), strict=True)
    ]
    offsets = np.cumsum([0, *(r.n for r in rows)])
    verdict = dict(first.verdict)
    for which in ("select", "score"):
        if which in first.verdict:
            verdict[which] = {
                "draws": first.verdict[which]["draws"],
                "shards": [
                    {"start": int(a), "stop": int(b), "seed": r.verdict[which]["seed"]}
                    for r, a, b in zip(rows, offsets[:-1], offsets[1:], strict=True)
                ],
            }
    advs = [r.adversarials for r in rows]
    keys = [r.select_key for r in rows]
    return dataclasses.replace(
        first,
        n=n,
        clean_accuracy=float(clean.mean()),
        robust_accuracy=float(score.mean()),
        ci95=wilson(round(float(score.sum())), n),
        attacks=attacks,
        queries={
            **first.queries,
            "mean": float(queries[clean > 0].mean()) if (clean > 0).any() else 0.0,
            "median_to_success": float(np.median(q_success)) if q_success.size else None,
        },
        seconds=float(sum(r.seconds for r in rows)),
        per_example=per,
        strict_accuracy=float(strict.mean()),
        verdict=verdict,
        adversarials=None if any(a is None for a in advs) else np.concatenate(advs),  # type: ignore[arg-type]
        select_key=None if any(k is None for k in keys) else np.concatenate(keys),  # type: ignore[arg-type]
    )
