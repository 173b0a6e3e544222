"""DefendedClassifier: the gradient estimator is chosen per call; a chain's deterministic prefix runs once per step."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fencebox.chain import Chain
from fencebox.harness import DefendedClassifier
from fencebox.harness.defended import split_chain
from fencebox.spec import load_chain
from fencebox.torch_util import nhwc_uint8_to_nchw_float
from fencebox.transforms.base import Params, Transform
from tests.harness.test_defended_gradients import Invert
from tests.harness.toy import toy_data, toy_model


class Counting(Transform):
    """Deterministic identity that counts the images its ``apply`` sees."""

    name = "test_counting"
    surrogate_kind = "exact"

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    def apply(self, images: np.ndarray, params: Params) -> np.ndarray:
        self.seen += images.shape[0]
        return images

    def surrogate(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        return x


def _grad(fn: Any, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    xg = x.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(fn(xg), y).backward()
    assert xg.grad is not None
    return xg.grad


def test_the_estimator_is_picked_per_call() -> None:
    images, labels = toy_data(8)
    x, y = nhwc_uint8_to_nchw_float(images), torch.from_numpy(labels)
    chain = Chain([Invert()])
    model = DefendedClassifier(toy_model(), chain, gradient="bpda")
    own = {g: _grad(DefendedClassifier(toy_model(), chain, gradient=g), x, y) for g in ("bpda", "surrogate")}
    picked = {g: _grad(lambda v, g=g: model(v, gradient=g), x, y) for g in ("bpda", "surrogate")}
    for g in own:
        torch.testing.assert_close(picked[g], own[g])
    torch.testing.assert_close(own["surrogate"], -own["bpda"])  # d(1 - x)/dx = -1: they really differ
    torch.testing.assert_close(_grad(model, x, y), own["bpda"])  # the default is unchanged by the calls


def test_the_deterministic_prefix_runs_once_per_step_not_once_per_draw() -> None:
    images, _ = toy_data(6)
    x = nhwc_uint8_to_nchw_float(images)
    counting = Counting()
    chain = Chain([counting, load_chain("gaussian_noise()")])
    prefix, rest = split_chain(chain)
    assert prefix is not None and rest is not None and not prefix.randomized and rest.randomized
    model = DefendedClassifier(toy_model(), chain, eot_samples=10)
    model(x)
    assert counting.seen == 6  # not 60
    assert split_chain(load_chain("bit_depth(bits=3)"))[1] is None
    assert split_chain(load_chain("gaussian_noise()"))[0] is None
