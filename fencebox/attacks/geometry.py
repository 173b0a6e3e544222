"""Perturbation geometry shared by every attack (training and harness): norms, projection onto the ε-ball, uint8 quantisation.

All images are float ``(N, C, H, W)`` tensors in [0, 1]; ε is on the same [0, 1] pixel scale.  The
harness judges uint8 images, so :func:`quantise_within` rounds an adversarial image to the 256 pixel
levels *without* leaving the ε-ball (plain rounding could add up to half a level beyond ε).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from fencebox.errors import InputError

NORMS = ("linf", "l2")


def check_norm(norm: str) -> str:
    """Return ``norm`` if it is one the harness supports ("linf" or "l2"), else raise InputError."""
    if norm not in NORMS:
        raise InputError(f"unknown norm {norm!r}; expected one of {', '.join(NORMS)}")
    return norm


def flat_norm(d: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-example norm of a perturbation batch ``(N, ...)`` -> ``(N,)``."""
    flat = d.reshape(d.shape[0], -1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(p=2, dim=1)


def project(x_adv: torch.Tensor, x0: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Project ``x_adv`` onto the ε-ball around ``x0`` intersected with the [0, 1] box."""
    d = x_adv - x0
    if norm == "linf":
        d = d.clamp(-eps, eps)
    else:
        n = flat_norm(d, "l2").clamp_min(1e-12)
        d = d * (eps / n).clamp(max=1.0).view(-1, *([1] * (d.dim() - 1)))
    return (x0 + d).clamp(0.0, 1.0)


def eps_levels(eps: float) -> int:
    """The largest whole number of uint8 levels that stays within ε (ε on the [0, 1] scale)."""
    return math.floor(eps * 255.0 + 1e-6)


def snap(x_adv: torch.Tensor, x0: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """The point of the uint8 lattice within budget nearest ``x_adv``: what a client can send, and the judge sees.

    ``x0`` is the clean image (float NCHW, on the lattice).  L∞: the change is rounded to whole grey
    levels and clipped to ``floor(255 ε)`` of them; L2: rounded to nearest and, if that leaves the ball,
    rescaled onto it and truncated toward zero (which only shrinks every component).  Attacks evaluate
    their iterates at this point, so nothing they find is undone by quantisation.
    """
    base = torch.round(x0.detach().double() * 255.0)
    delta = torch.round(x_adv.detach().double() * 255.0) - base
    if norm == "linf":
        k = eps_levels(eps)
        delta = delta.clamp(-k, k)
    else:
        limit = eps * 255.0
        norms = flat_norm(delta, "l2")
        scale = (limit / norms.clamp_min(1e-12)).clamp(max=1.0).view(-1, *([1] * (delta.dim() - 1)))
        over = (norms > limit + 1e-9).view_as(scale)
        delta = torch.where(over, torch.trunc(delta * scale), delta)
    return ((base + delta).clamp(0.0, 255.0) / 255.0).to(x_adv.dtype)


def budget(eps: float, norm: str) -> float:
    """The radius attacks project onto: ``floor(255 ε) / 255`` for L∞ (whole grey levels), ε for L2."""
    return eps_levels(eps) / 255.0 if norm == "linf" else eps


def quantise_within(x0_u8: np.ndarray, x_adv: torch.Tensor, eps: float, norm: str) -> np.ndarray:
    """Round ``x_adv`` (float NCHW) to uint8 NHWC so that the perturbation from ``x0_u8`` stays within ε.

    The uint8 form of :func:`snap`; the result is what the harness judges.
    """
    x0 = torch.from_numpy(np.ascontiguousarray(x0_u8)).permute(0, 3, 1, 2).double() / 255.0
    out = snap(x_adv.detach().cpu().double(), x0, eps, norm)
    return np.rint(out.permute(0, 2, 3, 1).numpy() * 255.0).astype(np.uint8)


def distance_u8(a: np.ndarray, b: np.ndarray, norm: str) -> np.ndarray:
    """Per-image distance between two uint8 NHWC batches on the [0, 1] scale."""
    d = (a.astype(np.float64) - b.astype(np.float64)).reshape(a.shape[0], -1) / 255.0
    return np.abs(d).max(1) if norm == "linf" else np.sqrt((d**2).sum(1))
