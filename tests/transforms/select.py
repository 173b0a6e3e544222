"""Pick the parametrize cases of one transform module out of a case list shared by a family of tests.

Each transform module's test file runs the family's shared checks (contract, spec round trip, error
messages) on its own transforms only: ``@pytest.mark.parametrize("t", of_module(CASES, MODULE))``.
"""

from __future__ import annotations

import re
from typing import Any

from _pytest.mark.structures import ParameterSet

from fencebox.registry import all_transforms
from fencebox.transforms.base import Transform


def module_of(value: Any) -> str | None:
    """The transform module a case stands for: a Transform, its class, its registry name or spec, a tuple."""
    if isinstance(value, Transform):
        return type(value).__module__
    if isinstance(value, type) and issubclass(value, Transform):
        return value.__module__
    if isinstance(value, ParameterSet):
        return module_of(tuple(value.values))
    if isinstance(value, str):
        m = re.match(r"[A-Za-z_]+", value)
        registry = all_transforms()
        names = sorted((n for n in registry if m and m.group().startswith(n)), key=len, reverse=True)
        return registry[names[0]].__module__ if names else None
    if isinstance(value, tuple | list):
        for v in value:
            found = module_of(v)
            if found is not None:
                return found
    return None


def of_module(cases: Any, module: str) -> list[Any]:
    """The cases of ``module``; cases that stand for no transform at all are all kept."""
    cases = list(cases)
    if not any(module_of(c) is not None for c in cases):
        return cases
    return [c for c in cases if module_of(c) == module]
