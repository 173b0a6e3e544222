"""The small CNN architectures FenceBox trains and ships, by name.

Each architecture takes float ``(N, C, H, W)`` in [0, 1] and returns logits; the input centring is inside the
module, so every caller feeds plain ``x / 255``.  Weights stay well under 1 MB so they can be committed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from fencebox.errors import ModelError


class SmallCNN(nn.Module):
    """conv(3x3) - ReLU - maxpool - conv(3x3) - ReLU - maxpool - fc - ReLU - fc: a LeNet-sized classifier."""

    def __init__(
        self, channels: int, height: int, width: int, num_classes: int, c1: int, c2: int, hidden: int
    ):
        super().__init__()
        if height < 4 or width < 4:
            raise ModelError(f"SmallCNN needs inputs of at least 4x4 pixels, got {height}x{width}")
        self.features = nn.Sequential(
            nn.Conv2d(channels, c1, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c2 * (height // 4) * (width // 4), hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of float NCHW input in [0, 1] (centred to [-1, 1] inside)."""
        return self.classifier(self.features(x * 2.0 - 1.0))


@dataclass(frozen=True)
class Arch:
    """A named architecture: how to build it for an input shape ``(H, W, C)`` and a class count."""

    name: str
    description: str
    build: Callable[[tuple[int, int, int], int], nn.Module]


def _small(c1: int, c2: int, hidden: int) -> Callable[[tuple[int, int, int], int], nn.Module]:
    def build(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        h, w, c = input_shape
        return SmallCNN(c, h, w, num_classes, c1, c2, hidden)

    return build


ARCHITECTURES: dict[str, Arch] = {
    a.name: a
    for a in (
        Arch(
            "mnist_cnn",
            "SmallCNN conv32-conv64-fc64 (MNIST-sized inputs: about 220k parameters)",
            _small(32, 64, 64),
        ),
        Arch("faces_cnn", "SmallCNN conv16-conv32-fc32 (tiny inputs, few examples)", _small(16, 32, 32)),
    )
}


def list_architectures() -> list[str]:
    """Names accepted by :func:`build_arch` and by ``safetensors:PATH?arch=NAME``."""
    return sorted(ARCHITECTURES)


def build_arch(name: str, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """Build architecture ``name`` for ``(H, W, C)`` inputs and ``num_classes`` outputs, randomly initialised."""
    if name not in ARCHITECTURES:
        raise ModelError(f"unknown architecture {name!r}; available: {', '.join(list_architectures())}")
    if num_classes < 2:
        raise ModelError(f"a classifier needs at least 2 classes, got {num_classes}")
    return ARCHITECTURES[name].build(tuple(input_shape), int(num_classes))  # type: ignore[arg-type]
