"""The purifying inference proxy: ``create_app(settings)`` and ``fencebox serve``.

REST (``/v1/purify``, ``/v1/predict``), the Open Inference Protocol v2 (``/v2/...``) and Prometheus
``/metrics``; every image passes through its route's chain before a local or upstream model.

Importing this package loads nothing heavy: ``create_app``, ``load_settings`` and ``Settings`` are
imported on first use, so ``fencebox.service.policy`` or ``fencebox.service.v2codec`` (needed by the
harness and by parse workers) do not start FastAPI and torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fencebox.service.app import create_app
    from fencebox.service.settings import Settings, load_settings

__all__ = ["Settings", "create_app", "load_settings"]


def __getattr__(name: str) -> Any:
    """Import ``create_app`` / ``Settings`` / ``load_settings`` lazily (PEP 562)."""
    if name == "create_app":
        from fencebox.service.app import create_app

        return create_app
    if name in ("Settings", "load_settings"):
        from fencebox.service import settings

        return getattr(settings, name)
    raise AttributeError(f"module 'fencebox.service' has no attribute {name!r}")
