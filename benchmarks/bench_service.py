"""Service benchmark on loopback: bounded load (fixed concurrency, fixed request count), side by side.

Runs, one after another, each as its own server process:

1. ``kserve``            KServe's Python ModelServer serving the model directly (the baseline);
2. ``proxy-none``        fencebox with chain ``none`` proxying that KServe server, one image per
                         upstream call, 4 calls in flight (proxy overhead);
   ``proxy-none-batched`` the same, micro-batching upstream calls (max_batch 32, 2 in flight);
3. ``proxy-default``     fencebox with ``fencebox-default`` proxying it (as proxy-none);
4. ``local-batched``     fencebox's built-in backend with micro-batching (max_batch 32);
5. ``local-unbatched``   the same without micro-batching (max_batch 1).

Every request is the same V2 inference request (one UINT8 28x28x1 image, binary tensor data), so
all five speak the same protocol.  Prints req/s, p50 and p99 per configuration and the two target
ratios (proxy overhead at p50; batched / unbatched throughput).

    python benchmarks/bench_service.py --concurrency 32 --requests 2000 [--model builtin:mnist]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Result:
    """One configuration's measurement."""

    name: str
    requests: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_ms_per_request: float = 0.0


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time so far of the given processes (Linux /proc), in seconds."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(threads: int) -> dict[str, str]:
    path = os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])
    return {
        **os.environ,
        "PYTHONPATH": path,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
    }


def start_kserve(model: str, port: int, threads: int) -> subprocess.Popen[bytes]:
    """KServe's ModelServer serving ``model`` as V2 model 'm'."""
    cmd = [sys.executable, "-m", "fencebox.service.kserve_upstream", "--model", model, "--name", "m"]
    cmd += ["--http_port", str(port), "--grpc_port", str(free_port()), "--enable_latency_logging", "false"]
    return subprocess.Popen(cmd, env=_env(threads), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_fencebox(
    route: dict[str, Any], port: int, threads: int, torch_threads: int, tmp: Path
) -> subprocess.Popen[bytes]:
    """``fencebox serve`` with one route named 'm'."""
    import yaml

    cfg = tmp / f"fencebox-{port}.yaml"
    cfg.write_text(
        yaml.safe_dump({"threads": threads, "log_level": "warning", "routes": [{"name": "m", **route}]})
    )
    cmd = [sys.executable, "-m", "fencebox.cli", "serve", "--config", str(cfg), "--port", str(port)]
    return subprocess.Popen(
        cmd, env=_env(torch_threads), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    """Poll the V2 model-ready endpoint until it answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server for {url} exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/v2/models/m/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{url} did not become ready")


def v2_request(image: np.ndarray) -> tuple[bytes, dict[str, str]]:
    """One binary V2 request holding ``image`` (1, H, W, C) uint8."""
    head = {
        "inputs": [
            {
                "name": "input",
                "datatype": "UINT8",
                "shape": list(image.shape),
                "parameters": {"binary_data_size": image.nbytes},
            }
        ],
        "parameters": {"binary_data_output": True},
    }
    header = json.dumps(head).encode()
    return header + image.tobytes(), {
        "inference-header-content-length": str(len(header)),
        "content-type": "application/octet-stream",
    }


async def load(url: str, images: list[np.ndarray], concurrency: int, total: int, warmup: int) -> Result:
    """Send ``total`` requests with ``concurrency`` in flight; latencies per request.

    The load generator uses aiohttp (installed with kserve): it costs about a quarter of httpx's
    client CPU per request, which matters when client and servers share a few cores.
    """
    import aiohttp

    bodies = [v2_request(im) for im in images]
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as client:
        latencies: list[float] = []
        errors = 0
        counter = 0
        target = f"{url}/v2/models/m/infer"

        async def worker(n: int, record: bool) -> None:
            nonlocal counter, errors
            while True:
                i = counter
                if i >= n:
                    return
                counter += 1
                body, headers = bodies[i % len(bodies)]
                t = time.perf_counter()
                async with client.post(target, data=body, headers=headers) as r:
                    await r.read()
                    status = r.status
                if record:
                    latencies.append(time.perf_counter() - t)
                    if status != 200:
                        errors += 1

        if warmup:
            await asyncio.gather(*(worker(warmup, False) for _ in range(concurrency)))
            counter = 0
        start = time.perf_counter()
        await asyncio.gather(*(worker(total, True) for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    lat = np.array(latencies) * 1000.0
    return Result(
        "",
        total,
        errors,
        elapsed,
        total / elapsed,
        float(np.percentile(lat, 50)),
        float(np.percentile(lat, 99)),
    )


def _median(runs: list[Result]) -> Result:
    """Per-metric median over repeated runs of one configuration."""

    def med(attr: str) -> float:
        return float(np.median([getattr(r, attr) for r in runs]))

    r0 = runs[0]
    return Result(
        r0.name,
        r0.requests,
        sum(r.errors for r in runs),
        med("seconds"),
        med("rps"),
        med("p50_ms"),
        med("p99_ms"),
        med("cpu_ms_per_request"),
    )


def main(argv: list[str] | None = None) -> list[Result]:
    """Run every configuration and print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--model", default="builtin:mnist", help="fencebox model reference served by all backends")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--threads", type=int, default=2, help="worker threads per fencebox server")
    p.add_argument("--torch-threads", type=int, default=1, help="torch intra-op threads per server")
    p.add_argument("--local-chain", default="none", help="chain of the local-backend runs")
    p.add_argument("--only", nargs="*", help="run only these configurations")
    p.add_argument("--repeat", type=int, default=3, help="interleaved rounds; the table shows medians")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (1, 28, 28, 1), dtype=np.uint8) for _ in range(64)]
    kport = free_port()
    kurl = f"http://127.0.0.1:{kport}"
    upstream = {
        "kind": "upstream",
        "url": kurl,
        "upstream_model": "m",
        "input_shape": [28, 28, 1],
        "datatype": "UINT8",
    }
    proxy_batching = {"max_batch": 1, "workers": 4, "max_queue": 4096}
    configs: dict[str, dict[str, Any] | None] = {
        "kserve": None,
        "proxy-none": {"chain": "none", "backend": upstream, "batching": proxy_batching},
        "proxy-none-batched": {
            "chain": "none",
            "backend": upstream,
            "batching": {"max_batch": 32, "max_delay_ms": 2, "workers": 2, "max_queue": 4096},
        },
        "proxy-default": {"chain": "fencebox-default", "backend": upstream, "batching": proxy_batching},
        "local-batched": {
            "chain": args.local_chain,
            "backend": {"kind": "local", "model": args.model},
            "batching": {"max_batch": 32, "max_delay_ms": 2, "max_queue": 4096},
        },
        "local-unbatched": {
            "chain": args.local_chain,
            "backend": {"kind": "local", "model": args.model},
            "batching": {"max_batch": 1, "max_queue": 4096},
        },
    }
    if args.only:
        configs = {k: v for k, v in configs.items() if k in args.only or k == "kserve"}
    results: list[Result] = []
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            kserve = start_kserve(args.model, kport, args.torch_threads)
            procs.append(kserve)
            servers: dict[str, tuple[str, subprocess.Popen[bytes]]] = {"kserve": (kurl, kserve)}
            for name, route in configs.items():
                if route is None:
                    continue
                port = free_port()
                proc = start_fencebox(route, port, args.threads, args.torch_threads, Path(tmp))
                procs.append(proc)
                servers[name] = (f"http://127.0.0.1:{port}", proc)
            for url, proc in servers.values():
                wait_ready(url, proc)
            runs: dict[str, list[Result]] = {name: [] for name in configs}
            for rnd in range(args.repeat):  # interleaved rounds: a load spike hits one round, not one row
                for name in configs:
                    url, proc = servers[name]
                    pids = [proc.pid] if name == "kserve" or "local" in name else [proc.pid, kserve.pid]
                    asyncio.run(load(url, images, args.concurrency, args.warmup, 0))  # warm-up
                    cpu0 = cpu_seconds(pids)
                    res = asyncio.run(load(url, images, args.concurrency, args.requests, 0))
                    res.cpu_ms_per_request = (cpu_seconds(pids) - cpu0) * 1000.0 / args.requests
                    res.name = name
                    runs[name].append(res)
                    print(f"  round {rnd + 1}: {name} {res.rps:.0f} req/s", file=sys.stderr, flush=True)
            results = [_median(rs) for rs in runs.values()]
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()

    print(
        f"\nmodel {args.model}, concurrency {args.concurrency}, {args.requests} requests each, "
        f"median of {args.repeat} interleaved rounds, loopback, V2 binary"
    )
    print(
        f"{'configuration':<20}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'server CPU ms/req':>19}"
    )
    for r in results:
        print(
            f"{r.name:<20}{r.rps:>9.1f}{r.p50_ms:>9.2f}{r.p99_ms:>9.2f}{r.errors:>8}{r.cpu_ms_per_request:>19.2f}"
        )
    print("(server CPU: the serving processes' user+system time per request; proxied rows include KServe's)")
    by = {r.name: r for r in results}
    if "kserve" in by and "proxy-none" in by:
        over = by["proxy-none"].p50_ms / by["kserve"].p50_ms - 1
        print(f"proxy overhead (chain none) at p50: {over * 100:+.1f}%  (target <= +10%)")
    if "local-batched" in by and "local-unbatched" in by:
        ratio = by["local-batched"].rps / by["local-unbatched"].rps
        print(f"micro-batching throughput: {ratio:.2f}x unbatched  (target >= 2x)")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return results


if __name__ == "__main__":
    main()
