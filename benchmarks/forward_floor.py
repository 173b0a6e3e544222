"""The floor of any Python HTTP proxy: a bare pass-through, for ``bench_service.py`` to compare against.

uvicorn (httptools, as ``fencebox serve`` runs it) with a raw ASGI app that reads the request body,
POSTs it unchanged to the upstream's V2 infer URL over one pooled aiohttp session, and answers the
upstream's bytes: no routing framework, no parsing, no checks, no metrics.  Whatever FenceBox adds
over this row is its own cost; what this row adds over calling the upstream directly is the cost of
one more Python hop, which no feature work can remove.

    python benchmarks/forward_floor.py --upstream http://127.0.0.1:8080/v2/models/m/infer --port 9000
"""

from __future__ import annotations

import argparse
from typing import Any


def make_app(upstream: str) -> Any:
    """A raw ASGI app forwarding every POST body to ``upstream`` and answering its status and bytes."""
    import aiohttp

    session: dict[str, aiohttp.ClientSession] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    session["s"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await session["s"].close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if scope["method"] == "GET":  # readiness probe of the benchmark
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})
            return
        chunks = []
        more = True
        while more:
            msg = await receive()
            chunks.append(msg.get("body", b""))
            more = msg.get("more_body", False)
        headers = {k.decode(): v.decode() for k, v in scope["headers"] if k.lower().startswith(b"inference-")}
        headers["content-type"] = "application/octet-stream"
        async with session["s"].post(upstream, data=b"".join(chunks), headers=headers) as r:
            body = await r.read()
            out = [
                (k.lower().encode(), v.encode())
                for k, v in r.headers.items()
                if k.lower().startswith("inference-")
            ]
            out.append((b"content-type", r.headers.get("content-type", "application/json").encode()))
            await send({"type": "http.response.start", "status": r.status, "headers": out})
            await send({"type": "http.response.body", "body": body})

    return app


def main() -> None:
    """Serve the pass-through on loopback."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--upstream", required=True, help="the upstream's V2 infer URL")
    p.add_argument("--port", type=int, required=True)
    a = p.parse_args()
    import uvicorn

    uvicorn.run(make_app(a.upstream), host="127.0.0.1", port=a.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
