"""The Classifier interface the service, the harness and training share.

A Classifier takes float ``(N, C, H, W)`` tensors in [0, 1] (differentiable, for attacks and
training) and uint8 ``(N, H, W, C)`` NumPy batches (the serving path).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from fencebox.torch_util import nhwc_uint8_to_nchw_float


@dataclass
class ModelCard:
    """What a model expects and how it was made: enough for a user to judge whether to trust it."""

    name: str
    input_shape: tuple[int, int, int]  # (H, W, C)
    num_classes: int
    class_names: list[str]
    normalisation: str = "x / 255 (inputs in [0, 1]; any mean/std is inside the model)"
    training_data: str = ""
    accuracy: dict[str, float] = field(default_factory=dict)
    how_made: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form, as written next to the weights."""
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelCard:
        """Inverse of :meth:`to_dict`; unknown keys go to ``extra``."""
        known = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in d.items() if k in known}
        kwargs["input_shape"] = tuple(kwargs["input_shape"])
        extra = dict(kwargs.pop("extra", {}) or {})
        extra.update({k: v for k, v in d.items() if k not in known})
        return cls(**kwargs, extra=extra)


class Classifier(ABC):
    """An image classifier usable by the service (uint8 in) and the harness (differentiable float in)."""

    card: ModelCard
    device: torch.device = torch.device("cpu")

    @abstractmethod
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Float ``(N, C, H, W)`` in [0, 1] -> logits ``(N, classes)``; differentiable where the model is."""

    def torch_module(self) -> torch.nn.Module | None:
        """The underlying torch module taking [0, 1] NCHW input, or None (e.g. ONNX)."""
        return None

    def predict_logits(self, images: np.ndarray) -> np.ndarray:
        """uint8 ``(N, H, W, C)`` -> float32 logits ``(N, classes)``, without autograd."""
        with torch.inference_mode():
            x = nhwc_uint8_to_nchw_float(images, self.device)
            return self.logits(x).float().cpu().numpy()

    def predict(self, images: np.ndarray) -> np.ndarray:
        """uint8 ``(N, H, W, C)`` -> int64 labels ``(N,)``."""
        return self.predict_logits(images).argmax(axis=1).astype(np.int64)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(H, W, C) the model expects."""
        return self.card.input_shape

    @property
    def num_classes(self) -> int:
        """Number of output classes."""
        return self.card.num_classes
