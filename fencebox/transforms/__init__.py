"""FenceBox's built-in transforms, one module per family; importing this package registers them all."""

from __future__ import annotations

import importlib
import pkgutil

from fencebox.transforms.base import Param, Params, Transform

__all__ = ["Param", "Params", "Transform"]

_NOT_TRANSFORMS = {"base", "adapters", "torch_ops"}

for _mod in pkgutil.iter_modules(__path__):
    if not _mod.name.startswith("_") and _mod.name not in _NOT_TRANSFORMS:
        importlib.import_module(f"{__name__}.{_mod.name}")
