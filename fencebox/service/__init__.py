"""The purifying inference proxy: ``create_app(settings)`` and ``fencebox serve``.

REST (``/v1/purify``, ``/v1/predict``), the Open Inference Protocol v2 (``/v2/...``) and Prometheus
``/metrics``; every image passes through its route's chain before a local or upstream model.
"""

from __future__ import annotations

from fencebox.service.app import create_app
from fencebox.service.settings import Settings, load_settings

__all__ = ["Settings", "create_app", "load_settings"]
