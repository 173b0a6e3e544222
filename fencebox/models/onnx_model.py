"""A :class:`Classifier` backed by onnxruntime on the CPU (serving only: its logits carry no gradient)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from fencebox.errors import InputError, ModelError
from fencebox.models.base import Classifier, ModelCard


def open_session(path: Path, threads: int | None = None) -> Any:
    """An onnxruntime CPU session for ``path`` (protobuf: no pickles); ModelError if it cannot be opened.

    ``threads`` defaults to torch's intra-op thread count, so one knob governs both runtimes.
    """
    import onnxruntime as ort

    if not path.is_file():
        raise ModelError(f"onnx:{path}: no such file")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or torch.get_num_threads())
    opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ModelError(f"onnx:{path}: onnxruntime cannot load it: {e}") from e


class OnnxClassifier(Classifier):
    """Runs an ONNX model taking float32 NCHW in [0, 1] and returning logits ``(N, classes)``."""

    def __init__(self, session: Any, card: ModelCard):
        self.session = session
        self.card = card
        self.device = torch.device("cpu")
        self._input = session.get_inputs()[0].name

    def _run(self, x: np.ndarray) -> np.ndarray:
        try:
            return np.asarray(self.session.run(None, {self._input: x})[0], dtype=np.float32)
        except Exception as e:
            raise InputError(f"{self.card.name}: onnxruntime rejected a batch of shape {x.shape}: {e}") from e

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of float NCHW ``x``; computed outside torch, so no gradient flows (use BPDA/transfer attacks)."""
        out = self._run(np.ascontiguousarray(x.detach().float().cpu().numpy()))
        return torch.from_numpy(out).to(x.device)

    def predict_logits(self, images: np.ndarray) -> np.ndarray:
        """uint8 ``(N, H, W, C)`` -> float32 logits, converted in NumPy (no torch round trip)."""
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
            raise InputError(f"{self.card.name}: expected uint8 (N, H, W, C) images")
        if tuple(images.shape[1:]) != tuple(self.card.input_shape):
            raise InputError(
                f"{self.card.name}: expected images of shape {self.card.input_shape}, got {images.shape[1:]}"
            )
        x = np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)
        return self._run(x)
