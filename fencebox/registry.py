"""Transform names -> classes: the built-ins, and third-party plugins from the entry-point group.

The registry sits above the transforms and collects them: every public module of
:mod:`fencebox.transforms` is imported on first use and each :class:`Transform` subclass it defines
with a ``name`` is registered under that name (transforms never import the registry).

A plugin package declares ``[project.entry-points."fencebox.transforms"] my_name = "pkg.mod:MyTransform"``;
the class must subclass :class:`fencebox.transforms.base.Transform`.  Plugins are discovered once,
on first use, and never shadow a built-in.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
import warnings
from importlib.metadata import entry_points
from types import ModuleType
from typing import TypeVar

import fencebox.transforms
from fencebox.errors import SpecError
from fencebox.presets import list_presets
from fencebox.transforms import NOT_TRANSFORM_MODULES
from fencebox.transforms.base import Transform

ENTRY_POINT_GROUP = "fencebox.transforms"

_REGISTRY: dict[str, type[Transform]] = {}
_builtins_loaded = False
_plugins_loaded = False

T = TypeVar("T", bound=type[Transform])


def register(cls: T) -> T:
    """Make a Transform subclass available under its ``name`` (usable as a class decorator).

    Built-ins are found without it; use it for a transform defined in your own code that is not a
    plugin (no entry point), before building specs that name it.
    """
    if not cls.name:
        raise TypeError(f"{cls.__name__} has no registry name")
    existing = _REGISTRY.get(cls.name)
    if existing is not None and existing is not cls:
        raise TypeError(f"transform name {cls.name!r} already registered by {existing.__qualname__}")
    _REGISTRY[cls.name] = cls
    return cls


def transform_classes(module: ModuleType) -> list[type[Transform]]:
    """The named Transform subclasses a module defines (not those it imports), in definition order."""
    return [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, Transform)
        and obj.__module__ == module.__name__
        and "name" in vars(obj)
        and obj.name
    ]


def builtin_modules() -> list[str]:
    """The names of the modules of :mod:`fencebox.transforms` that define transforms."""
    return [
        f"{fencebox.transforms.__name__}.{mod.name}"
        for mod in pkgutil.iter_modules(fencebox.transforms.__path__)
        if not mod.name.startswith("_") and mod.name not in NOT_TRANSFORM_MODULES
    ]


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        for name in builtin_modules():
            for cls in transform_classes(importlib.import_module(name)):
                register(cls)


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plugin must not take the built-ins down with it
            warnings.warn(f"fencebox: plugin {ep.name!r} ({ep.value}) failed to load: {exc}", stacklevel=2)
            continue
        if not (isinstance(obj, type) and issubclass(obj, Transform)):
            warnings.warn(f"fencebox: plugin {ep.name!r} is not a Transform subclass; ignored", stacklevel=2)
            continue
        if not obj.name:
            obj.name = ep.name
        if obj.name in _REGISTRY and _REGISTRY[obj.name] is not obj:
            warnings.warn(
                f"fencebox: plugin {ep.name!r} would shadow built-in {obj.name!r}; ignored", stacklevel=2
            )
            continue
        _REGISTRY[obj.name] = obj


def all_transforms() -> dict[str, type[Transform]]:
    """Every registered transform class by name, built-ins and plugins."""
    _load_builtins()
    _load_plugins()
    return dict(sorted(_REGISTRY.items()))


def get_transform(name: str) -> type[Transform]:
    """The class registered as ``name``; SpecError suggesting the closest name when there is none."""
    registry = all_transforms()
    try:
        return registry[name]
    except KeyError:
        candidates = list(registry) + list_presets()
        close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.5)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise SpecError(f"unknown transform '{name}'{hint} (see `fencebox transforms`)") from None


def list_transforms() -> list[str]:
    """The names of every available transform (see ``fencebox transforms`` for their parameters)."""
    return list(all_transforms())
