"""The runner's resumable cache: one JSON file per unit of work, keyed by everything that decides its result.

The key holds the model and data fingerprints, the chain spec, the threat's effective gradient
configuration, the attack configuration and the seed; a changed input gives a new key, so a stale
result is never reused.  Files are written atomically, so an interrupted run resumes cleanly.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

CACHE_VERSION = 1


def key_hash(key: dict[str, Any]) -> str:
    """Stable hash of a JSON-able key dict."""
    blob = json.dumps({"v": CACHE_VERSION, **key}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def array_fingerprint(*arrays: np.ndarray) -> str:
    """Hash of array contents, shapes and dtypes (identifies a data set slice or a model's weights)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:24]


def code_fingerprint(chain: object) -> str:
    """Hash of the source code that decides a result: the chain's transform modules and the harness's.

    Part of every cache key, so editing a transform or an attack never lets a stale result be reused.
    """
    import inspect

    import fencebox.chain
    import fencebox.transforms.base
    from fencebox.harness import attacks, blackbox, defended, geometry, oracle, runner

    files: set[str] = set()
    stack = [chain]
    while stack:
        t = stack.pop()
        try:
            files.add(inspect.getsourcefile(type(t)) or "")
        except TypeError:
            files.add(type(t).__qualname__)
        stack.extend(getattr(t, "children", []) or [])
    for mod in (
        fencebox.chain,
        fencebox.transforms.base,
        attacks,
        blackbox,
        defended,
        geometry,
        oracle,
        runner,
    ):
        files.add(inspect.getsourcefile(mod) or "")
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(f.encode())
        with contextlib.suppress(OSError):
            h.update(Path(f).read_bytes())
    return h.hexdigest()[:16]


class Cache:
    """A folder of JSON results, one per key; ``None`` folder disables caching."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)

    def _path(self, key: dict[str, Any]) -> Path | None:
        return None if self.folder is None else self.folder / f"{key_hash(key)}.json"

    def get(self, key: dict[str, Any]) -> dict[str, Any] | None:
        """The stored state for ``key``, or None."""
        path = self._path(key)
        if path is None or not path.exists():
            return None
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return doc.get("state") if doc.get("key") == json.loads(json.dumps(key, default=str)) else None

    def put(self, key: dict[str, Any], state: dict[str, Any]) -> None:
        """Store ``state`` for ``key`` atomically."""
        path = self._path(key)
        if path is None:
            return
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"key": key, "state": state}, default=str))
        os.replace(tmp, path)
