"""The cache key: every source file of the package (by relative path) and the codec libraries' versions."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import fencebox
from fencebox.harness import cache


def _copy(dest: Path) -> Path:
    root = dest / "fencebox"
    shutil.copytree(Path(fencebox.__file__).parent, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_editing_the_codec_module_invalidates_the_key(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    before = cache.code_fingerprint(root)
    codec = root / "transforms" / "_codec.py"
    codec.write_text(codec.read_text() + "\n# an edit\n")
    cache.code_fingerprint.cache_clear()
    assert cache.code_fingerprint(root) != before


def test_the_key_does_not_depend_on_where_the_package_is_installed(tmp_path: Path) -> None:
    a, b = _copy(tmp_path / "a"), _copy(tmp_path / "site" / "b")
    assert cache.source_fingerprint(a) == cache.source_fingerprint(b)
    assert cache.code_fingerprint(a) == cache.code_fingerprint(b)


def test_a_codec_library_upgrade_invalidates_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _copy(tmp_path)
    before = cache.code_fingerprint(root)
    cache.code_fingerprint.cache_clear()
    real = cache._version
    monkeypatch.setattr(cache, "_version", lambda d: "99.0" if d == "Pillow" else real(d))
    assert cache.code_fingerprint(root) != before
    cache.code_fingerprint.cache_clear()
