"""FenceBox's built-in transforms, one module per family (registered on first registry use)."""

from __future__ import annotations

import importlib
import pkgutil

from fencebox.transforms.base import Param, Params, Transform

__all__ = ["Param", "Params", "Transform", "import_builtin_modules"]

_NOT_TRANSFORMS = {"base", "adapters", "torch_ops"}


def import_builtin_modules() -> None:
    """Import every transform module in this package so that its ``@register`` classes are known."""
    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith("_") and mod.name not in _NOT_TRANSFORMS:
            importlib.import_module(f"{__name__}.{mod.name}")
