"""FenceBox's built-in transforms, one module per family; the registry collects their classes.

Every public module here (no leading underscore) that defines :class:`Transform` subclasses with a
``name`` contributes them to :mod:`fencebox.registry`; :data:`NOT_TRANSFORM_MODULES` are the
modules that define none (the contract, adapters, cancellation).
"""

from __future__ import annotations

from fencebox.transforms.base import Param, Params, Transform

__all__ = ["NOT_TRANSFORM_MODULES", "Param", "Params", "Transform"]

NOT_TRANSFORM_MODULES = frozenset({"base", "adapters", "cancel"})
