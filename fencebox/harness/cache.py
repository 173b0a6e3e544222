"""The runner's resumable cache: one JSON file (and one .npz of candidates) per unit, keyed by all that decides it.

The key holds the model and data fingerprints, the chain spec, the threat's effective gradient
configuration, the attack configuration, the seeds and :func:`code_fingerprint` (every source file of
the package and the versions of the libraries that compute results), so a changed input gives a new key
and a stale result is never reused.  Files are written atomically, so an interrupted run resumes
cleanly.  Without a folder the cache lives in memory for the runner's life (threats that resolve to
the same attacks, e.g. ``eot`` and ``bpda-eot``, then still run once).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

import fencebox

CACHE_VERSION = 2
LIBRARIES = ("numpy", "torch", "opencv-python-headless", "opencv-python", "Pillow")
"""Distributions whose versions enter the code fingerprint (codecs and kernels live in them)."""


def key_hash(key: dict[str, Any]) -> str:
    """Stable hash of a JSON-able key dict."""
    blob = json.dumps({"v": CACHE_VERSION, **key}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def array_fingerprint(*arrays: Any) -> str:
    """Hash of array contents, shapes and dtypes (identifies a data set slice or a model's weights)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:24]


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def source_fingerprint(root: Path) -> str:
    """Hash of every ``.py`` file under ``root`` (the package), by path relative to ``root`` and content.

    Relative paths, so a worker with the package installed elsewhere computes the same key.
    """
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        rel = f.relative_to(root).as_posix()
        if "__pycache__" in rel:
            continue
        h.update(rel.encode() + b"\0")
        h.update(f.read_bytes())
        h.update(b"\0")
    return h.hexdigest()[:16]


@functools.cache
def code_fingerprint(root: Path | None = None) -> str:
    """The source files of the package plus the versions of numpy, torch, OpenCV and Pillow.

    Part of every cache key, so editing any module (``transforms/_codec.py`` included) or upgrading a
    codec library never lets a stale result be reused.
    """
    base = Path(fencebox.__file__).parent if root is None else root
    versions = {d: _version(d) for d in LIBRARIES}
    h = hashlib.sha256(source_fingerprint(base).encode())
    h.update(json.dumps(versions, sort_keys=True).encode())
    return h.hexdigest()[:16]


class Cache:
    """A folder of JSON results (and .npz candidate arrays), one per key; in memory when ``folder`` is None."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.memory: dict[str, tuple[dict[str, Any], np.ndarray | None]] = {}
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)

    def _path(self, key: dict[str, Any], suffix: str = ".json") -> Path | None:
        return None if self.folder is None else self.folder / f"{key_hash(key)}{suffix}"

    def get(self, key: dict[str, Any]) -> dict[str, Any] | None:
        """The stored state for ``key``, or None."""
        h = key_hash(key)
        if h in self.memory:
            return json.loads(json.dumps(self.memory[h][0]))
        path = self._path(key)
        if path is None or not path.exists():
            return None
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        state = doc.get("state") if doc.get("key") == json.loads(json.dumps(key, default=str)) else None
        return state if isinstance(state, dict) else None

    def get_array(self, key: dict[str, Any]) -> np.ndarray | None:
        """The candidate array stored with ``key``, or None."""
        h = key_hash(key)
        if h in self.memory:
            arr = self.memory[h][1]
            return None if arr is None else arr.copy()
        path = self._path(key, ".npz")
        if path is None or not path.exists():
            return None
        try:
            with np.load(path) as f:
                return np.asarray(f["array"])
        except (OSError, ValueError, KeyError):
            return None

    def put(self, key: dict[str, Any], state: dict[str, Any], array: np.ndarray | None = None) -> None:
        """Store ``state`` (and ``array``) for ``key`` atomically."""
        self.memory[key_hash(key)] = (
            json.loads(json.dumps(state, default=str)),
            None if array is None else array.copy(),
        )
        path = self._path(key)
        if path is None:
            return
        if array is not None:
            arr_path = self._path(key, ".npz")
            assert arr_path is not None
            tmp_arr = arr_path.with_name(f"{arr_path.stem}.tmp{os.getpid()}.npz")
            np.savez_compressed(tmp_arr, array=array)
            os.replace(tmp_arr, arr_path)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"key": key, "state": state}, default=str))
        os.replace(tmp, path)
