"""Conversions between the kinds of image a user may pass and the uint8 NHWC batch transforms use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fencebox.errors import InputError


@dataclass(frozen=True)
class Restore:
    """How to turn a uint8 NHWC batch back into the kind of object the caller passed in."""

    kind: str  # "numpy" | "pil" | "torch"
    single: bool = False
    dtype: Any = None
    device: Any = None
    pil_mode: str | None = None
    gray_2d: bool = False


def from_native(images: Any) -> tuple[np.ndarray, Restore]:
    """Accept an NHWC/HWC/HW uint8 array, a PIL image or a torch NCHW/CHW tensor (uint8 or float in [0, 1])."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover
        Image = None  # type: ignore[assignment]
    if Image is not None and isinstance(images, Image.Image):
        mode = images.mode
        if mode not in ("L", "RGB"):
            images = images.convert("RGB" if mode not in ("1", "I", "I;16", "F") else "L")
        arr = np.asarray(images, dtype=np.uint8)
        arr = arr[..., None] if arr.ndim == 2 else arr
        return np.ascontiguousarray(arr[None]), Restore("pil", single=True, pil_mode=images.mode)
    if type(images).__module__.startswith("torch"):
        import torch

        if not isinstance(images, torch.Tensor):
            raise InputError(f"expected an image tensor, got {type(images).__name__}")
        single = images.ndim == 3
        t = images[None] if single else images
        if t.ndim != 4:
            raise InputError(
                f"expected a torch tensor (N, C, H, W) or (C, H, W), got shape {tuple(images.shape)}"
            )
        if t.dtype == torch.uint8:
            arr = t.detach().permute(0, 2, 3, 1).cpu().numpy()
        elif t.dtype.is_floating_point:
            arr = (
                (t.detach().float().clamp(0, 1) * 255.0)
                .round()
                .to(torch.uint8)
                .permute(0, 2, 3, 1)
                .cpu()
                .numpy()
            )
        else:
            raise InputError(f"expected a uint8 or float torch tensor, got {t.dtype}")
        return np.ascontiguousarray(arr), Restore(
            "torch", single=single, dtype=images.dtype, device=images.device
        )
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8:
            raise InputError(f"expected dtype uint8 images (N, H, W, C), got {images.dtype}")
        if images.ndim == 2:
            return np.ascontiguousarray(images[None, :, :, None]), Restore("numpy", single=True, gray_2d=True)
        if images.ndim == 3:
            if images.shape[-1] not in (1, 3):
                raise InputError(
                    f"a 3-d array is read as one (H, W, C) image with C in {{1, 3}}, got shape {images.shape}"
                )
            return np.ascontiguousarray(images[None]), Restore("numpy", single=True)
        if images.ndim == 4:
            return np.ascontiguousarray(images), Restore("numpy")
        raise InputError(
            f"expected a uint8 array (N, H, W, C), (H, W, C) or (H, W), got shape {images.shape}"
        )
    raise InputError(
        f"expected a NumPy uint8 array, a PIL image or a torch tensor, got {type(images).__name__}"
    )


def to_native(batch: np.ndarray, restore: Restore) -> Any:
    """Inverse of :func:`from_native` for a processed batch."""
    if restore.kind == "pil":
        from PIL import Image

        img = batch[0]
        return Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
    if restore.kind == "torch":
        import torch

        t = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).contiguous()
        if restore.dtype != torch.uint8:
            t = t.to(restore.dtype) / 255.0
        t = t.to(restore.device)
        return t[0] if restore.single else t
    if restore.gray_2d:
        return batch[0, :, :, 0]
    return batch[0] if restore.single else batch
