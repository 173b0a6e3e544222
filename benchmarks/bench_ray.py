"""Benchmark: the same evaluation run locally and as Ray tasks on a local 2-worker Ray (2 cores).

One job of >= 40 units: ``builtin:mnist`` on ``builtin:mnist-test``, N examples in shards of SHARD,
threats oblivious + BPDA, two ε, FGSM + PGD; every (chain, threat, norm, ε, shard) is a unit, plus
each shard's clean accuracy and the checks' PGD units.  Both runs use the same shards, so their
reports agree (checked here, timings and ``environment`` aside).

Measured (wall clock, ``time.perf_counter``):

- ``local_s``: the plain in-process run, the faster of torch's default threads (both cores:
  ``local_threads_s``) and one thread (``local_1thread_s``, what each Ray task gets);
- ``ray_s``: the Ray run from ``ray.init`` to the report; ``ray_units_s`` its unit phase (the tasks,
  until the driver starts scoring), ``ray_start_s`` the local Ray's start-up and ``ray_warm_s`` the
  two workers' first import of fencebox and torch (a fixed cost per worker process);
- ``speedup`` = local_s / (ray_s - ray_start_s - ray_warm_s): the evaluation on 2 warm workers
  (``speedup_with_start`` counts the start-up and warm-up too);
- ``overhead_per_unit_ms``: scheduling overhead per unit: the time the 2 workers were not inside a
  task body during the unit phase, ``(2 x ray_units_s - unit_seconds) / units`` (``unit_seconds``:
  the task bodies' own time, reported by the tasks); it holds Ray's scheduling, argument and result
  transfer, and starting worker processes; ``setup_per_unit_ms`` is the tasks' own start-up (loading
  model and data from the object store, once per worker process) spread over the units;
- ``empty_task_ms``: one empty Ray task's round trip on the same Ray, as a floor;
- ``local_cpu_s_by_threads`` (the local run's process CPU time) against ``ray_units_cpu_s`` (the
  task bodies' CPU time) and ``cluster.unit_seconds`` (their wall time): on a loaded machine the
  tasks do the same work and the difference is time spent waiting for a core.

Run it where Ray cannot reach the network, e.g. ``unshare -n sh -c 'ip link set lo up && python
benchmarks/bench_ray.py'`` as root (Ray binds to loopback here anyway).  The machine's load average is
printed with the numbers: on a shared machine they are lower bounds of what an idle one gives.

Usage: ``python benchmarks/bench_ray.py [--n 80] [--shard 8] [--steps 100] [--local-threads 0,1]``
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import torch

from fencebox.harness import Data, EvalConfig, Options, run_evaluation
from fencebox.models import load_dataset, load_model
from fencebox.spec import load_chain


def _comparable(doc: dict[str, Any]) -> str:
    d = json.loads(json.dumps(doc))
    d.pop("environment")
    for r in d["results"]:
        r.pop("seconds")
        for a in r["attacks"]:
            a.pop("seconds")
    for c in d["chains"]:
        c.pop("latency_ms_per_image")
    return json.dumps(d, sort_keys=True)


def main() -> None:
    """Run the job locally, then on a local 2-CPU Ray; print the timings as JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=80)
    ap.add_argument("--shard", type=int, default=8)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument(
        "--local-threads", default="0,1", help="torch threads of the local runs (0: torch's default)"
    )
    args = ap.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    images, labels = load_dataset("builtin:mnist-test")
    images, labels = images[: args.n], labels[: args.n]
    model = load_model("builtin:mnist")
    chains = {"jpeg": load_chain("guo2018-jpeg")}
    cfg = EvalConfig.fast(
        attacks=["fgsm", "pgd"], eps=[0.1, 0.2], steps=args.steps, check_n=16, shard=args.shard
    )
    threats = ["oblivious", "bpda"]
    load_before = os.getloadavg()

    local_times, local_docs, local_cpu = {}, {}, {}
    threads = torch.get_num_threads()
    for n_threads in [int(t) or threads for t in args.local_threads.split(",")]:
        torch.set_num_threads(n_threads)
        t0, c0 = time.perf_counter(), time.process_time()
        local = run_evaluation(model, chains, Data(images, labels), cfg, Options(threats=threats))
        local_times[n_threads] = time.perf_counter() - t0
        local_cpu[n_threads] = time.process_time() - c0
        local_docs[n_threads] = _comparable(local)
    torch.set_num_threads(threads)
    local_s = min(local_times.values())

    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", configure_logging=False)
    ray_start_s = time.perf_counter() - t0

    @ray.remote(num_cpus=1)
    def warm() -> None:
        import fencebox.harness.distributed  # noqa: F401  (what a unit's worker imports first)

        time.sleep(0.5)  # both workers busy at once, so both start

    t1 = time.perf_counter()
    ray.get([warm.remote() for _ in range(2)])
    ray_warm_s = time.perf_counter() - t1
    marks: dict[str, float] = {}

    def progress(msg: str) -> None:
        if msg.startswith("ray:"):
            marks["units"] = time.perf_counter()
        if msg.startswith("scoring"):
            marks["driver"] = time.perf_counter()

    doc = run_evaluation(
        model, chains, Data(images, labels), cfg, Options(threats=threats, ray="auto"), progress
    )
    done = time.perf_counter()
    ray_s = done - t0
    ray_units_s = marks["driver"] - marks["units"]
    driver_s = done - marks["driver"]

    @ray.remote(num_cpus=1)
    def empty() -> None:
        return None

    ray.get([empty.remote() for _ in range(8)])
    t1 = time.perf_counter()
    ray.get([empty.remote() for _ in range(100)])
    empty_task_ms = (time.perf_counter() - t1) / 100 * 1000
    ray.shutdown()

    cluster = doc["environment"]["cluster"]
    units = cluster["units"]
    print(
        json.dumps(
            {
                "model": "builtin:mnist",
                "chain": "guo2018-jpeg",
                "n": args.n,
                "shard": args.shard,
                "steps": args.steps,
                "units": units,
                "same_report": all(d == _comparable(doc) for d in local_docs.values()),
                "cluster": doc["environment"]["cluster"],
                "local_s": round(local_s, 2),
                "local_s_by_threads": {k: round(v, 2) for k, v in local_times.items()},
                "local_cpu_s_by_threads": {k: round(v, 2) for k, v in local_cpu.items()},
                "ray_units_cpu_s": cluster["unit_cpu_seconds"],
                "ray_s": round(ray_s, 2),
                "ray_start_s": round(ray_start_s, 2),
                "ray_warm_s": round(ray_warm_s, 2),
                "ray_units_s": round(ray_units_s, 2),
                "driver_s": round(driver_s, 2),
                "speedup": round(local_s / (ray_s - ray_start_s - ray_warm_s), 2),
                "speedup_with_start": round(local_s / ray_s, 2),
                "overhead_per_unit_ms": round((2 * ray_units_s - cluster["unit_seconds"]) / units * 1000, 1),
                "setup_per_unit_ms": round(cluster["setup_seconds"] / units * 1000, 1),
                "empty_task_ms": round(empty_task_ms, 2),
                "torch_threads_default": threads,
                "cpus": os.cpu_count(),
                "loadavg_before": [round(x, 2) for x in load_before],
                "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
