"""What hostile requests cost the service (issue 11 goals), measured on loopback, bounded.

1. Per attack class of scripts/make_attack_corpus.py, on the default MNIST route with the default
   limits: status, process CPU seconds and peak extra RSS of one request, each in a fresh process
   (the app in-process over ASGI; RSS sampled every millisecond by a thread).
   Goals: 12 Mpx phone JPEG to /v1/predict <= 150 ms CPU; the 4096^2 all-zero RGBA PNG <= 300 ms CPU
   and <= 100 MB extra RSS.
2. Liveness under hostile bodies: a real uvicorn server whose route admits 12 MB V2 bodies, four
   clients sending 10 MB nested-list JSON bodies in a loop for ``--seconds``, while a probe asks
   ``/v2/health/live`` every 20 ms.  Goal: p99 < 100 ms.

    python benchmarks/bench_hostile.py [--seconds 20] [--only costs|liveness]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _corpus() -> object:
    spec = importlib.util.spec_from_file_location("corpus", ROOT / "scripts" / "make_attack_corpus.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def one_case(name: str) -> dict[str, object]:
    """Run one corpus entry against a fresh app in this process; status, CPU s, peak extra RSS MB."""
    import httpx

    from fencebox.service import create_app
    from fencebox.service.settings import RouteConfig, Settings

    endpoint, body, headers = _corpus().corpus()[name]  # type: ignore[attr-defined]
    endpoint = endpoint.replace("{model}", "mnist")
    settings = Settings(routes=[RouteConfig(name="mnist", allow_chain_override=True)])
    app = create_app(settings)

    async def run() -> dict[str, object]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://b", timeout=120) as c:
                import io

                from PIL import Image

                warm = io.BytesIO()
                Image.new("L", (28, 28)).save(warm, "PNG")
                for _ in range(3):
                    await c.post("/v1/predict", content=warm.getvalue())
                base = _rss()
                peak = [base]
                done = threading.Event()

                def sample() -> None:
                    while not done.is_set():
                        peak[0] = max(peak[0], _rss())
                        time.sleep(0.001)

                t = threading.Thread(target=sample, daemon=True)
                t.start()
                cpu, wall = time.process_time(), time.perf_counter()
                r = await c.post(endpoint, content=body, headers=headers)
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                done.set()
                t.join()
                return {
                    "case": name,
                    "status": r.status_code,
                    "cpu_ms": round(cpu * 1000, 1),
                    "wall_ms": round(wall * 1000, 1),
                    "extra_rss_mb": round((peak[0] - base) / 2**20, 1),
                    "bytes": len(body),
                }

    return asyncio.run(run())


def costs() -> list[dict[str, object]]:
    """Every corpus entry, each in a fresh subprocess."""
    rows = []
    for name in _corpus().corpus():  # type: ignore[attr-defined]
        out = subprocess.run(
            [sys.executable, __file__, "--case", name],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            timeout=300,
        )
        line = (
            out.stdout.strip().splitlines()[-1]
            if out.stdout.strip()
            else json.dumps({"case": name, "error": out.stderr[-300:]})
        )
        rows.append(json.loads(line))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def liveness(seconds: float) -> dict[str, object]:
    """p50/p99/max of /v2/health/live while four clients send 10 MB V2 JSON bodies.

    The server runs in its own process (``fencebox serve``), so the clients' own GIL does not count.
    """
    import httpx
    import numpy as np

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_overload import start_server

    big = _corpus().nested_v2_body(10.0)  # type: ignore[attr-defined]
    lat: list[float] = []
    sent = [0]
    proc, url, _ = start_server(64, ", max_v2_body_bytes: 12000000", pin=False)
    try:
        stop = time.monotonic() + seconds

        def flood() -> None:
            with httpx.Client(base_url=url, timeout=120) as c:
                while time.monotonic() < stop:
                    c.post("/v2/models/mnist/infer", content=big)
                    sent[0] += 1

        threads = [threading.Thread(target=flood) for _ in range(4)]
        for t in threads:
            t.start()
        with httpx.Client(base_url=url, timeout=30) as probe:
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                probe.get("/v2/health/live")
                lat.append(time.perf_counter() - t0)
                time.sleep(0.02)
        for t in threads:
            t.join()
    finally:
        proc.terminate()
        proc.wait(10)
    ms = np.asarray(lat) * 1000
    return {
        "probes": len(lat),
        "bodies_10mb_answered": sent[0],
        "live_p50_ms": round(float(np.percentile(ms, 50)), 2),
        "live_p99_ms": round(float(np.percentile(ms, 99)), 2),
        "live_max_ms": round(float(ms.max()), 2),
    }


def main() -> None:
    """Run the selected parts and print JSON lines."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--only", choices=["costs", "liveness"])
    p.add_argument("--case", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.case:
        print(json.dumps(one_case(a.case)))
        return
    print(f"# load average at start: {os.getloadavg()} on {os.cpu_count()} CPUs", flush=True)
    if a.only in (None, "costs"):
        costs()
    if a.only in (None, "liveness"):
        print(json.dumps(liveness(a.seconds)), flush=True)


if __name__ == "__main__":
    main()
