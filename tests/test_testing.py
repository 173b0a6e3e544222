"""The exported contract checker (fencebox.testing): it catches what it promises to catch, and every
registered transform and combinator passes it on large batches, at every worker count."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fencebox.registry import all_transforms
from fencebox.spec import load_chain
from fencebox.testing import WORKER_COUNTS, check_contract, check_cost, check_invariance, large_batch
from fencebox.transforms.base import Params, Shape, Transform

COMBINATORS = {"chain", "choice", "random_order", "random_apply"}
LEAVES = [name for name in all_transforms() if name not in COMBINATORS]

# The large case: 64 photos of 224 x 224 x 3, what a batching service hands a chain.  The slowest
# transforms get a smaller batch that still spans more than one chunk of their internal chunking
# (tv_min solves about 2^18 values at a time: 400 images of 16 x 16 x 3 are two chunks).
LARGE = (64, 224, 224, 3)
SMALLER_LARGE = {
    "nl_means": (16, 64, 64, 3),
    "tv_min": (400, 16, 16, 3),
}
COMBINATOR_SPECS = [
    "chain(transforms=[jpeg, median(size=3)])",
    "choice(k=2, transforms=[median(size=[2, 5]), gaussian_noise, jpeg(quality=[30, 90]), bit_depth])",
    "random_order(transforms=[gaussian_blur(sigma=[0.5, 2]), gaussian_noise, flip, pixel_deflection])",
    "random_apply(p=0.5, transform=feature_distillation)",
    "fencebox-default",
]


class BatchMean(Transform):
    """Subtracts the batch mean: deliberately breaks per-image invariance."""

    name = "batch_mean_for_test"

    def apply(self, images: np.ndarray, params: Params) -> np.ndarray:
        centred = images.astype(np.int16) - int(images.mean()) + 128
        return np.clip(centred, 0, 255).astype(np.uint8)


class ZeroCost(Transform):
    """Declares no cost at all: the checker must refuse it."""

    name = "zero_cost_for_test"

    def apply(self, images: np.ndarray, params: Params) -> np.ndarray:
        return images

    def cost(self, shape: Shape) -> float:
        return 0.0


class NanCost(ZeroCost):
    name = "nan_cost_for_test"

    def cost(self, shape: Shape) -> float:
        return math.nan


def test_invariance_check_catches_a_batch_dependent_transform() -> None:
    images = large_batch(4, 16, 16, 3)
    with pytest.raises(AssertionError, match="per-image invariance broken"):
        check_invariance(BatchMean(), images)


@pytest.mark.parametrize("cls", [ZeroCost, NanCost])
def test_cost_check_refuses_zero_and_nan(cls: type[Transform]) -> None:
    with pytest.raises(AssertionError, match="positive and finite"):
        check_cost(cls(), (1, 8, 8, 3))
    with pytest.raises(AssertionError):
        check_contract(cls(), large_batch(2, 8, 8, 3))


def test_large_batch_images_all_differ() -> None:
    images = large_batch(8, 32, 32, 3)
    flat = images.reshape(8, -1)
    assert len({row.tobytes() for row in flat}) == 8


def test_worker_counts_include_uneven_splits() -> None:
    assert {1, 2, 3, 4} <= set(WORKER_COUNTS)


@pytest.mark.parametrize("name", LEAVES)
def test_every_transform_is_per_image_invariant_on_a_large_batch(name: str) -> None:
    t = all_transforms()[name]()
    shape = SMALLER_LARGE.get(name, LARGE)
    images = large_batch(*shape)
    check_cost(t, shape)
    check_invariance(t, images, seed=7, alone=4)


@pytest.mark.parametrize("spec", COMBINATOR_SPECS)
def test_every_combinator_is_per_image_invariant_on_a_large_batch(spec: str) -> None:
    t = load_chain(spec)
    images = large_batch(64, 96, 96, 3)
    check_cost(t, images.shape)
    check_invariance(t, images, seed=11, alone=4)


@pytest.mark.parametrize("name", LEAVES)
def test_every_transform_is_per_image_invariant_on_grey_odd_sized_images(name: str) -> None:
    t = all_transforms()[name]()
    check_invariance(t, large_batch(9, 37, 53, 1), seed=3)
