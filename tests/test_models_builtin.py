"""Built-in models: accuracy measured on the held-out split, cards, integrity, serving-path checks, PGD."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from fencebox.errors import InputError, ModelError
from fencebox.models import Classifier, builtin_card, list_builtin_models, load_dataset, load_model
from fencebox.models.loaders import WEIGHTS_DIR
from fencebox.models.training import accuracy, adversarial

MIN_CLEAN = {"mnist": 0.98, "mnist-adv": 0.95, "faces": 0.9}
TEST_DATA = {"mnist": "builtin:mnist-test", "mnist-adv": "builtin:mnist-test", "faces": "builtin:faces-test"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


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


def test_adversarial_model_is_more_robust() -> None:
    """PGD-10 at eps=0.3 on 100 test digits: the plain model collapses, the adversarially trained one holds."""
    x, y = load_dataset("builtin:mnist-test")
    xt = torch.from_numpy(x[::10]).permute(0, 3, 1, 2).float() / 255
    yt = torch.from_numpy(y[::10])
    robust = {}
    for name in ("mnist", "mnist-adv"):
        model = load_model(f"builtin:{name}", device="cpu")
        gen = torch.Generator().manual_seed(0)

        def attack(
            a: torch.Tensor, b: torch.Tensor, m: Classifier = model, g: torch.Generator = gen
        ) -> torch.Tensor:
            return adversarial(m.logits, a, b, 0.3, 10, 0.05, g)

        robust[name] = accuracy(model.logits, xt, yt, attack=attack)
    assert robust["mnist"] < 0.2
    assert robust["mnist-adv"] > 0.6


def test_pgd_stays_in_the_ball() -> None:
    model = load_model("builtin:mnist", device="cpu")
    x, y = load_dataset("builtin:mnist-test")
    xt = torch.from_numpy(x[:32]).permute(0, 3, 1, 2).float() / 255
    adv = adversarial(
        model.logits, xt, torch.from_numpy(y[:32]), 0.1, 5, None, torch.Generator().manual_seed(0)
    )
    assert float((adv - xt).abs().max()) <= 0.1 + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1


def test_classifier_interface() -> None:
    model = load_model("builtin:mnist", device="cpu")
    assert isinstance(model, Classifier)
    x, _ = load_dataset("builtin:mnist-test")
    logits = model.predict_logits(x[:5])
    assert logits.shape == (5, 10) and logits.dtype == np.float32
    assert np.array_equal(model.predict(x[:5]), logits.argmax(1))
    xt = (torch.from_numpy(x[:5]).permute(0, 3, 1, 2).float() / 255).requires_grad_(True)
    model.logits(xt).sum().backward()
    assert xt.grad is not None and float(xt.grad.abs().sum()) > 0
    assert model.torch_module() is not None
    with pytest.raises(InputError, match="28x28x1"):
        model.predict(np.zeros((1, 32, 32, 3), np.uint8))
    with pytest.raises(InputError, match="uint8"):
        model.predict(np.zeros((1, 28, 28, 1), np.float32))


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
