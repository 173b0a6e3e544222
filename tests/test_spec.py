"""Specs: the three forms round-trip, presets load, and bad specs say what is wrong and where."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fencebox
from fencebox import SpecError, load_chain
from fencebox.chain import Chain


def _bit(bits: int, mode: str = "round") -> str:
    return f'bit_depth(bits={bits}, mode="{mode}")'


leaf = st.builds(_bit, st.integers(1, 8), st.sampled_from(["round", "truncate"]))


def _pipe(items: list[str]) -> str:
    return " | ".join(items)


specs = st.recursive(
    leaf,
    lambda inner: st.one_of(
        st.builds(
            lambda ts, k: f"choice(k={min(k, len(ts))}, transforms=[{', '.join(ts)}])",
            st.lists(inner, min_size=1, max_size=3),
            st.integers(1, 3),
        ),
        st.builds(
            lambda ts: f"random_order(transforms=[{', '.join(ts)}])", st.lists(inner, min_size=1, max_size=3)
        ),
        st.builds(
            lambda t, p: f"random_apply(p={p}, transform={t})", inner, st.sampled_from([0.0, 0.25, 1.0])
        ),
        st.builds(_pipe, st.lists(inner, min_size=2, max_size=3)),
    ),
    max_leaves=6,
)


@settings(max_examples=60, deadline=None)
@given(st.lists(specs, min_size=1, max_size=3).map(_pipe))
def test_string_dict_and_json_forms_round_trip(text: str) -> None:
    chain = load_chain(text)
    spec = chain.to_spec()
    assert load_chain(str(chain)).to_spec() == spec
    assert load_chain(spec).to_spec() == spec
    assert load_chain(json.loads(json.dumps(spec))).to_spec() == spec


def test_single_transform_spec_is_still_a_chain() -> None:
    chain = load_chain("bit_depth(bits=3)")
    assert isinstance(chain, Chain)
    assert chain.to_spec() == {
        "name": "chain",
        "transforms": [{"name": "bit_depth", "bits": 3, "mode": "round"}],
    }
    assert str(chain) == 'bit_depth(bits=3, mode="round")'


def test_positional_arguments_and_bare_words() -> None:
    assert (
        load_chain("bit_depth(4, truncate)").to_spec()
        == load_chain('bit_depth(bits=4, mode="truncate")').to_spec()
    )


def test_nested_single_chain_keeps_its_structure() -> None:
    inner = Chain([fencebox.load_chain("bit_depth(bits=2)")[0]])
    outer = Chain([inner])
    assert load_chain(str(outer)).to_spec() == outer.to_spec()


def test_yaml_and_json_files(tmp_path) -> None:
    text = "bit_depth(bits=3) | random_apply(p=0.5, transform=bit_depth(bits=1))"
    chain = load_chain(text)
    y = tmp_path / "chain.yaml"
    y.write_text(f"chain: '{text}'\n")
    j = tmp_path / "chain.json"
    j.write_text(json.dumps(chain.to_spec()))
    assert load_chain(str(y)).to_spec() == chain.to_spec()
    assert load_chain(j).to_spec() == chain.to_spec()


@pytest.mark.parametrize(
    ("spec", "fragments"),
    [
        ("bit_depht(bits=3)", ["unknown transform 'bit_depht'", "did you mean 'bit_depth'", "position 0"]),
        ("bit_depth(bits=3) | medain(size=3)", ["unknown transform 'medain'", "position 20"]),
        ("bit_depth(bits=9)", ["'bits'", "[1, 8]", "got 9"]),
        ("bit_depth(bits=2.5)", ["'bits'", "int in [1, 8]"]),
        ('bit_depth(mode="floor")', ["'mode'", "'round'", "'truncate'"]),
        ("bit_depth(bitz=3)", ["unknown parameter 'bitz'", "did you mean 'bits'"]),
        ("bit_depth(bits=3", ["position 16", "expected ')'"]),
        ("bit_depth(bits=3) |", ["position 19", "expected a transform name"]),
        ("bit_depth(bits=3) $", ["position 18", "unexpected character"]),
        ("bit_depth(bits=3, bits=4)", ["given twice"]),
        ("", ["empty chain spec"]),
        ("choice(k=3, transforms=[bit_depth()])", ["k=3 exceeds"]),
        ("random_apply(p=1.5, transform=bit_depth())", ["'p'", "[0, 1]"]),
        # Once crashes (OverflowError, JSONDecodeError, RecursionError, ValueError): HTTP 500 on overrides.
        ("bit_depth(bits=1e400)", ["'bits'", "int in [1, 8]", "got inf"]),
        ("bit_depth(bits=" + "9" * 400 + ")", ["'bits'", "int in [1, 8]"]),
        ("gaussian_noise(sigma=" + "9" * 400 + ")", ["'sigma'", "float in [0, 255]"]),
        ("choice(k=1e400, transforms=[bit_depth()])", ["'k'", "int in [1, inf]"]),
        ("shield(qualities=[1e400])", ["'qualities'", "[1, 100]"]),
        ('bit_depth(mode="\\q")', ["position 15", "bad string", "Invalid \\escape"]),
        ("bit_depth(bits=" + "[" * 2000 + "3" + "]" * 2000 + ")", ["nested more than 100", "position 114"]),
        ("bit_depth(bits=" + "9" * 5000 + ")", ["number too long", "position 15"]),
    ],
)
def test_bad_specs_raise_clear_errors(spec: str, fragments: list[str]) -> None:
    with pytest.raises(SpecError) as info:
        load_chain(spec)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"bits": 3}, "needs a 'name'"),
        ({"name": 3}, "must be a string"),
        ({"name": "choice", "transforms": "bit_depth"}, "list of transforms"),
        (42, "cannot build a chain"),
        ("missing-file.yaml", "cannot read chain spec file"),
    ],
)
def test_bad_dict_specs(spec: object, fragment: str) -> None:
    with pytest.raises(SpecError) as info:
        load_chain(spec)
    assert fragment in str(info.value)


def test_binary_spec_file_is_a_spec_error(tmp_path) -> None:
    path = tmp_path / "chain.yaml"
    path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(SpecError, match="not UTF-8 text"):
        load_chain(path)


def test_spec_error_is_a_value_error() -> None:
    assert issubclass(SpecError, ValueError)


@settings(max_examples=300, deadline=None)
@given(
    st.text(
        alphabet=st.sampled_from(list("bit_depth(bits=3)|[],'\"choice k random_apply p 0.5 -e+ none =")),
        max_size=60,
    )
)
def test_any_text_either_loads_or_raises_spec_error(text: str) -> None:
    try:
        chain = load_chain(text)
    except SpecError:
        return
    assert load_chain(str(chain)).to_spec() == chain.to_spec()
