"""Model references (``fencebox.models.loaders``): built-in accuracy measured on the held-out split,
cards, integrity, bad references, safetensors metadata; ``load_model`` resolves every model reference
in one place, ``py:module:attr`` included, so the service, the CLI and the harness accept the same references."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fencebox.errors import ModelError
from fencebox.models import Classifier, builtin_card, list_builtin_models, load_dataset, load_model
from fencebox.models.loaders import WEIGHTS_DIR

MIN_CLEAN = {"mnist": 0.98, "mnist-adv": 0.95, "mnist-advgan": 0.97, "faces": 0.9}
TEST_DATA = {
    "mnist": "builtin:mnist-test",
    "mnist-adv": "builtin:mnist-test",
    "mnist-advgan": "builtin:mnist-test",
    "faces": "builtin:faces-test",
}


@pytest.mark.parametrize("name", list_builtin_models())
def test_builtin_accuracy_matches_card(name: str) -> None:
    model = load_model(f"builtin:{name}", device="cpu")
    x, y = load_dataset(TEST_DATA[name])
    acc = float((model.predict(x) == y).mean())
    assert acc >= MIN_CLEAN[name]
    assert acc == pytest.approx(model.card.accuracy["clean"], abs=1e-4)


@pytest.mark.parametrize("name", list_builtin_models())
def test_builtin_files(name: str) -> None:
    path = WEIGHTS_DIR / f"{name}.safetensors"
    assert path.stat().st_size < 1_000_000
    card = builtin_card(name)
    assert card.input_shape == load_dataset(TEST_DATA[name])[0].shape[1:]
    assert len(card.class_names) == card.num_classes
    assert card.training_data and card.how_made and card.extra["arch"]
    assert card.extra["sha256"] and card.extra["config"]["seed"] is not None


def test_tampered_weights_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for suffix in (".safetensors", ".json"):
        shutil.copy(WEIGHTS_DIR / f"faces{suffix}", tmp_path / f"faces{suffix}")
    data = bytearray((tmp_path / "faces.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (tmp_path / "faces.safetensors").write_bytes(bytes(data))
    monkeypatch.setattr("fencebox.models.loaders.WEIGHTS_DIR", tmp_path)
    with pytest.raises(ModelError, match="sha256"):
        load_model("builtin:faces", device="cpu")


@pytest.mark.parametrize(
    ("ref", "match"),
    [
        ("mnist", "looks like"),
        ("builtin:cifar", "unknown built-in"),
        ("pickle:/x.pkl", "unknown model kind"),
        ("safetensors:", "names no file"),
        ("safetensors:/nonexistent.safetensors?arch=mnist_cnn", "no such file"),
        ("torchscript:/x.pt?bogus=1", "unknown option"),
    ],
)
def test_bad_model_refs(ref: str, match: str) -> None:
    with pytest.raises(ModelError, match=match):
        load_model(ref, device="cpu")


def test_safetensors_ref_uses_card_and_metadata(tmp_path: Path) -> None:
    src = WEIGHTS_DIR / "mnist.safetensors"
    direct = load_model(f"safetensors:{src}", device="cpu")  # arch and shape from the card beside it
    assert direct.card.accuracy == builtin_card("mnist").accuracy
    lone = tmp_path / "lone.safetensors"
    shutil.copy(src, lone)  # no card: arch and shape come from the safetensors metadata
    model = load_model(f"safetensors:{lone}", device="cpu")
    assert model.card.input_shape == (28, 28, 1) and model.num_classes == 10
    with pytest.raises(ModelError, match="do not fit"):
        load_model(f"safetensors:{lone}?arch=faces_cnn", device="cpu")
    card = json.loads((WEIGHTS_DIR / "mnist.json").read_text())
    assert card["extra"]["bytes"] == src.stat().st_size


def test_python_reference_gives_the_factorys_classifier() -> None:
    model = load_model("py:tests.service.servers:tiny_model")
    assert isinstance(model, Classifier) and model.input_shape == (28, 28, 1)
    assert load_model("py:tests.service.servers:tiny_model") is model  # the factory's own instance


@pytest.mark.parametrize(
    ("ref", "words"),
    [
        ("py:tests.service.servers", "py:module:attr"),
        ("py:no_such_module_xyz:thing", "cannot import"),
        ("py:tests.service.servers:ROOT", "did not give a fencebox Classifier"),
        ("nope:thing", "expected builtin, safetensors, state_dict, torchscript, onnx or py"),
    ],
)
def test_bad_python_references_are_model_errors(ref: str, words: str) -> None:
    with pytest.raises(ModelError, match=words):
        load_model(ref)
