"""Soak test on loopback: steady mixed load for ``--seconds`` (default 600), bounded.

A ``fencebox serve`` process (built-in MNIST route, default limits) takes four closed-loop clients
sending a mix of valid images, hostile ones from scripts/make_attack_corpus.py (small set) and V2
requests.  Every ``--window`` seconds it prints the window's requests, 5xx count, p50/p99 of the
valid requests and the server's RSS; at the end the RSS slope (MB per minute, least squares over the
windows after the first) and the totals.  Goals: zero 5xx; flat RSS.

    python benchmarks/soak_service.py [--seconds 600] [--window 10]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import io
import json
import os
import random
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_overload import start_server  # noqa: E402


def _corpus() -> dict[str, tuple[str, bytes, dict[str, str]]]:
    spec = importlib.util.spec_from_file_location("corpus", ROOT / "scripts" / "make_attack_corpus.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return {k: v for k, v in mod.corpus(big=False).items() if "override" not in k}


async def soak(url: str, pid: int, seconds: float, window: float) -> None:
    """Run the clients and print one JSON line per window, then the summary."""
    rng = np.random.default_rng(0)
    valid = []
    for _ in range(8):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(buf, "PNG")
        valid.append(buf.getvalue())
    x = rng.integers(0, 256, (4, 28, 28, 1), dtype=np.uint8)
    v2 = json.dumps(
        {
            "inputs": [
                {"name": "input", "datatype": "UINT8", "shape": [4, 28, 28, 1], "data": x.ravel().tolist()}
            ]
        }
    ).encode()
    hostile = list(_corpus().values())
    proc = psutil.Process(pid)
    lat: list[float] = []
    counts = {"requests": 0, "5xx": 0}
    totals = {"requests": 0, "5xx": 0}
    stop = time.monotonic() + seconds

    async def client(i: int) -> None:
        rnd = random.Random(i)
        async with httpx.AsyncClient(base_url=url, timeout=60) as c:
            while time.monotonic() < stop:
                k = rnd.random()
                t = time.perf_counter()
                if k < 0.6:
                    r = await c.post("/v1/predict", content=rnd.choice(valid))
                elif k < 0.8:
                    r = await c.post("/v2/models/mnist/infer", content=v2)
                else:
                    ep, body, headers = rnd.choice(hostile)
                    r = await c.post(ep.replace("{model}", "mnist"), content=body, headers=headers)
                if k < 0.8 and r.status_code == 200:
                    lat.append(time.perf_counter() - t)
                counts["requests"] += 1
                counts["5xx"] += r.status_code >= 500

    async def report() -> list[tuple[float, float]]:
        rss: list[tuple[float, float]] = []
        t0 = time.monotonic()
        while time.monotonic() < stop:
            await asyncio.sleep(window)
            ms = np.asarray(lat) * 1000 if lat else np.asarray([np.nan])
            mb = proc.memory_info().rss / 2**20
            rss.append((time.monotonic() - t0, mb))
            print(
                json.dumps(
                    {
                        "t_s": round(time.monotonic() - t0),
                        **counts,
                        "p50_ms": round(float(np.percentile(ms, 50)), 2),
                        "p99_ms": round(float(np.percentile(ms, 99)), 2),
                        "rss_mb": round(mb, 1),
                    }
                ),
                flush=True,
            )
            for k in counts:
                totals[k] += counts[k]
                counts[k] = 0
            lat.clear()
        return rss

    rss, *_ = await asyncio.gather(report(), *(client(i) for i in range(4)))
    pts = np.asarray(rss[1:]) if len(rss) > 2 else np.asarray(rss)
    slope = float(np.polyfit(pts[:, 0] / 60.0, pts[:, 1], 1)[0]) if len(pts) >= 2 else float("nan")
    print(json.dumps({"seconds": seconds, **totals, "rss_slope_mb_per_min": round(slope, 2)}))


def main() -> None:
    """Start the server, soak it, stop it."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=600.0)
    p.add_argument("--window", type=float, default=10.0)
    a = p.parse_args()
    print(f"# load average {os.getloadavg()} on {os.cpu_count()} CPUs", flush=True)
    proc, url, _ = start_server(max_in_flight=64)
    try:
        asyncio.run(soak(url, proc.pid, a.seconds, a.window))
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
