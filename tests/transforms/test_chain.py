"""Chains and random combinators: per-image routing, determinism, surrogate routing, input kinds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from PIL import Image

from fencebox import InputError, SpecError, load_chain
from fencebox.chain import Chain, Choice, RandomApply, RandomOrder
from fencebox.testing import batches, check_contract
from fencebox.transforms.bitdepth import BitDepth

RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, (64, 12, 10, 3), dtype=np.uint8)


def test_chain_applies_in_order() -> None:
    a, b = BitDepth(bits=1), BitDepth(bits=3, mode="truncate")
    np.testing.assert_array_equal(Chain([a, b])(IMAGES), b(a(IMAGES)))


def test_choice_routes_each_image_to_one_child() -> None:
    one, three = BitDepth(bits=1), BitDepth(bits=3)
    out = Choice(transforms=[one, three])(IMAGES, rng=1)
    via_one, via_three = one(IMAGES), three(IMAGES)
    picked_one = np.all(out == via_one, axis=(1, 2, 3))
    picked_three = np.all(out == via_three, axis=(1, 2, 3))
    assert np.all(picked_one | picked_three)
    assert 10 < picked_one.sum() < 54, "both children must be picked, roughly half each"


def test_choice_k2_runs_two_distinct_children() -> None:
    kids = [BitDepth(bits=1), BitDepth(bits=8), BitDepth(bits=8, mode="truncate")]
    params = Choice(k=2, transforms=kids).sample(np.random.default_rng(0), IMAGES.shape)
    picks = params["picks"]
    assert picks.shape == (64, 2)
    assert np.all(picks[:, 0] != picks[:, 1])


def test_random_apply_probability_extremes() -> None:
    one = BitDepth(bits=1)
    np.testing.assert_array_equal(RandomApply(p=1.0, transform=one)(IMAGES), one(IMAGES))
    np.testing.assert_array_equal(RandomApply(p=0.0, transform=one)(IMAGES), IMAGES)
    mask = RandomApply(p=0.5, transform=one).sample(np.random.default_rng(3), (4000, 1, 1, 1))["mask"]
    assert 0.45 < mask.mean() < 0.55


def test_random_order_uses_per_image_orders() -> None:
    a, b = BitDepth(bits=2, mode="truncate"), BitDepth(bits=1)
    out = RandomOrder(transforms=[a, b])(IMAGES, rng=0)
    ab, ba = b(a(IMAGES)), a(b(IMAGES))
    assert np.all(np.all(out == ab, axis=(1, 2, 3)) | np.all(out == ba, axis=(1, 2, 3)))


@settings(max_examples=20, deadline=None)
@given(batches())
def test_combinators_obey_the_contract(images: np.ndarray) -> None:
    chain = load_chain(
        "random_apply(p=0.5, transform=bit_depth(bits=2)) | choice(k=1, transforms=[bit_depth(bits=1), "
        "random_order(transforms=[bit_depth(bits=4), bit_depth(bits=3, mode=truncate)])])"
    )
    check_contract(chain, images, seed=5)


def test_surrogate_routing_keeps_images_in_place_and_gradients_flow() -> None:
    chain = Choice(transforms=[BitDepth(bits=1), BitDepth(bits=8)])
    params = chain.sample(np.random.default_rng(0), (8, 6, 6, 3))
    x = torch.rand(8, 3, 6, 6, requires_grad=True)
    y = chain.surrogate(x, params)
    expected = torch.stack(
        [
            BitDepth(bits=1 if p == 0 else 8).surrogate(x[i : i + 1], {})[0]
            for i, p in enumerate(params["picks"][:, 0])
        ]
    )
    torch.testing.assert_close(y, expected)
    (y * torch.arange(8.0)[:, None, None, None]).sum().backward()
    assert x.grad is not None
    torch.testing.assert_close(x.grad[:, 0, 0, 0], torch.arange(8.0))


def test_same_seed_same_output_and_workers_do_not_matter() -> None:
    chain = load_chain("choice(k=1, transforms=[bit_depth(bits=1), bit_depth(bits=2), bit_depth(bits=3)])")
    a = chain(IMAGES, rng=7)
    np.testing.assert_array_equal(a, chain(IMAGES, rng=7))
    np.testing.assert_array_equal(a, chain(IMAGES, rng=7, workers=4))
    assert not np.array_equal(a, chain(IMAGES, rng=8))


def test_accepts_single_images_pil_and_torch() -> None:
    chain = load_chain("bit_depth(bits=1)")
    hwc = IMAGES[0]
    assert chain(hwc).shape == hwc.shape
    gray = IMAGES[0, :, :, 0]
    assert chain(gray).shape == gray.shape
    pil = Image.fromarray(hwc)
    out_pil = chain(pil)
    assert isinstance(out_pil, Image.Image) and out_pil.size == pil.size
    t8 = torch.from_numpy(IMAGES).permute(0, 3, 1, 2)
    out8 = chain(t8)
    assert out8.dtype == torch.uint8 and out8.shape == t8.shape
    tf = t8.float() / 255
    outf = chain(tf)
    assert outf.dtype == torch.float32 and outf.shape == tf.shape
    torch.testing.assert_close(outf, out8.float() / 255)
    assert chain(tf[0]).shape == tf[0].shape


@pytest.mark.parametrize(
    ("images", "fragment"),
    [
        (np.zeros((2, 8, 8, 3), np.float32), "uint8"),
        (np.zeros((2, 8, 8, 4), np.uint8), "1 or 3 channels"),
        (np.zeros((0, 8, 8, 3), np.uint8), "empty"),
        (np.zeros((1, 1, 8, 8, 3), np.uint8), "(N, H, W, C)"),
        ([[1, 2], [3, 4]], "NumPy uint8 array"),
        (torch.zeros(2, 3, 8, 8, dtype=torch.int32), "uint8 or float"),
    ],
)
def test_bad_inputs_raise_input_error(images: object, fragment: str) -> None:
    with pytest.raises(InputError) as info:
        load_chain("bit_depth(bits=3)")(images)
    assert fragment in str(info.value)


def test_empty_chain_is_identity() -> None:
    np.testing.assert_array_equal(load_chain("none")(IMAGES), IMAGES)


@pytest.mark.parametrize(
    "spec",
    [
        "choice(transforms=[resize_pad(out_size=20), flip])",
        "random_order(transforms=[resize_pad(out_size=20), flip])",
        "random_apply(transform=resize_pad(out_size=20))",
        "choice(k=2, transforms=[resize_pad(out_size=20), flip])",
    ],
)
def test_combinators_whose_children_change_the_shape_are_spec_errors(spec: str) -> None:
    # A configuration mistake (the children disagree on the output shape), not a bad image.
    with pytest.raises(SpecError, match="shape"):
        load_chain(spec)(np.zeros((2, 16, 16, 3), np.uint8), rng=0)
