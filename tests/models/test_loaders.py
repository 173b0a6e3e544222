"""``load_model`` resolves every model reference in one place, ``py:module:attr`` included, so the
service, the CLI and the harness accept the same references."""

from __future__ import annotations

import pytest

from fencebox.errors import ModelError
from fencebox.models import Classifier, load_model


def test_python_reference_gives_the_factorys_classifier() -> None:
    model = load_model("py:tests.test_service_helpers:tiny_model")
    assert isinstance(model, Classifier) and model.input_shape == (28, 28, 1)
    assert load_model("py:tests.test_service_helpers:tiny_model") is model  # the factory's own instance


@pytest.mark.parametrize(
    ("ref", "words"),
    [
        ("py:tests.test_service_helpers", "py:module:attr"),
        ("py:no_such_module_xyz:thing", "cannot import"),
        ("py:tests.test_service_helpers:ROOT", "did not give a fencebox Classifier"),
        ("nope:thing", "expected builtin, safetensors, state_dict, torchscript, onnx or py"),
    ],
)
def test_bad_python_references_are_model_errors(ref: str, words: str) -> None:
    with pytest.raises(ModelError, match=words):
        load_model(ref)
