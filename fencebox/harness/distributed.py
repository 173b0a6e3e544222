"""Run an evaluation's units as Ray tasks: ``fencebox evaluate --ray [ADDRESS]``.

The work splits into units of (chain, threat, norm, ε, shard of examples) (:mod:`fencebox.harness.shards`).
Each unit is one Ray task running :func:`run_unit`, the very code the local run uses (the shard's
:meth:`Runner.unit`); the task returns the unit's cache entries, which the driver files in its own
cache (``out/cache``) as each task finishes.  The driver then runs the ordinary evaluation, which
finds every unit in the cache: rows, worst cases, escalation decisions and checks are computed by
the same code as a local run, so the report is the same (timings and ``environment`` aside).

- The model, data and chains go to the object store once (``ray.put``); a worker process
  deserialises them once and keeps the runner for later tasks.
- Escalation needs a whole (chain, norm, ε) group: once every shard of the group is in, the
  driver makes the decision the local run makes and submits the escalation's shards as new tasks.
- A task asks for one CPU (and ``gpus_per_task`` GPUs with ``--device cuda``); Ray retries a unit
  whose worker dies (``max_retries``); results are keyed by unit, so a retried unit counts once.
- Resume: units already in the driver's cache are not submitted again.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fencebox.errors import ConfigError
from fencebox.harness.runner import Row, Runner
from fencebox.harness.shards import ShardedRunner, slice_row, unit_complete
from fencebox.harness.threats import ESCALATION, THREATS, Threat
from fencebox.models.base import Classifier
from fencebox.models.torch_model import TorchClassifier
from fencebox.transforms.base import Transform

MAX_RETRIES = 3
"""How often Ray reruns a unit whose worker died (a failed unit after that fails the run)."""
DEFAULT_SHARD = 32
"""Examples per shard with ``--ray`` when ``--shard`` is not given (recorded in the report's config)."""

Entry = tuple[dict[str, Any], dict[str, Any], np.ndarray | None]
"""One cache entry: key, state, candidate array."""
Decide = Callable[[Runner, Transform, list[Row]], Row | None]
"""Escalation decision: given a group's rows, the black-box row to escalate from, or None."""


@dataclass(frozen=True)
class UnitSpec:
    """One task: a shard's clean fractions (``kind="clean"``) or a shard's sub-unit of an attack unit."""

    kind: str
    chain: str
    shard: int
    threat: str = ""
    norm: str = "linf"
    eps: float = 0.0
    attacks: tuple[str, ...] | None = None
    steps: int | None = None
    subset: int | None = None

    def label(self) -> str:
        """Short description for the progress bar."""
        if self.kind == "clean":
            return f"{self.chain}: clean, shard {self.shard}"
        return f"{self.chain}: {self.threat} {self.norm} eps={self.eps:g}, shard {self.shard}"


@dataclass
class TaskResult:
    """What a task sends back: the unit's cache entries and where its time went."""

    entries: list[Entry]
    seconds: float
    """The whole task body, setup included."""
    setup_seconds: float
    """Loading the model and data from the object store and building the runner (first unit of a worker)."""
    cpu_seconds: float = 0.0
    """CPU time of the task body (all its threads): against ``seconds``, how long it waited for a core."""


@dataclass
class Context:
    """What every task needs, put in the object store once: model, data, chains and config."""

    model: Classifier
    images: np.ndarray
    labels: np.ndarray
    indices: np.ndarray
    config: Any
    chains: dict[str, Transform]
    model_ref: str
    source: Classifier | None
    source_ref: str | None
    device: str = "cpu"
    """Where the units run; a worker moves torch models there (the driver may have no GPU)."""


_RUNNERS: dict[str, tuple[ShardedRunner, dict[str, Transform]]] = {}
_LOCK = threading.Lock()


def threat_named(name: str) -> Threat:
    """The threat of a row or task name (``escalation`` included)."""
    return ESCALATION if name == ESCALATION.name else THREATS[name]


def move_model(model: Classifier, device: str) -> None:
    """Put a torch-backed model on ``device`` in place (other models, e.g. ONNX, stay where they run)."""
    import torch

    if isinstance(model, TorchClassifier) and model.device != torch.device(device):
        model.device = torch.device(device)
        model.module = model.module.to(model.device)


def worker_runner(token: str, holder: list[Any]) -> tuple[ShardedRunner, dict[str, Transform]]:
    """This process's runner and chains for the evaluation ``token``: built once from the object store."""
    with _LOCK:
        if token not in _RUNNERS:
            import ray

            ctx: Context = ray.get(holder[0])
            for model in (ctx.model, ctx.source):
                if model is not None:
                    move_model(model, ctx.device)
            _RUNNERS.clear()
            runner = ShardedRunner(
                ctx.model,
                np.array(ctx.images),  # the object store's arrays are read-only; torch wants writable ones
                np.array(ctx.labels),
                ctx.config,
                model_ref=ctx.model_ref,
                source=ctx.source,
                source_ref=ctx.source_ref,
                indices=ctx.indices,
            )
            _RUNNERS[token] = (runner, ctx.chains)
        return _RUNNERS[token]


def run_unit(
    runner: ShardedRunner, chains: dict[str, Transform], spec: UnitSpec, start: Row | None
) -> list[Entry]:
    """Run one unit on its shard's runner and return its cache entries (the shard's clean fractions first).

    ``start``: for an escalation, the whole-data row its candidates start from (the shard's part is used).
    """
    part = runner.parts[spec.shard]
    a, b = runner.bounds[spec.shard]
    chain = chains[spec.chain]
    clean = part.clean(spec.chain, chain)
    ckey = part.clean_key(chain)
    state = part.cache.get(ckey)
    assert state is not None
    entries: list[Entry] = [(ckey, state, None)]
    if spec.kind == "clean":
        return entries
    threat = threat_named(spec.threat)
    m = b - a if spec.subset is None else min(spec.subset, b) - a
    first = None if start is None else slice_row(start, a, a + m)
    attacks = None if spec.attacks is None else list(spec.attacks)
    part.unit(spec.chain, chain, threat, spec.norm, spec.eps, clean, attacks, spec.steps, m, first)
    key = part.unit_key(chain, threat, spec.norm, spec.eps, attacks, spec.steps, m, first)
    ustate = part.cache.get(key)
    assert ustate is not None
    entries.append((key, ustate, part.cache.get_array(key)))
    return entries


def _task(token: str, holder: list[Any], spec: UnitSpec, start: Row | None) -> TaskResult:
    """The Ray task body: one unit on this worker's runner, torch on the CPUs Ray gave the task."""
    import ray
    import torch

    t0, c0 = time.perf_counter(), time.process_time()
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    torch.set_num_threads(max(1, int(cpus)))
    runner, chains = worker_runner(token, holder)
    t1 = time.perf_counter()
    entries = run_unit(runner, chains, spec, start)
    return TaskResult(entries, time.perf_counter() - t0, t1 - t0, time.process_time() - c0)


def connect(address: str) -> bool:
    """Start a local Ray (``address="local"``) or join a cluster; True when this call started Ray.

    Usage statistics and the dashboard are off; a local Ray binds to loopback only.
    """
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"log_to_driver": True, "configure_logging": False}
    if address == "local":
        kwargs.update(address="local", include_dashboard=False, _node_ip_address="127.0.0.1")
    else:
        kwargs["address"] = address
        if address.startswith(("127.", "localhost")):
            kwargs["_node_ip_address"] = "127.0.0.1"
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"cannot start or join Ray at {address!r}: {exc}") from exc
    return True


def cluster_environment() -> dict[str, Any]:
    """The live cluster the units ran on: Ray version, nodes, CPUs, GPUs."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return {
        "executor": "ray",
        "ray": ray.__version__,
        "nodes": len(nodes),
        "cpus": float(sum(n["Resources"].get("CPU", 0.0) for n in nodes)),
        "gpus": float(sum(n["Resources"].get("GPU", 0.0) for n in nodes)),
    }


@dataclass
class Plan:
    """The tasks of one evaluation and the bookkeeping of escalation groups."""

    specs: list[UnitSpec] = field(default_factory=list)
    groups: dict[tuple[str, str, float], set[UnitSpec]] = field(default_factory=dict)


def plan_units(runner: ShardedRunner, chains: dict[str, Transform], threats: list[Threat]) -> Plan:
    """Every unit a local run computes before escalation: clean, each (threat, norm, ε), the checks' PGD runs.

    The checks' units mirror :func:`fencebox.harness.checks.large_eps_check` and ``more_steps_check``;
    a unit missed here is computed by the driver (counted as ``driver_units`` in the report).
    """
    cfg = runner.config
    plan = Plan()
    shards = range(len(runner.parts))
    m = min(cfg.check_n, len(runner.images))
    check_shards = [k for k, _, _ in runner.within(m)]
    grid = cfg.grid()
    for name in chains:
        cleans = [UnitSpec("clean", name, k) for k in shards]
        plan.specs.extend(cleans)
        for norm, eps in grid:
            group = set(cleans)
            for t in threats:
                units = [UnitSpec("attack", name, k, t.name, norm, eps) for k in shards]
                plan.specs.extend(units)
                group.update(units)
            plan.groups[(name, norm, eps)] = group
        white = [t for t in threats if t.whitebox] or [THREATS["bpda-eot"]]
        for t in white:
            plan.specs.extend(
                UnitSpec("attack", name, k, t.name, "linf", cfg.large_eps(), ("pgd",), None, m)
                for k in check_shards
            )
        if grid:
            norm, eps = max(grid, key=lambda g: (g[0] == "linf", g[1]))
            for steps in (max(2, cfg.steps // 4), cfg.steps):
                plan.specs.extend(
                    UnitSpec("attack", name, k, "bpda-eot", norm, eps, ("pgd",), steps, m)
                    for k in check_shards
                )
    plan.specs = list(dict.fromkeys(plan.specs))
    return plan


def is_done(runner: ShardedRunner, chains: dict[str, Transform], spec: UnitSpec, start: Row | None) -> bool:
    """Whether the driver's cache already holds this unit (a resumed run skips it)."""
    part = runner.parts[spec.shard]
    chain = chains[spec.chain]
    if spec.kind == "clean":
        return part.cache.get(part.clean_key(chain)) is not None
    a, b = runner.bounds[spec.shard]
    m = b - a if spec.subset is None else min(spec.subset, b) - a
    first = None if start is None else slice_row(start, a, a + m)
    attacks = None if spec.attacks is None else list(spec.attacks)
    threat = threat_named(spec.threat)
    return unit_complete(part, chain, threat, spec.norm, spec.eps, attacks, spec.steps, m, first)


def prefetch_on_ray(
    runner: ShardedRunner,
    chains: dict[str, Transform],
    threats: list[Threat],
    address: str,
    decide: Decide,
    model_ref: str,
    device: str = "cpu",
    progress: Callable[[str], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    gpus_per_task: float = 1.0,
    max_retries: int = MAX_RETRIES,
) -> dict[str, Any]:
    """Compute every unit of the evaluation on Ray and file the results in ``runner``'s caches.

    Returns the cluster description for the report's ``environment``.  ``progress`` gets one call
    when the tasks are known and one per finished task (``on_total`` the number of those calls + 1).
    """
    import ray

    tick = progress or (lambda _msg: None)
    started = connect(address)
    pending: dict[Any, UnitSpec] = {}
    try:
        env = cluster_environment()
        cuda = device.startswith("cuda")
        if cuda and env["gpus"] < gpus_per_task:
            raise ConfigError(f"--device {device}: the Ray cluster has {env['gpus']:g} GPUs")
        ctx = Context(
            runner.model,
            runner.images,
            runner.labels,
            runner.indices,
            runner.config,
            chains,
            model_ref,
            runner.source,
            runner.source_ref,
            device,
        )
        holder = [ray.put(ctx)]
        token = uuid.uuid4().hex
        remote = ray.remote(_task).options(
            num_cpus=1,
            num_gpus=gpus_per_task if cuda else 0,
            max_retries=max_retries,
            retry_exceptions=False,
        )
        plan = plan_units(runner, chains, threats)
        outstanding = {g: set(s) for g, s in plan.groups.items()}
        counts = {"submitted": 0, "cached": 0}
        spent = {"unit_seconds": 0.0, "unit_cpu_seconds": 0.0, "setup_seconds": 0.0}

        def submit(spec: UnitSpec, start: Row | None = None, start_ref: Any = None) -> None:
            if is_done(runner, chains, spec, start):
                counts["cached"] += 1
                settle(spec)
                return
            pending[remote.remote(token, holder, spec, start_ref)] = spec
            counts["submitted"] += 1

        def settle(spec: UnitSpec) -> None:
            for g in [g for g, left in outstanding.items() if spec in left]:
                outstanding[g].discard(spec)
                if not outstanding[g]:
                    del outstanding[g]
                    escalate(*g)

        def escalate(name: str, norm: str, eps: float) -> None:
            if not runner.config.escalate:
                return
            chain = chains[name]
            clean = runner.clean(name, chain)
            group = [runner.unit(name, chain, t, norm, eps, clean) for t in threats]
            src = decide(runner, chain, group)
            if src is None:
                return
            src_ref = ray.put(src)  # once, for every shard's task
            for k in range(len(runner.parts)):
                submit(
                    UnitSpec("attack", name, k, ESCALATION.name, norm, eps, ("apgd-ce", "pgd")), src, src_ref
                )
            if on_total is not None:
                on_total(counts["submitted"] + 1)

        for spec in plan.specs:
            if not is_done(runner, chains, spec, None):
                pending[remote.remote(token, holder, spec, None)] = spec
                counts["submitted"] += 1
        if on_total is not None:
            on_total(counts["submitted"] + 1)
        tick(
            f"ray: {counts['submitted']} units on {env['nodes']} nodes "
            f"({env['cpus']:g} CPUs), {len(plan.specs) - counts['submitted']} from the cache"
        )
        waiting = set(pending.values())
        for spec in plan.specs:
            if spec not in waiting:
                counts["cached"] += 1
                settle(spec)
        finished = 0
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                spec = pending.pop(ref)
                result: TaskResult = ray.get(ref)
                for key, state, array in result.entries:
                    runner.parts[spec.shard].cache.put(key, state, array)
                spent["unit_seconds"] += result.seconds
                spent["setup_seconds"] += result.setup_seconds
                spent["unit_cpu_seconds"] += result.cpu_seconds
                finished += 1
                tick(f"{spec.label()} ({finished}/{counts['submitted']})")
                settle(spec)
        env["units"] = counts["submitted"] + counts["cached"]
        env["units_from_cache"] = counts["cached"]
        env["max_retries"] = max_retries
        env.update({k: round(v, 3) for k, v in spent.items()})
        return env
    finally:
        for ref in pending:  # a failed run leaves nothing running on a cluster it joined
            ray.cancel(ref)
        if started:
            ray.shutdown()


def ray_config(config: Any, shard: int | None) -> Any:
    """``config`` with the shard size a Ray run uses: the given one, else :data:`DEFAULT_SHARD`."""
    return dataclasses.replace(config, shard=shard or config.shard or DEFAULT_SHARD)
