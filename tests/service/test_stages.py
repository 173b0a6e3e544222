"""Stage-by-stage runs show the chain that really runs; the difference heat-map measures the change."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fencebox
from fencebox.service.stages import heatmap, run_stages, stages_of

PRESETS = fencebox.presets.list_presets()


@settings(max_examples=25, deadline=None)
@given(name=st.sampled_from(PRESETS), seed=st.integers(0, 2**32 - 1), channels=st.sampled_from([1, 3]))
def test_last_stage_is_the_chain_output(name: str, seed: int, channels: int) -> None:
    chain = fencebox.load_chain(name)
    img = np.random.default_rng(seed).integers(0, 256, (1, 40, 40, channels), dtype=np.uint8)
    stages = run_stages(chain, img, seed)
    assert [s.transform for s in stages] == stages_of(chain)
    final = stages[-1].image if stages else img
    assert np.array_equal(final, chain.run(img, seed))


def test_choice_names_the_transform_it_drew() -> None:
    chain = fencebox.load_chain("choice(k=1, transforms=[median(size=3), bit_depth(bits=1)])")
    img = np.random.default_rng(0).integers(0, 256, (1, 16, 16, 1), dtype=np.uint8)
    seen = set()
    for seed in range(20):
        (stage,) = run_stages(chain, img, seed)
        (picked,) = stage.drawn["picked"]
        alone = fencebox.load_chain(picked).run(img, 0)
        assert np.array_equal(stage.image, alone)  # the named transform is the one that ran
        seen.add(picked)
    assert len(seen) == 2


def test_random_apply_and_order_say_what_they_drew() -> None:
    img = np.zeros((1, 8, 8, 1), np.uint8)
    (s,) = run_stages(fencebox.load_chain("random_apply(p=1.0, transform=bit_depth(bits=1))"), img, 0)
    assert s.drawn == {"applied": True}
    (s,) = run_stages(
        fencebox.load_chain("random_order(transforms=[median(size=3), bit_depth(bits=2)])"), img, 0
    )
    assert sorted(s.drawn["order"]) == sorted(["median(size=3)", 'bit_depth(bits=2, mode="round")'])


@given(
    a=st.integers(0, 255),
    b=st.integers(0, 255),
    h=st.integers(1, 12),
    w=st.integers(1, 12),
    c=st.sampled_from([1, 3]),
)
def test_heatmap_scales_to_the_largest_change(a: int, b: int, h: int, w: int, c: int) -> None:
    original = np.full((h, w, c), a, np.uint8)
    changed = original.copy()
    changed[0, 0, 0] = b
    heat, peak = heatmap(original, changed)
    assert heat.shape == (h, w, 3) and heat.dtype == np.uint8
    assert peak == abs(a - b)
    assert (heat[0, 0] == (255, 255, 255)).all() if peak else (heat == 0).all()
    if h * w > 1:
        assert (heat.reshape(-1, 3)[1:] == 0).all()  # unchanged pixels are black


def test_heatmap_compares_on_the_original_grid() -> None:
    original = np.zeros((10, 20, 1), np.uint8)
    heat, peak = heatmap(original, np.full((5, 10, 3), 9, np.uint8))
    assert heat.shape == (10, 20, 3) and peak == 9


@pytest.mark.parametrize("name", ["none"])
def test_the_empty_chain_has_no_stages(name: str) -> None:
    assert run_stages(fencebox.load_chain(name), np.zeros((1, 4, 4, 1), np.uint8), 0) == []
