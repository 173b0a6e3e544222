"""Shared 8x8 DCT, YCbCr, quantisation-table and differentiable-JPEG helpers for the codec transforms.

Two backends of the same maths:

- NumPy (serving path): blockwise DCT quantisation as one float64 GEMM per batch, snapped before every
  rounding so an image's output never depends on its batch (:func:`dct_quantise_np`);
- torch (gradient path): the same ops with differentiable rounding (:func:`dct_quantise_torch`) and a
  differentiable JPEG approximation (:func:`diff_jpeg`) in the style of Shin & Song (2017), "JPEG-resistant
  adversarial images": RGB -> YCbCr, chroma subsampling, 8x8 DCT, quantisation by the libjpeg tables
  scaled by quality, rounding (exact forward with Shin & Song's cubic gradient for the surrogates, see
  :data:`SURROGATE_ROUNDING`; straight-through and the fully cubic rounding are there too),
  dequantisation, IDCT, chroma upsampling, YCbCr -> RGB.

The block DCT is the orthonormal 2-D DCT-II, which is exactly the JPEG FDCT (ITU-T T.81, A.3.3).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

BLOCK = 8

# ITU-T T.81 Annex K tables K.1 (luminance) and K.2 (chrominance): libjpeg's base tables.
LUMA_TABLE = np.array(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    dtype=np.int64,
)
CHROMA_TABLE = np.array(
    [
        [17, 18, 24, 47, 99, 99, 99, 99],
        [18, 21, 26, 66, 99, 99, 99, 99],
        [24, 26, 56, 99, 99, 99, 99, 99],
        [47, 66, 99, 99, 99, 99, 99, 99],
        [99, 99, 99, 99, 99, 99, 99, 99],
        [99, 99, 99, 99, 99, 99, 99, 99],
        [99, 99, 99, 99, 99, 99, 99, 99],
        [99, 99, 99, 99, 99, 99, 99, 99],
    ],
    dtype=np.int64,
)

SUBSAMPLING_FACTORS: dict[str, tuple[int, int]] = {"4:4:4": (1, 1), "4:2:2": (1, 2), "4:2:0": (2, 2)}
"""Chroma subsampling name -> (vertical, horizontal) decimation factors, as in libjpeg's sampling factors."""

# JFIF (ITU-R BT.601 full range) colour conversion, as libjpeg and Pillow use.
_RGB_TO_YCBCR = np.array(
    [[0.299, 0.587, 0.114], [-0.168735892, -0.331264108, 0.5], [0.5, -0.418687589, -0.081312411]]
)
_YCBCR_TO_RGB = np.linalg.inv(_RGB_TO_YCBCR)
_CHROMA_OFFSET = np.array([0.0, 128.0, 128.0])


def dct_matrix(n: int = BLOCK) -> np.ndarray:
    """The orthonormal n-point DCT-II matrix D (rows are basis vectors): coefficients = D @ x."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    d = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    d[0] /= np.sqrt(2.0)
    return d


_D = dct_matrix()
KRON_DCT = np.kron(_D, _D)
"""64x64 matrix mapping a row-major flattened 8x8 block to its row-major flattened 2-D DCT."""


def quality_scale(quality: np.ndarray | int) -> np.ndarray:
    """libjpeg's ``jpeg_quality_scaling``: quality 1-100 -> percentage applied to the base tables."""
    q = np.clip(np.asarray(quality, dtype=np.int64), 1, 100)
    return np.where(q < 50, 5000 // q, 200 - 2 * q)


def scaled_table(base: np.ndarray, quality: np.ndarray | int) -> np.ndarray:
    """The quantisation table(s) libjpeg writes for ``quality`` (baseline: entries clipped to [1, 255]).

    ``quality`` may be an array of per-image qualities; the result then has shape ``quality.shape + (8, 8)``.
    """
    scale = quality_scale(quality)[..., None, None]
    return np.clip((base * scale + 50) // 100, 1, 255)


# ----- colour conversion ---------------------------------------------------------------------------


def _colour_np(
    x: np.ndarray, matrix: np.ndarray, offset_in: np.ndarray, offset_out: np.ndarray
) -> np.ndarray:
    """``matrix @ (pixel - offset_in) + offset_out`` on every pixel of an (N, H, W, 3) batch, in float64.

    One matrix product; its float64 rounding may differ with the batch around a pixel (~1e-13), which is
    why every consumer :func:`snap`-s before a rounding decision.
    """
    n, h, w, _ = x.shape
    flat = np.asarray(x, dtype=np.float64).reshape(-1, 3)
    out = flat @ matrix.T
    out += offset_out - matrix @ offset_in
    return out.reshape(n, h, w, 3)


def rgb_to_ycbcr_np(x: np.ndarray) -> np.ndarray:
    """RGB -> YCbCr (JFIF, values 0-255) of a (N, H, W, 3) batch, as float64."""
    return _colour_np(x, _RGB_TO_YCBCR, np.zeros(3), _CHROMA_OFFSET)


def ycbcr_to_rgb_np(x: np.ndarray) -> np.ndarray:
    """YCbCr (JFIF) -> RGB of a (N, H, W, 3) batch, as float64 (not clipped)."""
    return _colour_np(x, _YCBCR_TO_RGB, _CHROMA_OFFSET, np.zeros(3))


def rgb_to_ycbcr_torch(x: torch.Tensor) -> torch.Tensor:
    """RGB -> YCbCr (JFIF, values 0-255) on axis 1 of an (N, 3, H, W) tensor in 0-255."""
    import torch

    m = torch.as_tensor(_RGB_TO_YCBCR, dtype=x.dtype, device=x.device)
    off = torch.as_tensor(_CHROMA_OFFSET, dtype=x.dtype, device=x.device)
    return torch.einsum("ij,njhw->nihw", m, x) + off[None, :, None, None]


def ycbcr_to_rgb_torch(x: torch.Tensor) -> torch.Tensor:
    """YCbCr (JFIF) -> RGB on axis 1 of an (N, 3, H, W) tensor (not clipped)."""
    import torch

    m = torch.as_tensor(_YCBCR_TO_RGB, dtype=x.dtype, device=x.device)
    off = torch.as_tensor(_CHROMA_OFFSET, dtype=x.dtype, device=x.device)
    return torch.einsum("ij,njhw->nihw", m, x - off[None, :, None, None])


# ----- rounding with useful gradients ----------------------------------------------------------------


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round to nearest in the forward pass; identity gradient (straight-through estimator)."""
    return x + (x.round() - x).detach()


def round_cubic(x: torch.Tensor) -> torch.Tensor:
    """Shin & Song (2017)'s smooth rounding ``round(x) + (x - round(x))^3`` (gradient 3 (x - round x)^2)."""
    r = x.round().detach()
    return r + (x - r) ** 3


def round_cubic_grad(x: torch.Tensor) -> torch.Tensor:
    """Round to nearest in the forward pass; Shin & Song's cubic derivative ``3 (x - round x)^2`` backward.

    The forward value is the codec's own rounding (so the surrogate's output stays as close to libjpeg
    as straight-through rounding), while the gradient is the one of :func:`round_cubic`: near 0 for a
    coefficient well inside a quantisation bin (a small change does not move it) and up to 0.75 next to
    a decision boundary.  This is what makes the JPEG surrogates' gradient differ from the identity:
    with straight-through rounding a JPEG surrogate is linear, and a BPDA attack in disguise.
    """
    r = x.round().detach()
    cubed = (x - r) ** 3
    return r + (cubed - cubed.detach())


def clamp_ste(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Clamp in the forward pass, identity gradient (so saturated pixels still pass a gradient back)."""
    return x + (x.clamp(lo, hi) - x).detach()


ROUNDING = {"ste": round_ste, "cubic": round_cubic, "cubic_grad": round_cubic_grad}

SURROGATE_ROUNDING = "cubic_grad"
"""The coefficient rounding every JPEG-family surrogate uses (jpeg, shield, feature_distillation).

Measured in ``tests/transforms/test__dct.py``: the directional derivatives of these surrogates agree
with finite differences of the noise-smoothed real transform with cosine ~0.6-0.8 on photos, against
~0.1-0.4 for the identity (``"ste"``, i.e. BPDA); the forward value is the same as with ``"ste"``."""


# ----- blockwise DCT quantisation ----------------------------------------------------------------------


def _pad_amount(size: int, multiple: int) -> int:
    return (-size) % multiple


SNAP = float(2**-16)
"""Grid that float64 results are snapped to before any rounding decision (see :func:`snap`)."""


def snap(x: np.ndarray) -> np.ndarray:
    """Snap float64 values to multiples of 2^-16, in place, and return them.

    Summation order (BLAS kernels, SIMD tails, threads) moves float64 results by ~1e-12, which decides
    exact ties such as 65.5 differently for the same image in different batches.  Snapping first maps
    every such neighbourhood to the same grid point, so the rounding that follows is per-image invariant.
    """
    x *= 1.0 / SNAP
    np.rint(x, out=x)
    x *= SNAP
    return x


def dct_quantise_np(images: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Level-shift, 8x8 DCT, quantise by ``table`` (8x8 steps), dequantise, IDCT, on every plane of a batch.

    ``images`` is channel-last (N, H, W, C) with values 0-255 and any H, W (edges replicated to whole
    blocks, then cropped); the result is float64 of the same shape, snapped to the :data:`SNAP` grid so
    that a caller's rounding is bit-identical for an image alone or in any batch.  Quantisation rounds
    half to even on snapped quotients.  Vectorised: every block of the batch goes through one
    (M, 64) x (64, 64) matrix product each way, in float64.
    """
    n, h, w, c = images.shape
    ph, pw = _pad_amount(h, BLOCK), _pad_amount(w, BLOCK)
    x = np.pad(images, [(0, 0), (0, ph), (0, pw), (0, 0)], mode="edge") if ph or pw else images
    hb, wb = (h + ph) // BLOCK, (w + pw) // BLOCK
    blocks = np.empty((n, hb, wb, c, BLOCK, BLOCK), dtype=np.float64)
    np.copyto(blocks, x.reshape(n, hb, BLOCK, wb, BLOCK, c).transpose(0, 1, 3, 5, 2, 4))
    flat = blocks.reshape(-1, BLOCK * BLOCK)
    flat -= 128.0
    steps = np.asarray(table, dtype=np.float64).reshape(BLOCK * BLOCK)
    coef = np.matmul(flat, KRON_DCT.T)
    coef /= steps
    np.rint(snap(coef), out=coef)
    coef *= steps
    np.matmul(coef, KRON_DCT, out=flat)
    flat += 128.0
    snap(flat)
    out = np.empty((n, hb * BLOCK, wb * BLOCK, c), dtype=np.float64)
    np.copyto(out.reshape(n, hb, BLOCK, wb, BLOCK, c), blocks.transpose(0, 1, 4, 2, 5, 3))
    return out[:, :h, :w] if ph or pw else out


def dct_quantise_torch(
    planes: torch.Tensor, table: torch.Tensor, rounding: str = "ste", pad: bool = True
) -> torch.Tensor:
    """Torch twin of :func:`dct_quantise_np` with differentiable rounding (a key of :data:`ROUNDING`).

    ``planes`` is (N, P, H, W) in 0-255; ``table`` is (8, 8), (N, 1, 8, 8) or (N, P, 8, 8).  With
    ``pad=False`` the caller guarantees H and W are multiples of 8.
    """
    import torch
    import torch.nn.functional as F

    n, p, h, w = planes.shape
    ph, pw = _pad_amount(h, BLOCK), _pad_amount(w, BLOCK)
    if pad and (ph or pw):
        planes = F.pad(planes, (0, pw, 0, ph), mode="replicate")
    hp, wp = planes.shape[-2:]
    hb, wb = hp // BLOCK, wp // BLOCK
    kron = torch.as_tensor(KRON_DCT, dtype=planes.dtype, device=planes.device)
    blocks = (planes - 128.0).reshape(n, p, hb, BLOCK, wb, BLOCK).transpose(3, 4)
    flat = blocks.reshape(n, p, hb * wb, BLOCK * BLOCK)
    coef = flat @ kron.T
    steps = table.to(dtype=planes.dtype, device=planes.device)
    steps = steps.expand(n, p, BLOCK, BLOCK).reshape(n, p, 1, BLOCK * BLOCK)
    coef = ROUNDING[rounding](coef * (1.0 / steps)) * steps
    back = (coef @ kron).reshape(n, p, hb, wb, BLOCK, BLOCK).transpose(3, 4).reshape(n, p, hp, wp)
    return back[..., :h, :w] + 128.0


# ----- differentiable JPEG ------------------------------------------------------------------------------


def _as_quality_array(quality: Any, n: int) -> np.ndarray:
    q = np.asarray(quality, dtype=np.int64).reshape(-1)
    return np.broadcast_to(q, (n,)) if q.size == 1 else q


def diff_jpeg(
    x: torch.Tensor, quality: Any, subsampling: str = "4:2:0", rounding: str = "ste"
) -> torch.Tensor:
    """Differentiable approximation of a baseline libjpeg encode + decode of ``x`` (N, C, H, W) in [0, 1].

    ``quality`` is one int or one per image.  Mirrors libjpeg: YCbCr (JFIF) rounded to 8-bit samples,
    edge-replicated padding to whole MCUs, 2x box-filter chroma downsampling, orthonormal 8x8 DCT,
    quantisation by the Annex K tables scaled by quality, dequantisation, IDCT, range-limited 8-bit
    samples, "fancy" (triangle, i.e. bilinear) chroma upsampling to 8-bit samples, RGB.  The DCT coefficients are rounded
    with ``rounding`` (a key of :data:`ROUNDING`: the surrogates use :data:`SURROGATE_ROUNDING`, whose
    cubic gradient is what makes this more than the identity); every other rounding and clamp is
    straight-through, so the gradient is never blocked.  The forward value is close to the real codec
    (measured on 64x64 photo crops: mean 0.2-0.7 grey levels from libjpeg-turbo with "ste" or
    "cubic_grad", a few tenths more with "cubic"; the bounds are asserted in tests/transforms/test__dct.py).
    """
    import torch
    import torch.nn.functional as F

    n, c, h, w = x.shape
    q = _as_quality_array(quality, n)
    luma = torch.as_tensor(scaled_table(LUMA_TABLE, q), dtype=x.dtype, device=x.device)[:, None]
    v = x * 255.0
    if c == 1:
        y = dct_quantise_torch(v, luma, rounding)
        return clamp_ste(round_ste(clamp_ste(y, 0.0, 255.0)), 0.0, 255.0) / 255.0
    chroma = torch.as_tensor(scaled_table(CHROMA_TABLE, q), dtype=x.dtype, device=x.device)[:, None]
    fy, fx = SUBSAMPLING_FACTORS[subsampling]
    mh, mw = BLOCK * fy, BLOCK * fx
    v = F.pad(v, (0, _pad_amount(w, mw), 0, _pad_amount(h, mh)), mode="replicate")
    ycc = clamp_ste(round_ste(rgb_to_ycbcr_torch(v)), 0.0, 255.0)
    y = dct_quantise_torch(ycc[:, :1], luma, rounding, pad=False)
    cc = ycc[:, 1:]
    if fy > 1 or fx > 1:
        cc = F.avg_pool2d(cc, kernel_size=(fy, fx), stride=(fy, fx))
    cc = dct_quantise_torch(cc, chroma, rounding, pad=False)
    y = round_ste(clamp_ste(y, 0.0, 255.0))
    cc = round_ste(clamp_ste(cc, 0.0, 255.0))
    if fy > 1 or fx > 1:
        # libjpeg's "fancy" upsampling outputs 8-bit samples too (rounding here halves the mean distance
        # at quality 20-75 with 4:2:0; rounding the downsampled chroma as well makes it worse).
        cc = round_ste(
            F.interpolate(cc, scale_factor=(float(fy), float(fx)), mode="bilinear", align_corners=False)
        )
    rgb = ycbcr_to_rgb_torch(torch.cat([y, cc], dim=1))[..., :h, :w]
    return clamp_ste(round_ste(rgb), 0.0, 255.0) / 255.0
