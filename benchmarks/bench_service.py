"""Service benchmark on loopback: bounded load (fixed concurrency, fixed request count), side by side.

Every server is its own process, all started once and measured in interleaved rounds (a load spike
hits one round, not one row; the table shows medians):

- ``kserve``             KServe's Python ModelServer serving the model directly over HTTP (baseline);
- ``kserve-grpc``        the same server over its gRPC port (``enable_grpc``);
- ``proxy-none``         fencebox, chain ``none``, no keys, one image per upstream call (max_batch 1,
                         up to 64 calls in flight), proxying KServe over HTTP: the lean proxy;
- ``proxy-none-grpc``    the same over gRPC both ways (fencebox's gRPC port -> KServe's gRPC port);
- ``forward-floor``      a bare Python pass-through (uvicorn + raw ASGI + aiohttp, no parsing, no checks:
                         ``benchmarks/forward_floor.py``): the floor of any Python proxy, measured
                         like the proxy rows;
- ``proxy-none-batched`` fencebox ``none`` micro-batching the upstream calls (max_batch 32);
- ``proxy-default``      fencebox ``fencebox-default`` proxying KServe (one image per call);
- ``local-batched`` / ``local-unbatched``  fencebox's built-in backend with / without micro-batching.

Every request is one UINT8 28x28x1 image (V2 binary tensor data over HTTP, raw contents over gRPC).
The proxy rows are measured at concurrency 1, 8 and 32 against the direct KServe rows at the same
concurrency; the others at ``--concurrency``.  "proxy CPU" is the user+system time of the fencebox
process alone per request (``/proc/<pid>/stat``), without KServe's.  Printed ratios: proxy p50 /
direct p50 at each concurrency (goal <= 1.10 at concurrency 1), proxy CPU per request (goal
<= 1.5 ms), micro-batched / unbatched throughput (goal >= 2).

    python benchmarks/bench_service.py [--requests 600] [--repeat 3] [--model builtin:mnist]
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
from dataclasses import asdict, dataclass, field
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


def start_kserve(
    model: str, port: int, threads: int, grpc_port: int | None = None
) -> subprocess.Popen[bytes]:
    """KServe's ModelServer serving ``model`` as V2 model 'm' (also over gRPC when ``grpc_port`` is given)."""
    cmd = [sys.executable, "-m", "fencebox.service.kserve_upstream", "--model", model, "--name", "m"]
    cmd += ["--http_port", str(port), "--grpc_port", str(grpc_port or free_port())]
    cmd += ["--enable_latency_logging", "false", *(["--grpc"] if grpc_port else [])]
    return subprocess.Popen(cmd, env=_env(threads), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_fencebox(
    route: dict[str, Any],
    port: int,
    threads: int,
    torch_threads: int,
    tmp: Path,
    grpc_port: int | None = None,
) -> subprocess.Popen[bytes]:
    """``fencebox serve`` with one route named 'm' (and its gRPC port when ``grpc_port`` is given)."""
    import yaml

    cfg = tmp / f"fencebox-{port}.yaml"
    doc: dict[str, Any] = {"threads": threads, "log_level": "warning", "routes": [{"name": "m", **route}]}
    if grpc_port:
        doc["grpc_port"] = grpc_port
    cfg.write_text(yaml.safe_dump(doc))
    cmd = [sys.executable, "-m", "fencebox.cli", "serve", "--config", str(cfg), "--port", str(port)]
    return subprocess.Popen(
        cmd, env=_env(torch_threads), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def start_forward_floor(upstream: str, port: int) -> subprocess.Popen[bytes]:
    """The bare pass-through proxy (``benchmarks/forward_floor.py``) in front of ``upstream``."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "forward_floor.py"), "--upstream", upstream]
    cmd += ["--port", str(port)]
    return subprocess.Popen(cmd, env=_env(1), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


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


async def load_grpc(
    target: str, images: list[np.ndarray], concurrency: int, total: int, warmup: int
) -> Result:
    """Like :func:`load`, over the gRPC Open Inference Protocol (one channel, HTTP/2 multiplexed)."""
    import grpc
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    requests = []
    for im in images:
        req = pb.ModelInferRequest(model_name="m")
        req.inputs.add(name="input", datatype="UINT8", shape=list(im.shape))
        req.raw_input_contents.append(im.tobytes())
        requests.append(req)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        latencies: list[float] = []
        errors = 0
        counter = 0

        async def worker(n: int, record: bool) -> None:
            nonlocal counter, errors
            while counter < n:
                i = counter
                counter += 1
                t = time.perf_counter()
                try:
                    await stub.ModelInfer(requests[i % len(requests)], timeout=60)
                    ok = True
                except grpc.aio.AioRpcError:
                    ok = False
                if record:
                    latencies.append(time.perf_counter() - t)
                    errors += not ok

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


@dataclass
class Server:
    """A started server: where to send load, how, and whose CPU counts as the proxy's."""

    address: str
    proc: subprocess.Popen[bytes]
    grpc: bool = False


@dataclass
class Cell:
    """One measured configuration at one concurrency."""

    config: str
    concurrency: int
    runs: list[Result] = field(default_factory=list)


def _measure(server: Server, images: list[np.ndarray], concurrency: int, n: int, warmup: int) -> Result:
    """Warm up, then load ``server`` with ``n`` requests; the result's CPU is its process alone."""
    run = load_grpc if server.grpc else load
    asyncio.run(run(server.address, images, concurrency, warmup, 0))
    cpu0 = cpu_seconds([server.proc.pid])
    res = asyncio.run(run(server.address, images, concurrency, n, 0))
    res.cpu_ms_per_request = (cpu_seconds([server.proc.pid]) - cpu0) * 1000.0 / n
    return res


def main(argv: list[str] | None = None) -> dict[str, Result]:
    """Start every server, measure every cell in interleaved rounds, print the table and the ratios."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--model", default="builtin:mnist", help="fencebox model reference served by all backends")
    p.add_argument("--concurrency", type=int, default=32, help="concurrency of the non-proxy rows")
    p.add_argument(
        "--proxy-concurrency", type=int, nargs="+", default=[1, 8, 32], help="concurrencies of the proxy rows"
    )
    p.add_argument("--requests", type=int, default=600, help="requests per cell and round")
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--threads", type=int, default=2, help="worker threads per fencebox server")
    p.add_argument("--torch-threads", type=int, default=1, help="torch intra-op threads per server")
    p.add_argument("--local-chain", default="none", help="chain of the local-backend runs")
    p.add_argument("--only", nargs="*", help="run only these configurations (direct KServe rows always run)")
    p.add_argument("--repeat", type=int, default=3, help="interleaved rounds; the table shows medians")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (1, 28, 28, 1), dtype=np.uint8) for _ in range(64)]
    kport, kgrpc = free_port(), free_port()
    upstream = {
        "kind": "upstream",
        "url": f"http://127.0.0.1:{kport}",
        "upstream_model": "m",
        "input_shape": [28, 28, 1],
        "datatype": "UINT8",
    }
    upstream_grpc = {**upstream, "protocol": "grpc", "url": f"127.0.0.1:{kgrpc}"}
    lean = {"max_batch": 1, "workers": 64, "max_queue": 4096}  # no cap below the load: no queueing
    routes: dict[str, dict[str, Any]] = {
        "proxy-none": {"chain": "none", "backend": upstream, "batching": lean},
        "proxy-none-grpc": {"chain": "none", "backend": upstream_grpc, "batching": lean},
        "proxy-none-batched": {
            "chain": "none",
            "backend": upstream,
            "batching": {"max_batch": 32, "max_delay_ms": 2, "workers": 2, "max_queue": 4096},
        },
        "proxy-default": {"chain": "fencebox-default", "backend": upstream, "batching": lean},
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
        routes = {k: v for k, v in routes.items() if k in args.only}
    lean_rows = {"proxy-none": "kserve", "proxy-none-grpc": "kserve-grpc", "forward-floor": "kserve"}
    cells = [Cell(c, k) for c in ("kserve", "kserve-grpc") for k in args.proxy_concurrency]
    cells += [
        Cell(name, k)
        for name in routes
        for k in (args.proxy_concurrency if name in lean_rows else [args.concurrency])
    ]
    if args.concurrency not in args.proxy_concurrency:
        cells += [Cell(c, args.concurrency) for c in ("kserve", "kserve-grpc")]
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            kserve = start_kserve(args.model, kport, args.torch_threads, grpc_port=kgrpc)
            procs.append(kserve)
            servers = {
                "kserve": Server(f"http://127.0.0.1:{kport}", kserve),
                "kserve-grpc": Server(f"127.0.0.1:{kgrpc}", kserve, grpc=True),
            }
            if not args.only or "forward-floor" in args.only:
                port = free_port()
                floor = start_forward_floor(f"http://127.0.0.1:{kport}/v2/models/m/infer", port)
                procs.append(floor)
                servers["forward-floor"] = Server(f"http://127.0.0.1:{port}", floor)
                wait_ready(f"http://127.0.0.1:{port}", floor)
                cells += [Cell("forward-floor", k) for k in args.proxy_concurrency]
            for name, route in routes.items():
                port = free_port()
                gport = free_port() if name == "proxy-none-grpc" else None
                proc = start_fencebox(route, port, args.threads, args.torch_threads, Path(tmp), gport)
                procs.append(proc)
                address = f"127.0.0.1:{gport}" if gport else f"http://127.0.0.1:{port}"
                servers[name] = Server(address, proc, grpc=gport is not None)
                wait_ready(f"http://127.0.0.1:{port}", proc)
            wait_ready(servers["kserve"].address, kserve)
            for rnd in range(args.repeat):
                for cell in cells:
                    res = _measure(servers[cell.config], images, cell.concurrency, args.requests, args.warmup)
                    res.name = f"{cell.config}@{cell.concurrency}"
                    cell.runs.append(res)
                    print(f"  round {rnd + 1}: {res.name} {res.rps:.0f} req/s", file=sys.stderr, flush=True)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
    results = {f"{c.config}@{c.concurrency}": _median(c.runs) for c in cells}
    _report(results, args, lean_rows)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results.values()], indent=2))
    return results


def _report(results: dict[str, Result], args: argparse.Namespace, lean_rows: dict[str, str]) -> None:
    """Print the table and every ratio side by side."""
    print(
        f"\nmodel {args.model}, {args.requests} requests per cell, median of {args.repeat} interleaved "
        "rounds, loopback, one image per request"
    )
    print(
        f"{'configuration@concurrency':<28}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'CPU ms/req':>12}"
    )
    for r in results.values():
        print(
            f"{r.name:<28}{r.rps:>9.1f}{r.p50_ms:>9.2f}{r.p99_ms:>9.2f}{r.errors:>8}{r.cpu_ms_per_request:>12.2f}"
        )
    print("(CPU: user+system time per request of that server's process alone; kserve rows: KServe's)")
    print("\nlean proxy (chain none, no keys, one image per upstream call):")
    print(f"{'proxy':<18}{'concurrency':>12}{'p50 proxy/direct':>18}{'proxy CPU ms/req':>18}")
    for proxy, direct in lean_rows.items():
        for k in args.proxy_concurrency:
            pr, dr = results.get(f"{proxy}@{k}"), results.get(f"{direct}@{k}")
            if pr is None or dr is None:
                continue
            print(f"{proxy:<18}{k:>12}{pr.p50_ms / dr.p50_ms:>17.2f}x{pr.cpu_ms_per_request:>18.2f}")
    print("goals: p50 ratio <= 1.10x at concurrency 1; proxy CPU <= 1.5 ms per request")
    for k in args.proxy_concurrency:
        pr, fl = results.get(f"proxy-none@{k}"), results.get(f"forward-floor@{k}")
        if pr is not None and fl is not None:
            print(
                f"proxy-none over the bare pass-through at concurrency {k}: p50 {pr.p50_ms / fl.p50_ms:.2f}x, "
                f"CPU {pr.cpu_ms_per_request:.2f} vs {fl.cpu_ms_per_request:.2f} ms/request"
            )
    c = args.concurrency
    b, u = results.get(f"local-batched@{c}"), results.get(f"local-unbatched@{c}")
    if b is not None and u is not None:
        print(f"micro-batching throughput (local backend): {b.rps / u.rps:.2f}x unbatched  (goal >= 2x)")
    pb_, pn = results.get(f"proxy-none-batched@{c}"), results.get(f"kserve@{c}")
    if pb_ is not None and pn is not None:
        print(f"micro-batched proxy throughput: {pb_.rps / pn.rps:.2f}x direct KServe at concurrency {c}")


if __name__ == "__main__":
    main()
