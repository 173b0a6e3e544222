"""The FastAPI app factory: routers, JSON error handlers, middleware, and a lifespan that loads every
route's chain and model before serving and releases them after."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

import fencebox
from fencebox.errors import ConfigError
from fencebox.service.errors import install_handlers
from fencebox.service.gate import AdmissionGate
from fencebox.service.metrics import Metrics, TimingMiddleware
from fencebox.service.routes_ops import router as ops_router
from fencebox.service.routes_ui import pages as ui_pages
from fencebox.service.routes_ui import router as ui_router
from fencebox.service.routes_v1 import router as v1_router
from fencebox.service.routes_v2 import router as v2_router
from fencebox.service.runtime import Runtime
from fencebox.service.settings import Settings

if TYPE_CHECKING:
    from fencebox.service.grpc_server import GrpcServer


def _grpc_server(runtime: Runtime, settings: Settings) -> GrpcServer:
    """The gRPC server for ``grpc_port`` (imported here: grpcio is an optional extra)."""
    try:
        from fencebox.service.grpc_server import GrpcServer
    except ImportError as exc:
        raise ConfigError(
            f"grpc_port is set but gRPC support is not installed ({exc}): pip install 'fencebox[grpc]'"
        ) from None
    assert settings.grpc_port is not None
    return GrpcServer(runtime, settings.host, settings.grpc_port)


class HeadAsGet:
    """Answer ``HEAD`` on every GET endpoint: run it as GET and send the headers without the body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Rewrite HEAD to GET and drop the response body (keeping its Content-Length)."""
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service for ``settings`` (default: the built-in MNIST route behind fencebox-default).

    Models and chains load in the lifespan, so importing or building the app is cheap; the
    runtime lives on ``app.state.runtime``.  Proxy headers (X-Forwarded-For/-Proto) are honoured
    only from ``settings.forwarded_allow_ips`` (default: from no one).  With ``grpc_port`` set, the
    lifespan also serves the gRPC Open Inference Protocol on the same event loop (its bound port:
    ``app.state.grpc_port``).
    """
    settings = settings or Settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime(settings, metrics)
        app.state.runtime = runtime
        grpc_server = None
        try:
            await runtime.start()
            if settings.grpc_port is not None:
                grpc_server = _grpc_server(runtime, settings)
                app.state.grpc_port = await grpc_server.start()
            yield
        finally:
            if grpc_server is not None:
                await grpc_server.stop()
            await runtime.close()

    app = FastAPI(
        title="FenceBox",
        version=fencebox.__version__,
        description="A purifying inference proxy: every image passes through the route's purification "
        "chain before the model sees it, and the model answers only as much as the route's policy allows.",
        lifespan=lifespan,
    )
    install_handlers(app)
    app.include_router(ops_router)
    app.include_router(v1_router)
    app.include_router(v2_router)
    app.include_router(ui_router)
    app.include_router(ui_pages)
    app.add_middleware(HeadAsGet)
    app.add_middleware(AdmissionGate)
    app.add_middleware(TimingMiddleware, metrics=metrics)
    if settings.forwarded_allow_ips:
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=list(settings.forwarded_allow_ips))
    return app
