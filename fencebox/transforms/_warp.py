"""Shared machinery of the geometric transforms: specialised kernels, and one sampling grid with two samplers.

Rigid transforms use OpenCV's specialised kernel in ``apply`` and the same sampling convention in
``surrogate`` (half-pixel centres, bilinear, no antialiasing, edges clamped):

- a resize is ``cv2.resize(INTER_LINEAR)`` against ``torch.nn.functional.interpolate(mode="bilinear",
  align_corners=False, antialias=False)`` (:func:`resize_linear`, :func:`interpolate_linear`);
- an affine map is ``cv2.warpAffine`` against ``grid_sample`` on the positions warpAffine samples
  (:func:`affine_positions`): the matrix applied in float on OpenCV 5, and OpenCV 4's fixed-point
  positions (1/32 pixel, rounded as ``imgwarp.cpp`` rounds them) where warpAffine still works that way.

Both pairs agree within 1 grey level (the uint8 rounding of the result).

The non-rigid transforms (grid distortion, elastic) are a general resampling: for each output pixel it names a source position
(``map_x``, ``map_y`` in pixel units, pixel centres at integers).  The grid is computed once, in
NumPy, from the per-image params; ``apply`` samples it with ``cv2.remap`` (bilinear) on uint8, and
``surrogate`` samples the *same* grid with ``torch.nn.functional.grid_sample`` (bilinear,
``align_corners=False`` with the matching normalisation), so the two agree up to rounding.

The grid is snapped to 1/32 pixel, OpenCV's sub-pixel resolution (``INTER_TAB_SIZE``): on the
fixed-point remap of OpenCV 4.x the bilinear weights are then exact, and on OpenCV 5's float remap
the snap changes nothing, so apply and surrogate differ only where a value falls on a .5 tie
(at most 1 grey level) on every supported OpenCV version.

Borders: ``"replicate"`` (coordinates are clipped into the image; reflection is done by folding the
coordinates in NumPy first, see :func:`fold_reflect`) or ``"constant"`` (zeros outside).
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Literal

import cv2
import numpy as np

from fencebox.errors import InputError
from fencebox.transforms.base import Params, Shape, Transform, batch_size, check_batch

if TYPE_CHECKING:
    import torch

Border = Literal["replicate", "constant"]
Grid = tuple[np.ndarray, np.ndarray]

SUBPIXEL = 32
"""Sub-pixel resolution of the grid: OpenCV's INTER_TAB_SIZE."""

_CV_BORDER = {"replicate": cv2.BORDER_REPLICATE, "constant": cv2.BORDER_CONSTANT}
_TORCH_PADDING = {"replicate": "border", "constant": "zeros"}


def snap(coords: np.ndarray) -> np.ndarray:
    """Round source coordinates to OpenCV's 1/32-pixel resolution, as float32 (what remap takes).

    In float32, scaling by 32, rounding and scaling back are exact, so the snapped grid is exactly
    representable and both samplers see the same positions.
    """
    out = np.array(coords, dtype=np.float32, copy=True)
    out *= SUBPIXEL
    np.rint(out, out=out)
    out *= 1.0 / SUBPIXEL
    return out


def fold_reflect(coords: np.ndarray, size: int) -> np.ndarray:
    """Fold coordinates into ``[0, size - 1]`` as a mirror at the image edges (OpenCV BORDER_REFLECT).

    Bilinear sampling at the folded coordinate equals bilinear sampling of the image extended by
    reflection about its outer pixel edges (``fedcba|abcdef``), so both samplers then need no
    reflection mode of their own.  Works in float32, in place on a copy.
    """
    c = np.array(coords, dtype=np.float32, copy=True)
    c += 0.5
    if c.size and (float(c.min()) < -size or float(c.max()) > 2 * size):
        np.mod(c, 2.0 * size, out=c)  # several periods away: reduce first (rare, huge displacements)
    # Mirror about 0 and about `size` (one fold each way suffices within [-size, 2 size]).
    np.abs(c, out=c)
    c -= size
    np.abs(c, out=c)
    np.subtract(size - 0.5, c, out=c)
    np.clip(c, 0.0, size - 1.0, out=c)
    return c


def resize_linear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize (half-pixel centres, clamped edges, no antialiasing) of one (H, W, C) uint8 image.

    ``cv2.resize`` with ``INTER_LINEAR``; ``image`` may be a strided view (a crop).  The result is
    (height, width, C), also for C = 1 (which OpenCV would return without its channel axis).
    """
    out = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    return out.reshape(height, width, image.shape[2])


def interpolate_linear(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The torch twin of :func:`resize_linear` on (N, C, H, W): the same sampling positions and weights."""
    import torch.nn.functional as F

    if (int(x.shape[-2]), int(x.shape[-1])) == (height, width):
        return x
    return F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=False)


@cache
def warp_affine_samples_float() -> bool:
    """Whether ``cv2.warpAffine`` samples at float positions (OpenCV 5) or on OpenCV 4's 1/32 grid.

    Probed once: a shift by 0.01 pixel of a black-to-white step moves the first value by 2.55 levels
    in float, and not at all on the fixed-point path (0.01 pixel rounds to 0/32).
    """
    step = np.array([[0, 255], [0, 255]], dtype=np.uint8)
    shift = np.array([[1.0, 0.0, 0.01], [0.0, 1.0, 0.0]])
    out = cv2.warpAffine(step, shift, (2, 2), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    return int(out[0, 0]) != 0


AFFINE_BITS = 10
"""OpenCV 4's fixed-point precision of affine positions (``AB_BITS`` in imgwarp.cpp)."""


def affine_positions(matrix: np.ndarray, out_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The source position ``matrix @ (x, y, 1)`` of every output pixel, as ``cv2.warpAffine`` samples it.

    Float64 ``(H, W)`` maps.  On OpenCV 5 these are the exact positions.  On OpenCV 4 warpAffine
    computes them in fixed point: ``round(M[0, 0] x 2^10)`` plus ``round((M[0, 1] y + M[0, 2]) 2^10)``
    plus half a 1/32 step, shifted down to 1/32 pixel (and the same for y); that is reproduced here
    so that the surrogate samples the same positions on either version.
    """
    oh, ow = out_hw
    m = np.asarray(matrix, dtype=np.float64)
    xs = np.arange(ow, dtype=np.float64)[None, :]
    ys = np.arange(oh, dtype=np.float64)[:, None]
    if warp_affine_samples_float():
        return m[0, 0] * xs + m[0, 1] * ys + m[0, 2], m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
    scale = float(1 << AFFINE_BITS)
    half_step = (1 << AFFINE_BITS) // SUBPIXEL // 2
    shift = AFFINE_BITS - 5  # down to 1/32 pixel (INTER_BITS = 5)
    out = []
    for row in (0, 1):
        across = np.rint(m[row, 0] * xs * scale).astype(np.int64)
        down = np.rint((m[row, 1] * ys + m[row, 2]) * scale).astype(np.int64) + half_step
        out.append(((across + down) >> shift) / float(SUBPIXEL))
    return out[0], out[1]


def separable_grid(xs: np.ndarray, ys: np.ndarray) -> Grid:
    """Full ``(H, W)`` maps from one row of x coordinates and one column of y coordinates."""
    xs32, ys32 = snap(xs), snap(ys)
    map_x = np.ascontiguousarray(np.broadcast_to(xs32[None, :], (ys32.size, xs32.size)))
    map_y = np.ascontiguousarray(np.broadcast_to(ys32[:, None], (ys32.size, xs32.size)))
    return map_x, map_y


class WarpTransform(Transform):
    """Base of transforms that resample each image through a per-image grid (see the module doc).

    Subclasses implement :meth:`grid` (the source coordinates of image ``i`` of the batch) and may
    override :meth:`fill_mode` and :meth:`output_shape`.  ``apply`` and ``surrogate`` are shared.
    """

    surrogate_kind = "exact"

    def grid(self, params: Params, i: int, in_hw: tuple[int, int], out_hw: tuple[int, int]) -> Grid:
        """Source coordinates ``(map_x, map_y)``, each float32 ``out_hw``, of image ``i``."""
        raise NotImplementedError

    def fill_mode(self) -> Border:
        """How samples outside the source image are filled: edge replication or zeros."""
        return "replicate"

    def _shapes(self, shape: Shape, params: Params) -> tuple[tuple[int, int], tuple[int, int]]:
        n = batch_size(params)
        if n is not None and n != shape[0]:
            raise InputError(f"{self.name}: params were sampled for {n} images, but the batch has {shape[0]}")
        out = self.output_shape(shape)
        return (shape[1], shape[2]), (out[1], out[2])

    def _check_nchw(self, x: torch.Tensor) -> tuple[int, ...]:
        """The shape of a surrogate input, which must be (N, C, H, W)."""
        if x.ndim != 4:
            raise InputError(f"{self.name}: surrogate expects (N, C, H, W), got shape {tuple(x.shape)}")
        return tuple(int(s) for s in x.shape)

    def apply(self, images: np.ndarray, params: Params) -> np.ndarray:
        """Resample every image with ``cv2.remap`` (bilinear) on the grid its params define."""
        check_batch(images, self.min_size, self.name)
        in_hw, out_hw = self._shapes(images.shape, params)
        n, c = images.shape[0], images.shape[3]
        out = np.empty((n, *out_hw, c), dtype=np.uint8)
        mode = _CV_BORDER[self.fill_mode()]
        for i in range(n):
            map_x, map_y = self.grid(params, i, in_hw, out_hw)
            res = cv2.remap(
                np.ascontiguousarray(images[i]),
                map_x,
                map_y,
                cv2.INTER_LINEAR,
                borderMode=mode,
                borderValue=0,
            )
            out[i] = res.reshape(*out_hw, c)
        return out

    def surrogate(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        """Sample the same grids with ``grid_sample`` (bilinear): exact up to rounding, differentiable in x."""
        import torch
        import torch.nn.functional as F

        n, c, h, w = self._check_nchw(x)
        in_hw, out_hw = self._shapes((n, h, w, c), params)
        grids = np.empty((n, *out_hw, 2), dtype=np.float64)
        for i in range(n):
            map_x, map_y = self.grid(params, i, in_hw, out_hw)
            # Normalised coordinates for align_corners=False: pixel centre j is (2j + 1) / size - 1.
            grids[i, ..., 0] = (2.0 * map_x.astype(np.float64) + 1.0) / w - 1.0
            grids[i, ..., 1] = (2.0 * map_y.astype(np.float64) + 1.0) / h - 1.0
        grid = torch.from_numpy(grids).to(device=x.device, dtype=x.dtype)
        return F.grid_sample(
            x, grid, mode="bilinear", padding_mode=_TORCH_PADDING[self.fill_mode()], align_corners=False
        )
