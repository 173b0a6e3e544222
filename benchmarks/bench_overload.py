"""Overload on loopback: goodput and latency with the per-route admission limit, bounded in time.

The server (``fencebox`` with the built-in MNIST route behind ``fencebox-default``) runs pinned to
CPU 0 and this load generator pinned to CPU 1 (``taskset``; both stated in the output).  Clients
are closed loops posting a 28x28 PNG to ``/v1/predict``; after a 503 a client waits what Retry-After
says (as well-behaved clients do; retrying at once would measure the generator's own CPU instead).

1. Without an admission limit: goodput (200s per second) at concurrency 1, 2, 4, ... ; the
   saturating concurrency C is the smallest reaching 90% of the peak; unloaded p99 at 1.
2. With ``limits.max_in_flight = C``: 1x, 4x and 16x C.  Goals: goodput at 16x >= 80% of the peak;
   admitted requests' p99 <= 3x the unloaded p99; 503 + Retry-After in < 10 ms p99 server-side
   (``fencebox_refusal_seconds`` from /metrics).

    python benchmarks/bench_overload.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SERVER_CPU, CLIENT_CPU = 0, 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    max_in_flight: int, extra_limits: str = "", pin: bool = True
) -> tuple[subprocess.Popen[bytes], str, Path]:
    """fencebox serve (taskset to SERVER_CPU when ``pin``) with one mnist route -> (process, url, config)."""
    port = _free_port()
    cfg = Path(tempfile.mkdtemp()) / "overload.yaml"
    cfg.write_text(
        "routes:\n"
        "  - name: mnist\n"
        "    backend: {kind: local, model: 'builtin:mnist'}\n"
        "    chain: fencebox-default\n"
        f"    limits: {{max_in_flight: {max_in_flight}{extra_limits}}}\n"
        "    batching: {max_queue: 100000}\n"
        "threads: 2\nmodel_threads: 1\nlog_level: warning\n"
    )
    cmd = [sys.executable, "-m", "fencebox.cli", "serve", "--config", str(cfg), "--port", str(port)]
    if pin and shutil.which("taskset"):
        cmd = ["taskset", "-c", str(SERVER_CPU), *cmd]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/v2/health/ready", timeout=1).status_code == 200:
                return proc, url, cfg
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not start: " + (proc.stderr.read().decode() if proc.stderr else ""))


async def load(url: str, concurrency: int, seconds: float, body: bytes) -> dict[str, float]:
    """Closed-loop clients for ``seconds``: goodput and latency of admitted and refused requests."""
    ok: list[float] = []
    refused: list[float] = []
    other = 0
    stop = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as c:

        async def worker() -> None:
            nonlocal other
            while time.monotonic() < stop:
                t = time.perf_counter()
                r = await c.post("/v1/predict", content=body, headers={"content-type": "image/png"})
                dt = time.perf_counter() - t
                if r.status_code == 200:
                    ok.append(dt)
                elif r.status_code == 503:
                    refused.append(dt)
                    await asyncio.sleep(min(float(r.headers.get("retry-after", "1")), 1.0))
                else:
                    other += 1

        t0 = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.monotonic() - t0

    def p(xs: list[float], q: float) -> float:
        return round(float(np.percentile(np.asarray(xs) * 1000, q)), 2) if xs else float("nan")

    return {
        "concurrency": concurrency,
        "goodput_rps": round(len(ok) / elapsed, 1),
        "ok": len(ok),
        "refused_503": len(refused),
        "other": other,
        "ok_p50_ms": p(ok, 50),
        "ok_p99_ms": p(ok, 99),
        "refused_p99_ms_client": p(refused, 99),
    }


def refusal_p99_ms(url: str) -> float:
    """p99 of the server-side 503 histogram (bucket upper bound), from /metrics."""
    text = httpx.get(url + "/metrics").text
    buckets = []
    for line in text.splitlines():
        if line.startswith('fencebox_refusal_seconds_bucket{le="') and 'status="503"' in line:
            le = line.split('le="')[1].split('"')[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
    if not buckets or buckets[-1][1] == 0:
        return float("nan")
    total = buckets[-1][1]
    for le, count in sorted(buckets):
        if count >= 0.99 * total:
            return le * 1000
    return float("nan")


def main() -> None:
    """Run both phases and print JSON lines plus the goals."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=5.0)
    a = p.parse_args()
    if shutil.which("taskset") and os.environ.get("FENCEBOX_PINNED") != "1":
        os.execvpe(
            "taskset",
            ["taskset", "-c", str(CLIENT_CPU), sys.executable, *sys.argv],
            {**os.environ, "FENCEBOX_PINNED": "1"},
        )
    print(
        f"# server pinned to CPU {SERVER_CPU} (taskset), load generator pinned to CPU(s) "
        f"{sorted(os.sched_getaffinity(0))}; load average {os.getloadavg()} on {os.cpu_count()} CPUs",
        flush=True,
    )
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)).save(buf, "PNG")
    body = buf.getvalue()

    proc, url, _ = start_server(max_in_flight=100_000)
    try:
        sweep = []
        for c in (1, 2, 4, 8, 16):
            r = asyncio.run(load(url, c, a.seconds, body))
            print(json.dumps({"phase": "no-admission-limit", **r}), flush=True)
            sweep.append(r)
    finally:
        proc.terminate()
        proc.wait(10)
    peak = max(r["goodput_rps"] for r in sweep)
    sat = next(int(r["concurrency"]) for r in sweep if r["goodput_rps"] >= 0.9 * peak)
    unloaded_p99 = sweep[0]["ok_p99_ms"]
    print(
        json.dumps({"peak_goodput_rps": peak, "saturating_concurrency": sat, "unloaded_p99_ms": unloaded_p99})
    )

    proc, url, _ = start_server(max_in_flight=sat)
    try:
        results = {}
        for mult in (1, 4, 16):
            r = asyncio.run(load(url, sat * mult, a.seconds, body))
            results[mult] = r
            print(json.dumps({"phase": f"admission-limit-{sat}", "multiple": mult, **r}), flush=True)
        server_p99 = refusal_p99_ms(url)
    finally:
        proc.terminate()
        proc.wait(10)
    r16 = results[16]
    worst_p99 = max(r["ok_p99_ms"] for r in results.values())
    print(
        json.dumps(
            {
                "goodput_16x_over_peak": round(r16["goodput_rps"] / peak, 3),
                "goal_goodput": ">= 0.8",
                "admitted_p99_over_unloaded": round(worst_p99 / unloaded_p99, 2),
                "goal_p99": "<= 3",
                "refusal_503_p99_ms_server_side": server_p99,
                "goal_refusal": "< 10",
            }
        )
    )


if __name__ == "__main__":
    main()
