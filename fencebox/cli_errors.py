"""The command line's one error path: a project error is printed in red on stderr and the command exits 2.

Every command wraps its work in :func:`exit_on_error`; CLI and configuration mistakes raise
:class:`fencebox.errors.ConfigError`, so there is no other "catch, print, exit" in the code base.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.markup import escape

from fencebox.errors import FenceboxError

err_console = Console(stderr=True)
EXIT_ERROR = 2


def print_error(message: object) -> None:
    """Print an error in red on stderr; the message is shown literally (brackets are not rich markup)."""
    err_console.print(f"[bold red]error:[/] {escape(str(message))}")


@contextmanager
def exit_on_error() -> Iterator[None]:
    """Turn a :class:`FenceboxError` raised inside the block into a printed error and exit status 2."""
    try:
        yield
    except FenceboxError as exc:
        print_error(exc)
        raise typer.Exit(EXIT_ERROR) from None
