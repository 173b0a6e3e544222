"""A :class:`Classifier` around a torch module taking [0, 1] NCHW input (built-in, safetensors, TorchScript)."""

from __future__ import annotations

import numpy as np
import torch

from fencebox.errors import InputError
from fencebox.models.base import Classifier, ModelCard
from fencebox.torch_util import nhwc_uint8_to_nchw_float


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` or ``"auto"`` -> CUDA when present, else CPU; anything else as torch reads it."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class TorchClassifier(Classifier):
    """Serve and differentiate a torch module; the module is put in eval mode and moved to ``device``."""

    def __init__(self, module: torch.nn.Module, card: ModelCard, device: str | torch.device | None = "cpu"):
        self.device = resolve_device(device)
        self.module = module.to(self.device).eval()
        self.card = card

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Float ``(N, C, H, W)`` in [0, 1] -> logits ``(N, classes)``; differentiable."""
        return self.module(x)

    def torch_module(self) -> torch.nn.Module:
        """The wrapped module (eval mode, on :attr:`device`)."""
        return self.module

    def check_images(self, images: np.ndarray) -> None:
        """Raise InputError unless ``images`` is a uint8 ``(N, H, W, C)`` batch of the card's input shape."""
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
            got = (
                f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
            )
            raise InputError(f"{self.card.name}: expected uint8 (N, H, W, C) images, got {got}")
        if tuple(images.shape[1:]) != tuple(self.card.input_shape):
            h, w, c = self.card.input_shape
            raise InputError(
                f"{self.card.name}: expected images of {h}x{w}x{c} (H x W x C), got "
                f"{images.shape[1]}x{images.shape[2]}x{images.shape[3]}"
            )

    def predict_logits(self, images: np.ndarray) -> np.ndarray:
        """uint8 ``(N, H, W, C)`` -> float32 logits ``(N, classes)``, checked, without autograd."""
        self.check_images(images)
        return super().predict_logits(images)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """uint8 ``(N, H, W, C)`` -> int64 labels ``(N,)``; the argmax runs in torch, on the device."""
        self.check_images(images)
        with torch.inference_mode():
            x = nhwc_uint8_to_nchw_float(images, self.device)
            return self.module(x).argmax(dim=1).cpu().numpy().astype(np.int64, copy=False)
