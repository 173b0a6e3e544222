"""TorchScript and ONNX round trips: export a built-in, load it back, get the same predictions."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from fencebox.models import load_dataset, load_model
from fencebox.models.loaders import WEIGHTS_DIR


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return load_dataset("builtin:mnist-test")[0][:200]


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


def test_onnx_round_trip(tmp_path: Path, digits: np.ndarray) -> None:
    model = load_model("builtin:mnist", device="cpu")
    path = tmp_path / "mnist.onnx"
    module = model.torch_module()
    assert module is not None
    torch.onnx.export(
        module,
        (torch.rand(1, 1, 28, 28),),
        str(path),
        input_names=["x"],
        output_names=["logits"],
        dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}},
        dynamo=False,
    )
    loaded = load_model(f"onnx:{path}", device="cpu")  # shape from the ONNX input, classes from a dry run
    assert loaded.card.input_shape == (28, 28, 1) and loaded.num_classes == 10
    assert loaded.torch_module() is None
    assert np.array_equal(loaded.predict(digits), model.predict(digits))
    np.testing.assert_allclose(loaded.predict_logits(digits), model.predict_logits(digits), atol=1e-4)
    x = torch.from_numpy(digits[:3]).permute(0, 3, 1, 2).float() / 255
    np.testing.assert_allclose(loaded.logits(x).numpy(), model.logits(x).detach().numpy(), atol=1e-4)
