"""The Transform base (fencebox.transforms.base): typed declarations, one source of truth for values, one
range convention with the old ``min_``/``max_`` spellings still read, and the compact form it prints."""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fencebox.errors import SpecError
from fencebox.registry import all_transforms
from fencebox.spec import build, load_chain
from fencebox.transforms import base
from fencebox.transforms.base import Transform, bounds
from fencebox.transforms.bitdepth import BitDepth
from fencebox.transforms.geometric import Affine, RandomCrop
from fencebox.transforms.resize_pad import ResizePad

CLASSES = sorted(all_transforms().items())


def _same(a: Any, b: Any) -> bool:
    norm = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731
    return norm(a) == norm(b)


@pytest.mark.parametrize(("name", "cls"), CLASSES, ids=[n for n, _ in CLASSES])
def test_constructor_has_a_real_signature_matching_the_declaration(name: str, cls: type[Transform]) -> None:
    sig = inspect.signature(cls)
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()), sig
    assert [p for p in sig.parameters] == [p.name for p in cls.params]
    for p in cls.params:
        default = sig.parameters[p.name].default
        if p.required:
            assert default is inspect.Parameter.empty, f"{name}.{p.name} is required but has a default"
        else:
            assert _same(default, p.default), f"{name}.{p.name}: signature {default!r} vs {p.default!r}"
        assert sig.parameters[p.name].annotation is not inspect.Parameter.empty


@pytest.mark.parametrize(("name", "cls"), [c for c in CLASSES if not any(p.required for p in c[1].params)])
def test_attributes_read_the_config_and_cannot_be_set(name: str, cls: type[Transform]) -> None:
    t = cls()
    for p in cls.params:
        assert getattr(t, p.name) is t.config[p.name]
        with pytest.raises(AttributeError, match="read-only"):
            setattr(t, p.name, t.config[p.name])
    with pytest.raises(TypeError):
        t.config[cls.params[0].name] = None  # type: ignore[index]
    assert build(t.to_spec()) == t


def test_setting_a_parameter_is_an_error_not_silently_ignored() -> None:
    t = BitDepth(bits=3)
    with pytest.raises(AttributeError, match="bit_depth: parameter 'bits' is read-only"):
        t.bits = 8
    assert t.bits == 3 and str(t) == 'bit_depth(bits=3, mode="round")'
    t.cache_note = "private attributes are free"  # not a parameter: allowed


def test_defaults_are_never_shared_between_instances() -> None:
    a, b = ResizePad(), ResizePad()
    assert a.config["scale"] == b.config["scale"] and a.config["scale"] is not b.config["scale"]


@pytest.mark.parametrize(
    ("old", "canonical"),
    [
        ("resize_pad(min_scale=0.8, max_scale=0.95)", "resize_pad(scale=[0.8, 0.95], out_size=null)"),
        ("resize_pad(min_scale=0.8)", "resize_pad(scale=[0.8, 1.0], out_size=null)"),
        ("random_crop(max_scale=0.9)", "random_crop(scale=[0.8, 0.9])"),
        (
            "affine(min_scale=1.0, max_scale=1.0)",
            'affine(max_shift=0.1, scale=[1.0, 1.0], max_rotate=15.0, border="reflect")',
        ),
    ],
)
def test_old_min_max_spellings_parse_to_the_canonical_range(old: str, canonical: str) -> None:
    chain = load_chain(old)
    assert str(chain) == canonical
    assert load_chain(str(chain)).to_spec() == chain.to_spec()
    assert build(chain.to_spec()) == chain
    images = np.random.default_rng(0).integers(0, 256, (2, 24, 24, 3), dtype=np.uint8)
    np.testing.assert_array_equal(chain(images, rng=1), load_chain(canonical)(images, rng=1))


@pytest.mark.parametrize("cls", [ResizePad, RandomCrop, Affine])
def test_a_scalar_range_is_a_constant(cls: type[Transform]) -> None:
    t = cls(scale=0.9)  # type: ignore[call-arg]
    assert bounds(t.config["scale"]) == (0.9, 0.9)


def test_old_and_new_spelling_together_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match="not both"):
        build({"name": "resize_pad", "scale": [0.8, 1.0], "min_scale": 0.7})


def test_unknown_old_spelling_suggests_the_closest_name() -> None:
    with pytest.raises(SpecError, match="did you mean 'min_scale'"):
        build({"name": "resize_pad", "min_scal": 0.7})


@pytest.mark.parametrize(
    "spec", ["fencebox-default", "fencebox-random", "resize_pad(out_size=48)", "median(size=[2, 5])"]
)
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 9),
    side=st.integers(12, 40),
    channels=st.sampled_from([1, 3]),
    workers=st.integers(2, 4),
    piece_bytes=st.sampled_from([1, 5_000, 1 << 20]),
    seed=st.integers(0, 2**31),
)
def test_workers_and_piece_sizes_never_change_the_output(
    spec: str, n: int, side: int, channels: int, workers: int, piece_bytes: int, seed: int
) -> None:
    """Any number of workers, cutting the batch into pieces of any size, gives the one-call output."""
    chain = load_chain(spec)
    images = np.random.default_rng(seed).integers(0, 256, (n, side, side + 3, channels), dtype=np.uint8)
    params = chain.sample(np.random.default_rng(seed), images.shape)
    expected = chain.apply(images, params)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(base, "PARALLEL_CHUNK_BYTES", piece_bytes)
        got = base.apply_parallel(chain, images, params, workers)
    assert got.dtype == expected.dtype and np.array_equal(got, expected)


def test_a_transform_whose_output_differs_from_its_declared_shape_is_still_joined() -> None:
    """A user transform that forgets output_shape still gets its batch back whole, with workers."""

    class Crop(BitDepth):
        def apply(self, images: np.ndarray, params: Any) -> np.ndarray:
            return np.ascontiguousarray(super().apply(images, params)[:, 1:, 2:])

    images = np.random.default_rng(0).integers(0, 256, (7, 10, 10, 1), dtype=np.uint8)
    t = Crop(bits=3)
    params = t.sample(np.random.default_rng(0), images.shape)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(base, "PARALLEL_CHUNK_BYTES", 100)
        got = base.apply_parallel(t, images, params, 2)
    assert np.array_equal(got, t.apply(images, params))
