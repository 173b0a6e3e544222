"""Named chains from the literature, shipped as YAML files beside this module, each with its citation.

This is the catalogue (data): each preset's document, chain as written.  Building a preset's chain is
:mod:`fencebox.spec`'s job (``fencebox.spec.preset_spec`` and ``load_chain``), so the catalogue sits
below the registry and the spec, which both read preset names.
"""

from __future__ import annotations

import difflib
import functools
from importlib import resources
from typing import Any

import yaml

from fencebox.errors import SpecError


@functools.cache
def _presets() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for entry in resources.files(__name__).iterdir():
        if entry.name.endswith(".yaml"):
            doc = yaml.safe_load(entry.read_text(encoding="utf-8"))
            found[doc["name"]] = doc
    return dict(sorted(found.items()))


def list_presets() -> list[str]:
    """The names of every shipped preset."""
    return list(_presets())


def preset_info(name: str) -> dict[str, Any]:
    """A preset's document: name, description, reference (the paper), chain (compact string)."""
    try:
        return dict(_presets()[name])
    except KeyError:
        close = difflib.get_close_matches(name, list_presets(), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise SpecError(f"unknown preset '{name}'{hint}") from None
