"""Every registered transform, with its defaults, on the shapes users actually send."""

from __future__ import annotations

import numpy as np
import pytest

import fencebox
from fencebox import InputError
from fencebox.registry import all_transforms
from fencebox.testing import check_contract

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


@pytest.mark.parametrize("preset", fencebox.list_presets())
def test_every_preset_runs_on_mnist_and_photo_shapes(preset: str) -> None:
    chain = fencebox.load_chain(preset)
    for shape in [(3, 28, 28, 1), (2, 64, 80, 3)]:
        images = RNG.integers(0, 256, shape, dtype=np.uint8)
        out = chain(images, rng=0, workers=2)
        assert out.shape == shape and out.dtype == np.uint8
        np.testing.assert_array_equal(out, chain(images, rng=0))
