"""The registry (fencebox.registry): every built-in transform is collected and obeys the contract with its
defaults; third-party transforms register through the ``fencebox.transforms`` entry-point group."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import fencebox
from fencebox import InputError
from fencebox.registry import all_transforms, builtin_modules, register, transform_classes
from fencebox.testing import check_contract, check_cost
from fencebox.transforms.base import Params, Transform

COMBINATORS = {"chain", "choice", "random_order", "random_apply"}
LEAVES = [name for name in all_transforms() if name not in COMBINATORS]
RNG = np.random.default_rng(0)
SHAPES = [(2, 28, 28, 1), (2, 37, 53, 3), (1, 64, 48, 3)]


def test_the_documented_transforms_are_all_registered() -> None:
    expected = {
        "jpeg", "webp", "bit_depth", "median", "resize_pad", "affine", "grid_distortion", "random_crop",
        "elastic", "feature_distillation", "shield", "motion_blur", "glass_blur", "coarse_dropout",
        "gaussian_noise", "pixel_deflection", "nl_means", "tv_min", "gaussian_blur", "flip",
    }  # fmt: skip
    assert expected <= set(fencebox.list_transforms())


@pytest.mark.parametrize("name", LEAVES)
def test_declares_what_it_is(name: str) -> None:
    cls = all_transforms()[name]
    assert cls.describe(), f"{name} has no one-line description"
    assert cls.surrogate_kind in ("exact", "approximate", "identity")
    for p in cls.params:
        assert p.doc or p.kind in ("transform", "transforms"), f"{name}.{p.name} has no doc"


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", LEAVES)
def test_defaults_obey_the_contract(name: str, shape: tuple[int, int, int, int]) -> None:
    t = all_transforms()[name]()
    images = RNG.integers(0, 256, shape, dtype=np.uint8)
    check_contract(t, images, seed=1, atol_levels=1)


@pytest.mark.parametrize("name", LEAVES)
def test_below_min_size_is_a_clear_input_error(name: str) -> None:
    t = all_transforms()[name]()
    if t.min_size <= 1:
        return
    small = np.zeros((1, t.min_size - 1, t.min_size + 5, 3), np.uint8)
    with pytest.raises(InputError, match="at least"):
        t(small)


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


@pytest.mark.parametrize(
    ("small", "large"),
    [
        ("median(size=3)", "median(size=[3, 9])"),
        ("gaussian_blur(sigma=1)", "gaussian_blur(sigma=5)"),
        ("motion_blur(kernel_size=3)", "motion_blur(kernel_size=[3, 31])"),
        ("glass_blur(sigma=0.5)", "glass_blur(sigma=3)"),
        ("pixel_deflection(deflections=10)", "pixel_deflection(deflections=10000)"),
        ("elastic(sigma=2)", "elastic(sigma=20)"),
        ("chain(transforms=[])", "chain(transforms=[median(size=3), jpeg])"),
    ],
)
def test_declared_cost_grows_with_the_work_a_parameter_asks_for(small: str, large: str) -> None:
    shape = (4, 64, 48, 3)
    lo, hi = fencebox.load_chain(small).cost(shape), fencebox.load_chain(large).cost(shape)
    assert 0 < lo < hi < float("inf")


@pytest.mark.parametrize("name", LEAVES)
def test_declared_cost_is_positive_finite_and_scales_with_the_batch(name: str) -> None:
    t = all_transforms()[name]()
    one, four = check_cost(t, (1, 32, 32, 3)), check_cost(t, (4, 32, 32, 3))
    assert four == pytest.approx(4 * one)


class _Invert(Transform):
    """Invert every pixel: a transform defined in user code, registered without an entry point."""

    name = "invert_registered_in_a_test"

    def apply(self, images: np.ndarray, params: Params) -> np.ndarray:
        return 255 - images


def test_register_makes_a_user_transform_available_to_specs() -> None:
    assert register(_Invert) is _Invert
    assert "invert_registered_in_a_test" in fencebox.list_transforms()
    chain = fencebox.load_chain("invert_registered_in_a_test | bit_depth(bits=8)")
    np.testing.assert_array_equal(chain(np.zeros((1, 4, 4, 3), np.uint8)), np.full((1, 4, 4, 3), 255))
    with pytest.raises(TypeError, match="already registered"):
        register(type("Other", (_Invert,), {"name": "invert_registered_in_a_test"}))


def test_builtins_are_collected_from_the_transform_modules_not_registered_by_them() -> None:
    import fencebox.transforms.median as median_module

    assert transform_classes(median_module) == [median_module.Median]
    assert all(not m.endswith((".base", ".adapters", ".cancel")) for m in builtin_modules())
