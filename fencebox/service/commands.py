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
) -> None:
    """Serve the routes of CONFIG (default: builtin:mnist as 'mnist' behind fencebox-default) over HTTP."""
    import uvicorn

    from fencebox.service import create_app, load_settings

    with exit_on_error():
        settings = load_settings(config, host=host, port=port)
    app = create_app(settings)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level, access_log=False)


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the fencebox command line."""
    app.command("serve")(serve)
