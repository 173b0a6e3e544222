"""The FastAPI app factory: routes, JSON error handlers, metrics middleware, and a lifespan that
loads every route's chain and model before serving and releases them after."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

import fencebox
from fencebox.service.errors import install_handlers
from fencebox.service.metrics import Metrics, TimingMiddleware
from fencebox.service.routes_ui import pages as ui_pages
from fencebox.service.routes_ui import router as ui_router
from fencebox.service.routes_v1 import router as v1_router
from fencebox.service.routes_v2 import router as v2_router
from fencebox.service.runtime import Runtime
from fencebox.service.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service for ``settings`` (default: the built-in MNIST route behind fencebox-default).

    Models and chains load in the lifespan, so importing or building the app is cheap; the
    runtime lives on ``app.state.runtime``.
    """
    settings = settings or Settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime(settings, metrics)
        app.state.runtime = runtime
        try:
            await runtime.start()
            yield
        finally:
            await runtime.close()

    app = FastAPI(
        title="FenceBox",
        version=fencebox.__version__,
        description="A purifying inference proxy: every image passes through the route's purification "
        "chain before the model sees it, and the model answers only as much as the route's policy allows.",
        lifespan=lifespan,
    )
    install_handlers(app)
    app.include_router(v1_router)
    app.include_router(v2_router)
    app.include_router(ui_router)
    app.include_router(ui_pages)
    app.add_middleware(TimingMiddleware, metrics=metrics)
    return app
