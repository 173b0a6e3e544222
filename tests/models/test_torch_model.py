"""Torch models (``fencebox.models.torch_model``): the Classifier interface of a built-in, and TorchScript
round trips (export a built-in, load it back, get the same predictions)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from fencebox.errors import InputError
from fencebox.models import Classifier, load_dataset, load_model
from fencebox.models.loaders import WEIGHTS_DIR


def test_torchscript_round_trip(tmp_path: Path, digits: np.ndarray) -> None:
    model = load_model("builtin:mnist", device="cpu")
    module = model.torch_module()
    assert module is not None
    path = tmp_path / "mnist.pt"
    torch.jit.trace(module, torch.rand(1, 1, 28, 28)).save(str(path))
    loaded = load_model(f"torchscript:{path}?shape=28x28x1", device="cpu")
    assert loaded.num_classes == 10
    assert np.array_equal(loaded.predict(digits), model.predict(digits))
    np.testing.assert_allclose(loaded.predict_logits(digits), model.predict_logits(digits), atol=1e-4)
    x = (torch.from_numpy(digits[:4]).permute(0, 3, 1, 2).float() / 255).requires_grad_(True)
    loaded.logits(x).sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_torchscript_needs_a_shape(tmp_path: Path) -> None:
    module = load_model("builtin:mnist", device="cpu").torch_module()
    path = tmp_path / "m.pt"
    torch.jit.trace(module, torch.rand(1, 1, 28, 28)).save(str(path))
    with pytest.raises(ValueError, match="shape=HxWxC"):
        load_model(f"torchscript:{path}", device="cpu")
    shutil.copy(WEIGHTS_DIR / "mnist.json", tmp_path / "m.json")  # a card beside the file supplies it
    assert load_model(f"torchscript:{path}", device="cpu").card.name == "mnist"


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
