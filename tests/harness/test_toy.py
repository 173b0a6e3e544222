"""The toy MNIST classifier of the harness tests is a fair stand-in: it learns, and it is a proper Classifier."""

from __future__ import annotations

import numpy as np
import torch

from tests.harness.toy import toy_data, toy_model


def test_toy_model_learns_held_out_digits() -> None:
    images, labels = toy_data(400)
    acc = (toy_model().predict(images) == labels).mean()
    assert acc > 0.85, acc


def test_toy_model_is_a_classifier_on_both_paths() -> None:
    model = toy_model()
    images, _ = toy_data(4)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    np.testing.assert_allclose(model.logits(x).numpy(), model.predict_logits(images), rtol=1e-5, atol=1e-5)
