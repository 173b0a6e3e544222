"""The preset catalogue (fencebox.presets): every preset loads, round-trips and runs; presets expand in specs."""

from __future__ import annotations

import numpy as np
import pytest

import fencebox
from fencebox.spec import load_chain

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("name", fencebox.list_presets())
def test_every_preset_loads_and_round_trips(name: str) -> None:
    info = fencebox.preset_info(name)
    assert info["reference"] and info["description"]
    chain = load_chain(name)
    assert load_chain(str(chain)).to_spec() == chain.to_spec()


def test_default_preset_is_the_documented_chain() -> None:
    assert (
        load_chain("fencebox-default").to_spec()
        == load_chain(
            "jpeg(quality=75) | bit_depth(bits=5) | median(size=3) | resize_pad(min_scale=0.9, max_scale=1.0)"
        ).to_spec()
    )
    assert load_chain("none").to_spec() == {"name": "chain", "transforms": []}
    assert str(load_chain("none")) == "none"


def test_presets_expand_inside_a_chain() -> None:
    chain = load_chain("guo2018-bitdepth | bit_depth(bits=5)")
    assert [t.to_spec()["bits"] for t in chain[0]] == [3]


@pytest.mark.parametrize("preset", fencebox.list_presets())
def test_every_preset_runs_on_mnist_and_photo_shapes(preset: str) -> None:
    chain = fencebox.load_chain(preset)
    for shape in [(3, 28, 28, 1), (2, 64, 80, 3)]:
        images = RNG.integers(0, 256, shape, dtype=np.uint8)
        out = chain(images, rng=0, workers=2)
        assert out.shape == shape and out.dtype == np.uint8
        np.testing.assert_array_equal(out, chain(images, rng=0))
