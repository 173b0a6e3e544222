"""``fencebox serve``: run the purifying inference proxy."""

from __future__ import annotations

from pathlib import Path

import typer

from fencebox.cli_errors import exit_on_error


def serve(
    config: Path | None = typer.Option(
        None, "--config", "-c", help="YAML file listing the routes (see docs/service.md)"
    ),
    host: str | None = typer.Option(None, "--host", help="address to listen on (default 127.0.0.1)"),
    port: int | None = typer.Option(None, "--port", help="port to listen on (default 8000)"),
    grpc_port: int | None = typer.Option(
        None, "--grpc-port", help="also serve the gRPC Open Inference Protocol on this port (default: off)"
    ),
) -> None:
    """Serve the routes of CONFIG (default: builtin:mnist as 'mnist' behind fencebox-default) over HTTP."""
    import uvicorn

    from fencebox.service import create_app, load_settings

    with exit_on_error():
        settings = load_settings(config, host=host, port=port, grpc_port=grpc_port)
    app = create_app(settings)
    # The app honours proxy headers itself, from settings.forwarded_allow_ips only; uvicorn's own
    # default would trust X-Forwarded-For from loopback (a fresh address per request: a fresh budget).
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        proxy_headers=False,
    )


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the fencebox command line."""
    app.command("serve")(serve)
