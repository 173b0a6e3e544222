"""The evaluation runner: every (chain, threat, norm, ε) unit, attacks in turn, verdicts on seeded draws.

One budget: L∞ ε is ``floor(255 ε)`` whole grey levels, and attacks evaluate their iterates on that
uint8 lattice (:func:`fencebox.attacks.geometry.snap`), so the judge sees exactly what the attack found.

Per example, a unit keeps one candidate: the clean image to begin with, then whichever candidate of
its attacks (every restart, every gradient estimator) is worst for the defence on the *selection*
draws (:mod:`fencebox.harness.verdict`).  The row scores that candidate on independent *scoring*
draws: the fraction of draws correct per example, robust accuracy = its mean, strict = correct on
every draw.  Later attacks only run on examples that some selection draw still gets right (for a
deterministic chain: not yet broken), as in AutoAttack.  Each unit's state is cached after every
attack (:mod:`fencebox.harness.cache`), so an interrupted run resumes where it stopped.
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

from fencebox.attacks import gradient as wb
from fencebox.attacks.geometry import check_norm, eps_levels, quantise_within
from fencebox.errors import ConfigError, InputError
from fencebox.harness.blackbox import hop_skip_jump, square_linf
from fencebox.harness.cache import Cache, array_fingerprint, code_fingerprint
from fencebox.harness.defended import DefendedClassifier
from fencebox.harness.oracle import LocalOracle, Oracle, exposes_margin
from fencebox.harness.stats import wilson
from fencebox.harness.threats import Threat, attack_model, effective_gradient, estimators
from fencebox.harness.verdict import Draws, Outcome, worse
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
DEFAULT_ATTACKS = ["apgd-ce", "apgd-dlr", "pgd"]

OracleFactory = Callable[[DefendedClassifier, str, str], Oracle]
"""(judge, chain name, policy) -> oracle; the default answers in-process (:class:`LocalOracle`)."""


def parse_attacks(names: list[str]) -> list[str]:
    """Resolve white-box attack names and aliases (``apgd`` = APGD-CE + APGD-DLR, ``all``), in order."""
    out: list[str] = []
    for raw in names:
        for name in ATTACK_ALIASES.get(raw, (raw,)):
            if name not in WHITEBOX_ATTACKS:
                known = ", ".join([*WHITEBOX_ATTACKS, *ATTACK_ALIASES])
                raise ConfigError(f"unknown attack {name!r}; expected one of {known}")
            if name not in out:
                out.append(name)
    return out


@dataclass
class EvalConfig:
    """Everything that decides an evaluation's results besides the model, data and chains.

    The defaults are an evaluation worth trusting (APGD-CE + APGD-DLR + PGD, 100 steps, 5 restarts,
    EOT 20); :meth:`fast` is a smoke run, marked in the report as not an evaluation.
    """

    attacks: list[str] = field(default_factory=lambda: list(DEFAULT_ATTACKS))
    eps: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.3])
    eps_l2: list[float] = field(default_factory=list)
    steps: int = 100
    restarts: int = 5
    eot: int = 20
    queries: int = 1000
    seed: int = 0
    batch: int = 128
    workers: int = 1
    check_n: int = 100
    check_eps: float | None = None
    select_draws: int = 10
    score_draws: int = 20
    escalate: bool = True
    smoke: bool = False
    shard: int | None = None
    """Examples per shard: each unit runs shard by shard (:mod:`fencebox.harness.shards`); None: one shard."""

    @classmethod
    def fast(cls, **overrides: Any) -> EvalConfig:
        """A smoke run: 10 steps, 1 restart, EOT 4, 200 queries, 32 check examples; not an evaluation."""
        base: dict[str, Any] = dict(
            steps=10, restarts=1, eot=4, queries=200, check_n=32, select_draws=4, score_draws=8, smoke=True
        )
        base.update(overrides)
        return cls(**base)

    def grid(self) -> list[tuple[str, float]]:
        """The (norm, ε) pairs to evaluate."""
        return [("linf", float(e)) for e in self.eps] + [("l2", float(e)) for e in self.eps_l2]

    def large_eps(self) -> float:
        """The L∞ ε of the large-ε check: ``check_eps`` if set, else twice the largest L∞ ε asked for."""
        if self.check_eps is not None:
            return float(self.check_eps)
        return min(1.0, 2.0 * max(self.eps, default=0.3))

    def validate(self) -> None:
        """Raise ConfigError naming the first out-of-range setting."""
        for name, low in (
            ("steps", 2),
            ("restarts", 1),
            ("eot", 1),
            ("queries", 1),
            ("batch", 1),
            ("check_n", 1),
            ("select_draws", 1),
            ("score_draws", 1),
        ):
            if getattr(self, name) < low:
                raise ConfigError(f"{name} must be >= {low}, got {getattr(self, name)}")
        if self.shard is not None and self.shard < 1:
            raise ConfigError(f"shard must be >= 1, got {self.shard}")
        for e in [*self.eps, *self.eps_l2]:
            if not e >= 0:
                raise ConfigError(f"every eps must be >= 0, got {e}")
        parse_attacks(self.attacks)


@dataclass
class AttackRecord:
    """One attack pass in a unit: what it was, how many examples it broke (wrong on every selection draw)."""

    name: str
    steps: int
    restarts: int
    eot: int
    gradient: str | None
    broke: int
    attacked: int
    seconds: float
    queries: int
    lowered: int = 0
    """Examples whose selected candidate this pass made worse for the defence (broken or not)."""


@dataclass
class Row:
    """The result of one (chain, threat, norm, ε) unit, with per-example outcomes.

    ``robust_accuracy`` is the mean over examples of the fraction of scoring draws correct on the
    selected worst candidate; ``strict_accuracy`` counts examples correct on every scoring draw.
    """

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
    strict_accuracy: float | None = None
    eps_levels: int | None = None
    verdict: dict[str, Any] = field(default_factory=dict)
    adversarials: np.ndarray | None = field(default=None, repr=False, compare=False)
    select_key: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as in report.json's ``results`` (the adversarial images themselves are not in it)."""
        d = {k: v for k, v in asdict(self).items() if k not in ("adversarials", "select_key")}
        d["ci95"] = list(self.ci95)
        if self.strict_accuracy is None:
            d["strict_accuracy"] = self.robust_accuracy
        return d


def _seed(base: int, *parts: Any) -> int:
    return (base * 1_000_003 + zlib.crc32(repr(parts).encode())) % (2**31)


class Estimator:
    """A defended model called with one gradient estimator (the per-call choice of :class:`DefendedClassifier`)."""

    def __init__(self, model: Any, gradient: str) -> None:
        self.model, self.gradient = model, gradient

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.model, DefendedClassifier):
            return self.model(x, gradient=self.gradient)
        out: torch.Tensor = self.model(x)
        return out


class Runner:
    """Runs units for one target model on one data slice, caching each unit under ``cache_dir``."""

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
            "code": code_fingerprint(),
        }
        self.device = getattr(model, "device", torch.device("cpu"))

    # ----- verdicts -----------------------------------------------------------------------------

    def selection(self, chain: Transform, norm: str, eps: float, m: int) -> Draws:
        """The selection draws of a (chain, norm, ε) group on its first ``m`` examples."""
        cfg = self.config
        seed = _seed(cfg.seed, "select", str(chain), norm, eps, m)
        return Draws(self.model, chain, seed, cfg.select_draws, cfg.workers)

    def scoring(self, chain: Transform, norm: str, eps: float, m: int) -> Draws:
        """The scoring draws of a (chain, norm, ε) group: independent of the selection draws."""
        cfg = self.config
        seed = _seed(cfg.seed, "score", str(chain), norm, eps, m)
        return Draws(self.model, chain, seed, cfg.score_draws, cfg.workers)

    def judge(self, chain: Transform, seed: int) -> DefendedClassifier:
        """A deployed-system judge for ``chain`` whose draws are fixed by ``seed`` (black-box oracles use it)."""
        return DefendedClassifier(self.model, chain, seed=seed, workers=self.config.workers)

    def clean(self, chain_name: str, chain: Transform) -> np.ndarray:
        """Per example: the fraction of scoring draws on which the clean image is classified correctly."""
        key = self.clean_key(chain)
        hit = self.cache.get(key)
        if hit is not None:
            return np.asarray(hit["fraction"], dtype=np.float64)
        draws = Draws(
            self.model,
            chain,
            _seed(self.config.seed, "clean", str(chain)),
            self.config.score_draws,
            self.config.workers,
        )
        frac = draws.outcome(self.images, self.labels).fraction
        self.cache.put(key, {"fraction": frac.tolist()})
        return frac

    def _verdict_cfg(self) -> dict[str, Any]:
        cfg = self.config
        return {"seed": cfg.seed, "select": cfg.select_draws, "score": cfg.score_draws}

    def latency_ms(self, chain: Transform, repeats: int = 3) -> float:
        """Median milliseconds per image for the chain's exact ``apply`` on this data (one thread)."""
        rng = np.random.default_rng(0)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            chain.run(self.images, rng)
            times.append(time.perf_counter() - t0)
        return float(np.median(times)) * 1000.0 / len(self.images)

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
        start: Row | None = None,
    ) -> Row:
        """Attack the examples of one unit and return its row (cached per attack pass).

        ``start``: a row whose selected candidates the white-box attacks start from (escalation).
        """
        check_norm(norm)
        cfg = self.config
        steps = cfg.steps if steps is None else steps
        m = len(self.images) if subset is None else min(subset, len(self.images))
        escalating = start is not None
        eot, restarts = (2 * cfg.eot, 2 * cfg.restarts) if escalating else (cfg.eot, cfg.restarts)
        plan = self._plan(threat, chain, norm, attacks)
        _, k = effective_gradient(threat, chain, eot) if threat.whitebox else (None, 1)
        ests = estimators(threat, chain) if threat.whitebox else ()
        key = self.unit_key(chain, threat, norm, eps, attacks, steps, subset, start)
        select = self.selection(chain, norm, eps, m)
        labels = self.labels[:m]
        state = self.cache.get(key)
        best = self.cache.get_array(key)
        if state is None or best is None:
            best = self.images[:m].copy()
            first = select.outcome(best, labels)
            state = {
                "key": first.key().tolist(),
                "broken_by": [None] * m,
                "queries": [0] * m,
                "done": [],
                "seconds": 0.0,
            }
        for name, est in plan_passes(plan, ests):
            label = name if est is None or len(ests) < 2 else f"{name}/{est}"
            if label in [d["name"] for d in state["done"]]:
                continue
            t0 = time.perf_counter()
            sel_key = np.asarray(state["key"], dtype=np.float64)
            queries = np.asarray(state["queries"], dtype=np.int64)
            before = sel_key[:, 0] > 0
            seed = _seed(cfg.seed, key["threat"], str(chain), norm, eps, label)
            spent = np.zeros(m, dtype=np.int64)
            lowered = np.zeros(m, dtype=bool)
            n_restarts = 1 if (name == "fgsm" or not threat.whitebox) else restarts
            gen = torch.Generator().manual_seed(seed)
            model = (
                attack_model(threat, self.model, chain, eot, seed, self.source, cfg.workers)
                if threat.whitebox
                else None
            )
            attacked = int(np.flatnonzero(sel_key[:, 0] > 0).size)
            for rs in range(n_restarts):
                idx = np.flatnonzero(sel_key[:, 0] > 0)
                if idx.size == 0:
                    break
                if threat.whitebox:
                    init = (
                        start.adversarials[idx]
                        if start is not None and start.adversarials is not None and rs == 0
                        else None
                    )
                    adv, used = self._whitebox(
                        model, est or "bpda", name, norm, eps, idx, steps, gen, chain, threat, init
                    )
                    used = used * k
                else:
                    adv, used = self._blackbox(threat, chain, chain_name, name, norm, eps, idx, seed + rs)
                spent[idx] += used
                cand = best.copy()
                cand[idx] = adv
                out = select.outcome(cand, labels)
                better = worse(out.key(), sel_key)
                best[better] = cand[better]
                sel_key[better] = out.key()[better]
                lowered |= better
                for j in np.flatnonzero(better):
                    state["broken_by"][j] = label
            queries += spent
            broke = int((before & (sel_key[:, 0] == 0)).sum())
            record = AttackRecord(
                name=label,
                steps=(1 if name == "fgsm" else steps) if threat.whitebox else cfg.queries,
                restarts=n_restarts,
                eot=k,
                gradient=est,
                broke=broke,
                attacked=attacked,
                seconds=time.perf_counter() - t0,
                queries=int(spent.sum()),
                lowered=int(lowered.sum()),
            )
            state["key"] = sel_key.tolist()
            state["queries"] = queries.tolist()
            state["done"].append(asdict(record))
            state["seconds"] += record.seconds
            self.cache.put(key, state, best)
        return self._row(chain_name, chain, threat, norm, eps, clean[:m], state, best)

    def unit_key(
        self,
        chain: Transform,
        threat: Threat,
        norm: str,
        eps: float,
        attacks: list[str] | None = None,
        steps: int | None = None,
        subset: int | None = None,
        start: Row | None = None,
    ) -> dict[str, Any]:
        """The cache key of a unit (same arguments as :meth:`unit`): what decides its result.

        Distributed runs (:mod:`fencebox.harness.distributed`) use it to skip finished units and to
        file results computed elsewhere under the key this runner will look up.
        """
        cfg = self.config
        steps = cfg.steps if steps is None else steps
        m = len(self.images) if subset is None else min(subset, len(self.images))
        eot, restarts = (2 * cfg.eot, 2 * cfg.restarts) if start is not None else (cfg.eot, cfg.restarts)
        plan = self._plan(threat, chain, norm, attacks)
        _, k = effective_gradient(threat, chain, eot) if threat.whitebox else (None, 1)
        ests = estimators(threat, chain) if threat.whitebox else ()
        return {
            **self.fingerprint,
            "unit": "attack",
            "chain": str(chain),
            "threat": threat.name
            if not threat.whitebox or not threat.defended
            else f"defended:{k}:{','.join(ests)}",
            "norm": norm,
            "eps": eps,
            "plan": plan,
            "steps": steps,
            "restarts": restarts,
            "queries": cfg.queries,
            "verdict": self._verdict_cfg(),
            "m": m,
            "start": None if start is None else array_fingerprint(start.adversarials),
        }

    def clean_key(self, chain: Transform) -> dict[str, Any]:
        """The cache key of :meth:`clean` for ``chain``."""
        return {**self.fingerprint, "unit": "clean", "chain": str(chain), "cfg": self._verdict_cfg()}

    def _plan(self, threat: Threat, chain: Transform, norm: str, attacks: list[str] | None) -> list[str]:
        if threat.whitebox:
            names = parse_attacks(attacks if attacks is not None else self.config.attacks)
            return [a for a in names if norm in WHITEBOX_ATTACKS[a]]
        policy = threat.policy or "label"
        return ["square"] if (exposes_margin(policy) and norm == "linf") else ["hsj"]

    def _whitebox(
        self,
        model: Any,
        estimator: str,
        name: str,
        norm: str,
        eps: float,
        idx: np.ndarray,
        steps: int,
        gen: torch.Generator,
        chain: Transform,
        threat: Threat,
        init: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """One restart of a white-box attack on examples ``idx``: uint8 candidates and gradient evaluations."""
        cfg = self.config
        # on a random chain, one misclassified forward is not a misclassified fresh draw: run every step
        early_stop = not (threat.defended and chain.randomized)
        fn = Estimator(model, estimator)
        advs, spent = [], []
        for s in range(0, idx.size, cfg.batch):
            rows = idx[s : s + cfg.batch]
            x0 = self.images[rows]
            x = nhwc_uint8_to_nchw_float(x0, self.device)
            y = torch.as_tensor(self.labels[rows], device=self.device)
            st = None if init is None else nhwc_uint8_to_nchw_float(init[s : s + cfg.batch], self.device)
            out = _run_whitebox(name, fn, x, y, eps, norm, steps, gen, early_stop=early_stop, start=st)
            advs.append(quantise_within(x0, out.x_adv, eps, norm))
            spent.append(out.queries.cpu().numpy())
        return np.concatenate(advs), np.concatenate(spent).astype(np.int64)

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
    ) -> tuple[np.ndarray, np.ndarray]:
        """A black-box attack on examples ``idx`` through the oracle: uint8 candidates and queries spent."""
        cfg = self.config
        policy = threat.policy or "label"
        if self.oracle_factory is not None:
            oracle = self.oracle_factory(self.judge(chain, seed + 2), chain_name, policy)
        else:
            oracle = LocalOracle(self.judge(chain, seed + 2), policy)
        advs, spent = [], []
        for s in range(0, idx.size, cfg.batch):
            rows = idx[s : s + cfg.batch]
            x0, y = self.images[rows], self.labels[rows]
            if name == "square":
                res = square_linf(oracle, x0, y, eps, budget=cfg.queries, seed=seed + s)
            else:
                res = hop_skip_jump(oracle, x0, y, eps, norm=norm, budget=cfg.queries, seed=seed + s)
            advs.append(quantise_within(x0, nhwc_uint8_to_nchw_float(res.x_adv), eps, norm))
            spent.append(np.asarray(res.queries, dtype=np.int64))
        return np.concatenate(advs), np.concatenate(spent)

    def score(
        self, chain: Transform, norm: str, eps: float, adversarials: np.ndarray
    ) -> tuple[Outcome, Draws]:
        """Score selected candidates on the group's independent scoring draws."""
        m = adversarials.shape[0]
        draws = self.scoring(chain, norm, eps, m)
        return draws.outcome(adversarials, self.labels[:m]), draws

    def _row(
        self,
        chain_name: str,
        chain: Transform,
        threat: Threat,
        norm: str,
        eps: float,
        clean: np.ndarray,
        state: dict[str, Any],
        best: np.ndarray,
    ) -> Row:
        queries = np.asarray(state["queries"], dtype=np.int64)
        sel_key = np.asarray(state["key"], dtype=np.float64)
        row = self.finish(
            chain_name,
            chain,
            threat.name,
            norm,
            eps,
            clean,
            best,
            sel_key,
            list(state["broken_by"]),
            [AttackRecord(**d) for d in state["done"]],
            float(state["seconds"]),
            queries,
            threat.whitebox,
        )
        return row

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
        """Score the selected candidates and build the row."""
        m = best.shape[0]
        out, draws = self.score(chain, norm, eps, best)
        frac = out.fraction
        strict = out.correct.all(axis=1)
        broken = frac < 1.0
        q_success = queries[broken & (clean > 0)]
        select = self.selection(chain, norm, eps, m)
        return Row(
            chain=chain_name,
            chain_spec=str(chain),
            threat=threat,
            norm=norm,
            eps=eps,
            n=m,
            clean_accuracy=float(np.mean(clean)),
            robust_accuracy=float(frac.mean()),
            ci95=wilson(round(float(frac.sum())), m),
            attacks=attacks,
            queries={
                "kind": "none" if whitebox is None else ("gradient" if whitebox else "oracle"),
                "budget": None if whitebox is not False else self.config.queries,
                "mean": float(queries[clean > 0].mean()) if (clean > 0).any() else 0.0,
                "median_to_success": float(np.median(q_success)) if q_success.size else None,
            },
            seconds=seconds,
            per_example={
                "index": self.indices[:m].tolist(),
                "label": self.labels[:m].tolist(),
                "clean": [float(c) for c in clean],
                "robust": [bool(b) for b in np.asarray(strict).ravel()],
                "score": frac.tolist(),
                "broken_by": broken_by,
                "queries": queries.tolist(),
            },
            strict_accuracy=float(strict.mean()),
            eps_levels=eps_levels(eps) if norm == "linf" else None,
            verdict={
                "select": select.describe(),
                "score": draws.describe(),
                "randomized": bool(chain.randomized),
            },
            adversarials=best,
            select_key=sel_key,
        )


def plan_passes(plan: list[str], ests: tuple[str, ...]) -> list[tuple[str, str | None]]:
    """The attack passes of a unit: every attack with every gradient estimator (black-box: no estimator)."""
    if not ests:
        return [(name, None) for name in plan]
    return [(name, est) for est in ests for name in plan]


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
    start: torch.Tensor | None = None,
) -> wb.AttackOutput:
    if name == "fgsm":
        return wb.fgsm(model, x, y, eps, lattice=True)
    attack = wb.pgd if name in ("pgd", "cw") else wb.apgd
    loss = {"pgd": "ce", "cw": "cw", "apgd-ce": "ce"}.get(name, "dlr")
    return attack(
        model,
        x,
        y,
        eps,
        norm,
        steps,
        loss=loss,
        generator=gen,
        early_stop=early_stop,
        lattice=True,
        start=start,
    )


def _model_fingerprint(model: Classifier | None) -> str | None:
    if model is None:
        return None
    module = model.torch_module()
    if module is None:
        return f"{type(model).__name__}:{model.card.name}"
    arrays = [p.detach().cpu().numpy() for p in module.state_dict().values()]
    return array_fingerprint(*arrays) if arrays else model.card.name


def worst_case(runner: Runner, chain: Transform, rows: list[Row], threat: str = "worst-case") -> Row:
    """Combine rows of one (chain, norm, ε) group: per example the candidate worst on the selection draws, re-scored.

    Every row of a group is selected on the same selection draws, so their keys compare; the
    chosen candidate is scored on the group's scoring draws.
    """
    first = rows[0]
    keys = [r.select_key for r in rows]
    advs = [r.adversarials for r in rows]
    if any(k is None for k in keys) or any(a is None for a in advs):
        raise InputError("worst_case needs rows built by this runner (with their candidates)")
    best = advs[0].copy()  # type: ignore[union-attr]
    key = keys[0].copy()  # type: ignore[union-attr]
    who = [f"{first.threat}/{b}" if b else None for b in first.per_example["broken_by"]]
    for r, k, a in zip(rows[1:], keys[1:], advs[1:], strict=True):
        take = worse(k, key)  # type: ignore[arg-type]
        best[take] = a[take]  # type: ignore[index]
        key[take] = k[take]  # type: ignore[index]
        for j in np.flatnonzero(take):
            who[j] = f"{r.threat}/{r.per_example['broken_by'][j]}"
    return runner.finish(
        first.chain,
        chain,
        threat,
        first.norm,
        first.eps,
        np.asarray(first.per_example["clean"], dtype=np.float64),
        best,
        key,
        who,
        [],
        float(sum(r.seconds for r in rows)),
        np.zeros(first.n, dtype=np.int64),
        None,
    )
