"""Tests of fencebox.transforms.distortion: the behaviour a user relies on, and the shared contract on its transforms.

(Moved from tests/test_transforms_geometric.py.)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fencebox.testing import batches, check_contract
from fencebox.transforms.base import Transform
from fencebox.transforms.distortion import Elastic, GridDistortion
from tests.transforms.helpers import (
    FEW,
    GEOMETRIC_BAD_PARAMS,
    check_bad_param_is_named,
    check_defaults_exact_on_noise,
    check_gradients_flow_through_surrogate,
    check_too_small_is_input_error,
    noise,
    smooth,
)
from tests.transforms.helpers import GEOMETRIC as ALL
from tests.transforms.select import of_module

MODULE = "fencebox.transforms.distortion"


@FEW
@given(batches(min_side=4), st.integers(1, 10), st.floats(0.0, 0.9))
def test_contract_grid_distortion(images: np.ndarray, steps: int, limit: float) -> None:
    check_contract(GridDistortion(num_steps=steps, distort_limit=limit), images)


@FEW
@given(batches(min_side=4), st.floats(0.0, 60.0), st.floats(0.5, 10.0))
def test_contract_elastic(images: np.ndarray, alpha: float, sigma: float) -> None:
    check_contract(Elastic(alpha=alpha, sigma=sigma), images)


@pytest.mark.parametrize("t", of_module(ALL, MODULE), ids=lambda t: t.name)
@pytest.mark.parametrize("shape", of_module([(2, 31, 17, 1), (2, 24, 40, 3)], MODULE))
def test_defaults_exact_on_noise(t: Transform, shape: tuple[int, int, int, int]) -> None:
    check_defaults_exact_on_noise(t, shape)


def test_grid_distortion_and_elastic_zero_strength_are_identity() -> None:
    images = noise(2, 21, 13, 3)
    np.testing.assert_array_equal(GridDistortion(distort_limit=0.0)(images, rng=0), images)
    np.testing.assert_array_equal(Elastic(alpha=0.0)(images, rng=0), images)


def test_distortions_change_the_image_and_differ_per_image() -> None:
    images = np.repeat(smooth(1, 48, 40, 3), 2, axis=0)
    for t in (GridDistortion(), Elastic()):
        out = t(images, rng=0)
        assert not np.array_equal(out[0], images[0])
        assert not np.array_equal(out[0], out[1])


def test_elastic_field_comes_from_the_seed() -> None:
    t = Elastic()
    params = t.sample(np.random.default_rng(0), (2, 30, 30, 3))
    assert params["seed"].shape == (2,)
    a = t.grid(params, 0, (30, 30), (30, 30))
    b = t.grid(params, 0, (30, 30), (30, 30))
    c = t.grid(params, 1, (30, 30), (30, 30))
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("t", of_module(ALL, MODULE), ids=lambda t: t.name)
def test_gradients_flow_through_surrogate(t: Transform) -> None:
    check_gradients_flow_through_surrogate(t)


@pytest.mark.parametrize(
    ("cls", "kwargs", "param"),
    of_module(GEOMETRIC_BAD_PARAMS, MODULE),
)
def test_bad_params_name_the_param(cls: type[Transform], kwargs: dict[str, Any], param: str) -> None:
    check_bad_param_is_named(cls, kwargs, param)


@pytest.mark.parametrize("t", of_module(ALL, MODULE), ids=lambda t: t.name)
def test_too_small_images_are_input_errors(t: Transform) -> None:
    check_too_small_is_input_error(t)
