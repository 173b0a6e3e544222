"""Small conversions between the serving path (uint8 NHWC NumPy) and the gradient path (float NCHW torch)."""

from __future__ import annotations

import numpy as np
import torch


def nhwc_uint8_to_nchw_float(images: np.ndarray, device: torch.device | str | None = None) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float32 (N, C, H, W) in [0, 1]."""
    t = (
        torch.from_numpy(np.ascontiguousarray(images)).to(device)
        if device
        else torch.from_numpy(np.ascontiguousarray(images))
    )
    return t.permute(0, 3, 1, 2).float().div_(255.0)


def nchw_float_to_nhwc_uint8(x: torch.Tensor) -> np.ndarray:
    """float (N, C, H, W) in [0, 1] -> uint8 (N, H, W, C), rounding to the nearest level."""
    q = (x.detach().clamp(0, 1) * 255.0).round().to(torch.uint8)
    return np.ascontiguousarray(q.permute(0, 2, 3, 1).cpu().numpy())
