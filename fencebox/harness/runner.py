"""The evaluation runner: every (chain, threat, norm, ε) unit, attacks in turn, judged per example.

Per example, robust = correct on the clean image *and* survived every attack and restart tried (the
worst case); each candidate is quantised to uint8 within ε and judged by the deployed system (the
chain's exact ``apply`` with a fresh draw, then the model).  Later attacks and restarts only run on
examples still standing, as in AutoAttack.  Each unit's state is cached after every attack
(:mod:`fencebox.harness.cache`), so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fencebox.errors import InputError
from fencebox.harness import attacks as wb
from fencebox.harness.blackbox import hop_skip_jump, square_linf
from fencebox.harness.cache import Cache, array_fingerprint, code_fingerprint
from fencebox.harness.defended import DefendedClassifier
from fencebox.harness.geometry import check_norm, quantise_within
from fencebox.harness.oracle import LocalOracle, Oracle, exposes_margin
from fencebox.harness.stats import wilson
from fencebox.harness.threats import Threat, attack_model, effective_gradient
from fencebox.models.base import Classifier
from fencebox.torch_util import nhwc_uint8_to_nchw_float
from fencebox.transforms.base import Transform

WHITEBOX_ATTACKS: dict[str, tuple[str, ...]] = {
    "fgsm": ("linf",),
    "pgd": ("linf", "l2"),
    "cw": ("linf", "l2"),
    "apgd-ce": ("linf", "l2"),
    "apgd-dlr": ("linf", "l2"),
}
ATTACK_ALIASES: dict[str, tuple[str, ...]] = {"apgd": ("apgd-ce", "apgd-dlr"), "all": tuple(WHITEBOX_ATTACKS)}

OracleFactory = Callable[[DefendedClassifier, str, str], Oracle]
"""(judge, chain name, policy) -> oracle; the default answers in-process (:class:`LocalOracle`)."""


def parse_attacks(names: list[str]) -> list[str]:
    """Resolve white-box attack names and aliases (``apgd`` = APGD-CE + APGD-DLR, ``all``), in order."""
    out: list[str] = []
    for raw in names:
        for name in ATTACK_ALIASES.get(raw, (raw,)):
            if name not in WHITEBOX_ATTACKS:
                known = ", ".join([*WHITEBOX_ATTACKS, *ATTACK_ALIASES])
                raise InputError(f"unknown attack {name!r}; expected one of {known}")
            if name not in out:
                out.append(name)
    return out


@dataclass
class EvalConfig:
    """Everything that decides an evaluation's results besides the model, data and chains."""

    attacks: list[str] = field(default_factory=lambda: ["fgsm", "pgd", "cw", "apgd-ce", "apgd-dlr"])
    eps: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.3])
    eps_l2: list[float] = field(default_factory=list)
    steps: int = 50
    restarts: int = 1
    eot: int = 20
    queries: int = 1000
    seed: int = 0
    batch: int = 128
    workers: int = 1
    check_n: int = 32
    check_eps: float = 0.6

    def grid(self) -> list[tuple[str, float]]:
        """The (norm, ε) pairs to evaluate."""
        return [("linf", float(e)) for e in self.eps] + [("l2", float(e)) for e in self.eps_l2]

    def validate(self) -> None:
        """Raise InputError naming the first out-of-range setting."""
        for name, low in (("steps", 2), ("restarts", 1), ("eot", 1), ("queries", 1), ("batch", 1)):
            if getattr(self, name) < low:
                raise InputError(f"{name} must be >= {low}, got {getattr(self, name)}")
        for e in [*self.eps, *self.eps_l2]:
            if not e >= 0:
                raise InputError(f"every eps must be >= 0, got {e}")
        parse_attacks(self.attacks)


@dataclass
class AttackRecord:
    """One attack's part in a unit: what it was and how many examples it broke."""

    name: str
    steps: int
    restarts: int
    eot: int
    gradient: str | None
    broke: int
    attacked: int
    seconds: float
    queries: int


@dataclass
class Row:
    """The result of one (chain, threat, norm, ε) unit, with per-example outcomes."""

    chain: str
    chain_spec: str
    threat: str
    norm: str
    eps: float
    n: int
    clean_accuracy: float
    robust_accuracy: float
    ci95: tuple[float, float]
    attacks: list[AttackRecord]
    queries: dict[str, Any]
    seconds: float
    per_example: dict[str, list[Any]]

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as in report.json's ``results``."""
        d = asdict(self)
        d["ci95"] = list(self.ci95)
        return d


def _seed(base: int, *parts: Any) -> int:
    return (base * 1_000_003 + zlib.crc32(repr(parts).encode())) % (2**31)


class Runner:
    """Runs units for one target model on one data slice, caching each unit under ``out_dir/cache``."""

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
        config.validate()
        if images.dtype != np.uint8 or images.ndim != 4 or len(images) != len(labels) or len(images) == 0:
            raise InputError(
                f"expected uint8 images (N, H, W, C) and N labels, got {images.dtype} {images.shape}, "
                f"{len(labels)} labels"
            )
        self.model, self.config = model, config
        self.images, self.labels = images, labels.astype(np.int64)
        self.indices = np.arange(len(images)) if indices is None else indices
        self.source, self.source_ref = source, source_ref
        self.cache = Cache(cache_dir)
        self.oracle_factory = oracle_factory
        self.fingerprint = {
            "model": model_ref,
            "model_weights": _model_fingerprint(model),
            "data": array_fingerprint(images, self.labels),
            "source": source_ref,
            "source_weights": _model_fingerprint(source) if source is not None else None,
        }
        self.device = getattr(model, "device", torch.device("cpu"))
        self._codes: dict[str, str] = {}

    def _code(self, chain: Transform) -> str:
        key = str(chain)
        if key not in self._codes:
            self._codes[key] = code_fingerprint(chain)
        return self._codes[key]

    # ----- clean --------------------------------------------------------------------------------

    def judge(self, chain: Transform, seed: int) -> DefendedClassifier:
        """A deployed-system judge for ``chain`` whose draws are fixed by ``seed``."""
        return DefendedClassifier(self.model, chain, seed=seed, workers=self.config.workers)

    def clean(self, chain_name: str, chain: Transform) -> np.ndarray:
        """Per example: is the clean image correctly classified through the chain (one draw)?"""
        key = {
            **self.fingerprint,
            "unit": "clean",
            "chain": str(chain),
            "code": self._code(chain),
            "seed": self.config.seed,
        }
        hit = self.cache.get(key)
        if hit is not None:
            return np.asarray(hit["correct"], dtype=bool)
        judge = self.judge(chain, _seed(self.config.seed, "clean", str(chain)))
        correct = self._judge_all(judge, self.images, self.labels)
        self.cache.put(key, {"correct": correct.tolist()})
        return correct

    def latency_ms(self, chain: Transform, repeats: int = 3) -> float:
        """Median milliseconds per image for the chain's exact ``apply`` on this data (one thread)."""
        rng = np.random.default_rng(0)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            chain.run(self.images, rng)
            times.append(time.perf_counter() - t0)
        return float(np.median(times)) * 1000.0 / len(self.images)

    def _judge_all(self, judge: DefendedClassifier, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(images), 512):
            out.append(judge.judge(images[i : i + 512]) == labels[i : i + 512])
        return np.concatenate(out)

    # ----- one unit ------------------------------------------------------------------------------

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
    ) -> Row:
        """Attack every clean-correct example of one unit and return its row (cached per attack)."""
        check_norm(norm)
        cfg = self.config
        steps = cfg.steps if steps is None else steps
        m = len(self.images) if subset is None else min(subset, len(self.images))
        plan = self._plan(threat, chain, norm, attacks)
        gradient, k = effective_gradient(threat, chain, cfg.eot) if threat.whitebox else (None, 1)
        key = {
            **self.fingerprint,
            "unit": "attack",
            "chain": str(chain),
            "code": self._code(chain),
            "threat": threat.name
            if not threat.whitebox or not threat.defended
            else f"defended:{gradient}:{k}",
            "norm": norm,
            "eps": eps,
            "plan": plan,
            "steps": steps,
            "restarts": cfg.restarts,
            "queries": cfg.queries,
            "seed": cfg.seed,
            "m": m,
        }
        state = self.cache.get(key) or {
            "robust": clean[:m].tolist(),
            "broken_by": [None] * m,
            "queries": [0] * m,
            "done": [],
            "seconds": 0.0,
        }
        for name in plan:
            if name in [d["name"] for d in state["done"]]:
                continue
            t0 = time.perf_counter()
            robust = np.asarray(state["robust"], dtype=bool)
            queries = np.asarray(state["queries"], dtype=np.int64)
            idx = np.flatnonzero(robust)
            seed = _seed(cfg.seed, key["threat"], str(chain), norm, eps, name)
            if threat.whitebox:
                broken, spent, restarts = self._whitebox(threat, chain, name, norm, eps, idx, steps, seed)
            else:
                broken, spent, restarts = self._blackbox(
                    threat, chain, chain_name, name, norm, eps, idx, seed
                )
            queries[idx] += spent
            robust[idx[broken]] = False
            for j in idx[broken]:
                state["broken_by"][j] = name
            record = AttackRecord(
                name=name,
                steps=steps if threat.whitebox and name != "fgsm" else (1 if name == "fgsm" else cfg.queries),
                restarts=restarts,
                eot=k,
                gradient=gradient,
                broke=int(broken.sum()),
                attacked=int(idx.size),
                seconds=time.perf_counter() - t0,
                queries=int(spent.sum()),
            )
            state["robust"] = robust.tolist()
            state["queries"] = queries.tolist()
            state["done"].append(asdict(record))
            state["seconds"] += record.seconds
            self.cache.put(key, state)
        return self._row(chain_name, chain, threat, norm, eps, clean[:m], state, threat.whitebox)

    def _plan(self, threat: Threat, chain: Transform, norm: str, attacks: list[str] | None) -> list[str]:
        if threat.whitebox:
            names = parse_attacks(attacks if attacks is not None else self.config.attacks)
            return [a for a in names if norm in WHITEBOX_ATTACKS[a]]
        policy = threat.policy or "label"
        return ["square"] if (exposes_margin(policy) and norm == "linf") else ["hsj"]

    def _whitebox(
        self,
        threat: Threat,
        chain: Transform,
        name: str,
        norm: str,
        eps: float,
        idx: np.ndarray,
        steps: int,
        seed: int,
    ) -> tuple[np.ndarray, np.ndarray, int]:
        cfg = self.config
        model = attack_model(threat, self.model, chain, cfg.eot, seed, self.source, cfg.workers)
        _, k = effective_gradient(threat, chain, cfg.eot) if threat.defended else ("bpda", 1)
        judge = self.judge(chain, seed + 1)
        restarts = 1 if name == "fgsm" else cfg.restarts
        # on a random chain, one misclassified forward is not a misclassified fresh draw: run every step
        early_stop = not (threat.defended and chain.randomized)
        broken = np.zeros(idx.size, dtype=bool)
        spent = np.zeros(idx.size, dtype=np.int64)
        gen = torch.Generator().manual_seed(seed)
        for _ in range(restarts):
            todo = np.flatnonzero(~broken)
            for s in range(0, todo.size, cfg.batch):
                part = todo[s : s + cfg.batch]
                rows = idx[part]
                x0 = self.images[rows]
                x = nhwc_uint8_to_nchw_float(x0, self.device)
                y = torch.as_tensor(self.labels[rows], device=self.device)
                out = _run_whitebox(name, model, x, y, eps, norm, steps, gen, early_stop=early_stop)
                adv = quantise_within(x0, out.x_adv, eps, norm)
                broken[part] |= judge.judge(adv) != self.labels[rows]
                spent[part] += out.queries.cpu().numpy() * k
        return broken, spent, restarts

    def _blackbox(
        self,
        threat: Threat,
        chain: Transform,
        chain_name: str,
        name: str,
        norm: str,
        eps: float,
        idx: np.ndarray,
        seed: int,
    ) -> tuple[np.ndarray, np.ndarray, int]:
        cfg = self.config
        policy = threat.policy or "label"
        if self.oracle_factory is not None:
            oracle = self.oracle_factory(self.judge(chain, seed + 2), chain_name, policy)
        else:
            oracle = LocalOracle(self.judge(chain, seed + 2), policy)
        judge = self.judge(chain, seed + 1)
        broken = np.zeros(idx.size, dtype=bool)
        spent = np.zeros(idx.size, dtype=np.int64)
        for s in range(0, idx.size, cfg.batch):
            rows = idx[s : s + cfg.batch]
            x0, y = self.images[rows], self.labels[rows]
            if name == "square":
                res = square_linf(oracle, x0, y, eps, budget=cfg.queries, seed=seed + s)
            else:
                res = hop_skip_jump(oracle, x0, y, eps, norm=norm, budget=cfg.queries, seed=seed + s)
            adv = quantise_within(x0, nhwc_uint8_to_nchw_float(res.x_adv), eps, norm)
            broken[s : s + rows.size] = judge.judge(adv) != y
            spent[s : s + rows.size] = res.queries
        return broken, spent, 1

    def _row(
        self,
        chain_name: str,
        chain: Transform,
        threat: Threat,
        norm: str,
        eps: float,
        clean: np.ndarray,
        state: dict[str, Any],
        whitebox: bool,
    ) -> Row:
        robust = np.asarray(state["robust"], dtype=bool)
        queries = np.asarray(state["queries"], dtype=np.int64)
        m = robust.size
        broken = clean & ~robust
        q_success = queries[broken]
        return Row(
            chain=chain_name,
            chain_spec=str(chain),
            threat=threat.name,
            norm=norm,
            eps=eps,
            n=m,
            clean_accuracy=float(clean.mean()),
            robust_accuracy=float(robust.mean()),
            ci95=wilson(int(robust.sum()), m),
            attacks=[AttackRecord(**d) for d in state["done"]],
            queries={
                "kind": "gradient" if whitebox else "oracle",
                "budget": None if whitebox else self.config.queries,
                "mean": float(queries[clean].mean()) if clean.any() else 0.0,
                "median_to_success": float(np.median(q_success)) if q_success.size else None,
            },
            seconds=float(state["seconds"]),
            per_example={
                "index": self.indices[:m].tolist(),
                "label": self.labels[:m].tolist(),
                "clean": clean.tolist(),
                "robust": robust.tolist(),
                "broken_by": list(state["broken_by"]),
                "queries": queries.tolist(),
            },
        )


def _run_whitebox(
    name: str,
    model: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    norm: str,
    steps: int,
    gen: torch.Generator,
    early_stop: bool = True,
) -> wb.AttackOutput:
    if name == "fgsm":
        return wb.fgsm(model, x, y, eps)
    if name in ("pgd", "cw"):
        loss = "ce" if name == "pgd" else "cw"
        return wb.pgd(model, x, y, eps, norm, steps, loss=loss, generator=gen, early_stop=early_stop)
    loss = "ce" if name == "apgd-ce" else "dlr"
    return wb.apgd(model, x, y, eps, norm, steps, loss=loss, generator=gen, early_stop=early_stop)


def _model_fingerprint(model: Classifier | None) -> str | None:
    if model is None:
        return None
    module = model.torch_module()
    if module is None:
        return f"{type(model).__name__}:{model.card.name}"
    arrays = [p.detach().cpu().numpy() for p in module.state_dict().values()]
    return array_fingerprint(*arrays) if arrays else model.card.name


def worst_case(rows: list[Row]) -> Row:
    """Combine rows of the same (chain, norm, ε) into one: robust only if robust under every threat."""
    first = rows[0]
    robust = np.logical_and.reduce([np.asarray(r.per_example["robust"], dtype=bool) for r in rows])
    broken_by: list[Any] = []
    for i in range(robust.size):
        who = [f"{r.threat}/{r.per_example['broken_by'][i]}" for r in rows if r.per_example["broken_by"][i]]
        broken_by.append(who[0] if who else None)
    clean = np.asarray(first.per_example["clean"], dtype=bool)
    return Row(
        chain=first.chain,
        chain_spec=first.chain_spec,
        threat="worst-case",
        norm=first.norm,
        eps=first.eps,
        n=first.n,
        clean_accuracy=first.clean_accuracy,
        robust_accuracy=float(robust.mean()),
        ci95=wilson(int(robust.sum()), first.n),
        attacks=[],
        queries={"kind": "none", "budget": None, "mean": 0.0, "median_to_success": None},
        seconds=float(sum(r.seconds for r in rows)),
        per_example={
            **first.per_example,
            "clean": clean.tolist(),
            "robust": robust.tolist(),
            "broken_by": broken_by,
            "queries": [0] * first.n,
        },
    )
