"""The ``fencebox`` command line: transforms, presets, purify, and the commands each subpackage adds.

Subpackages add commands through a ``commands`` module exposing ``register(app)``
(``fencebox.models.commands`` adds ``train``, ``fencebox.service.commands`` adds ``serve``,
``fencebox.harness.commands`` adds ``evaluate``).
"""

from __future__ import annotations

import importlib
import importlib.util

import typer

app = typer.Typer(
    name="fencebox",
    help="Input purification in front of image classifiers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

from fencebox import cli_core  # noqa: E402  (registers transforms, presets, purify)

cli_core.register(app)


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


for _module in ("fencebox.models.commands", "fencebox.service.commands", "fencebox.harness.commands"):
    if _has_module(_module):
        importlib.import_module(_module).register(app)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
