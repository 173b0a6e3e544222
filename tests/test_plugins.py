"""Third-party transforms register through the ``fencebox.transforms`` entry-point group."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PLUGIN_MODULE = '''
"""A third-party FenceBox transform: invert the image."""
import numpy as np
from fencebox.transforms.base import Param, Transform


class Invert(Transform):
    """Invert every pixel (255 - x)."""

    name = "invert"
    params = (Param("strength", "int", default=255, low=0, high=255, doc="value to subtract from"),)

    def apply(self, images, params):
        return (self.config["strength"] - images.astype(np.int16)).clip(0, 255).astype(np.uint8)
'''

PYPROJECT = """
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "fencebox-invert-plugin"
version = "1.0"

[project.entry-points."fencebox.transforms"]
invert = "fencebox_invert:Invert"
broken = "fencebox_invert:DoesNotExist"
"""

USE_PLUGIN = """
import warnings
import numpy as np
import fencebox
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    names = fencebox.list_transforms()
assert "invert" in names, names
assert any("broken" in str(w.message) for w in caught), [str(w.message) for w in caught]
chain = fencebox.load_chain("bit_depth(bits=8) | invert(strength=255)")
out = chain(np.zeros((1, 4, 4, 3), np.uint8))
assert (out == 255).all()
assert fencebox.load_chain(str(chain)).to_spec() == chain.to_spec()
print("plugin ok")
"""


@pytest.mark.timeout(180)
def test_installed_plugin_package_is_discovered(tmp_path: Path) -> None:
    src = tmp_path / "plugin"
    src.mkdir()
    (src / "pyproject.toml").write_text(PYPROJECT)
    (src / "fencebox_invert.py").write_text(textwrap.dedent(PLUGIN_MODULE))
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(src),
        ],
        check=True,
        capture_output=True,
    )
    assert list(site.glob("fencebox_invert_plugin-1.0.dist-info/entry_points.txt"))
    result = subprocess.run(
        [sys.executable, "-c", USE_PLUGIN],
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "plugin ok" in result.stdout
