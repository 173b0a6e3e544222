"""Non-rigid distortions: coarse-grid distortion (as in albumentations' GridDistortion) and elastic
deformation (Simard et al. 2003), both in FenceBox's random mode (Qiu et al. 2020).

Both resample through one NumPy grid shared by ``apply`` (cv2.remap) and ``surrogate``
(grid_sample), see ``_warp``, so the surrogates are exact.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from fencebox.transforms._warp import Grid, WarpTransform, fold_reflect, separable_grid, snap
from fencebox.transforms.base import Param, Params, Shape


def _axis_from_steps(size: int, steps: np.ndarray) -> np.ndarray:
    """Source coordinates along one axis: cell k of the output spans ``steps[k]``-scaled source length.

    The output axis is cut into ``len(steps)`` equal cells; the source cells get lengths proportional
    to ``steps`` and always add up to the whole side, so the image is stretched here and squeezed
    there but never leaves the frame.
    """
    knots_out = np.linspace(0.0, float(size), steps.size + 1)
    knots_src = np.concatenate([[0.0], np.cumsum(steps)]) * (size / float(np.sum(steps)))
    src = np.interp(np.arange(size, dtype=np.float64) + 0.5, knots_out, knots_src) - 0.5
    return np.clip(src, 0.0, size - 1.0)


class GridDistortion(WarpTransform):
    """Stretch and squeeze each image along a coarse grid of random cell sizes (albumentations-style)."""

    name = "grid_distortion"
    randomized = True
    min_size = 4
    params = (
        Param("num_steps", "int", default=5, low=1, high=64, doc="grid cells per axis"),
        Param(
            "distort_limit",
            "float",
            default=0.3,
            low=0.0,
            high=0.9,
            doc="cell sizes vary in [1 - limit, 1 + limit]",
        ),
    )

    def __init__(self, num_steps: int = 5, distort_limit: float = 0.3) -> None:
        """See the class docstring and :attr:`params` for each parameter's meaning and range."""
        super().__init__(num_steps=num_steps, distort_limit=distort_limit)

    def cost(self, shape: Shape) -> float:
        """Pixel-operations: 12 per value for the bilinear remap, plus 8 per pixel to build the maps."""
        n, h, w, _ = shape
        return 12.0 * float(math.prod(shape)) + 8.0 * float(n * h * w)

    def sample(self, rng: np.random.Generator, shape: Shape) -> Params:
        """Per image: the relative size of each grid cell along x and along y."""
        n, k, d = shape[0], self.config["num_steps"], self.config["distort_limit"]
        return {
            "xsteps": rng.uniform(1.0 - d, 1.0 + d, (n, k)),
            "ysteps": rng.uniform(1.0 - d, 1.0 + d, (n, k)),
        }

    def grid(self, params: Params, i: int, in_hw: tuple[int, int], out_hw: tuple[int, int]) -> Grid:
        """Separable piecewise-linear maps from the per-image cell sizes."""
        h, w = in_hw
        return separable_grid(
            _axis_from_steps(w, np.asarray(params["xsteps"][i], dtype=np.float64)),
            _axis_from_steps(h, np.asarray(params["ysteps"][i], dtype=np.float64)),
        )


def elastic_field(seed: int, h: int, w: int, alpha: float, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Simard's displacement field: uniform noise in [-1, 1], Gaussian-smoothed (sigma px), times alpha px.

    Deterministic in ``seed``, so ``apply`` and ``surrogate`` rebuild the same field and ``sample``
    stays cheap (it only draws the seed).
    """
    noise = np.random.default_rng(seed).random((2, h, w), dtype=np.float32)
    noise *= 2.0
    noise -= 1.0
    dx = cv2.GaussianBlur(noise[0], (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT_101)
    dy = cv2.GaussianBlur(noise[1], (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT_101)
    dx *= np.float32(alpha)
    dy *= np.float32(alpha)
    return dx, dy


class Elastic(WarpTransform):
    """Elastic deformation (Simard et al. 2003): a smoothed random displacement field, mirrored at borders.

    ``alpha`` scales the displacement in pixels and ``sigma`` (pixels) sets its smoothness; the
    defaults (34, 4) are Simard's.  The field comes from a per-image seed drawn in ``sample``.
    """

    name = "elastic"
    randomized = True
    min_size = 4
    params = (
        Param("alpha", "float", default=34.0, low=0.0, high=10000.0, doc="displacement scale, in pixels"),
        Param(
            "sigma",
            "float",
            default=4.0,
            low=0.1,
            high=1000.0,
            doc="Gaussian smoothing of the field, in pixels",
        ),
    )

    def __init__(self, alpha: float = 34.0, sigma: float = 4.0) -> None:
        """See the class docstring and :attr:`params` for each parameter's meaning and range."""
        super().__init__(alpha=alpha, sigma=sigma)

    def cost(self, shape: Shape) -> float:
        """Pixel-operations: 12 per value for the bilinear remap, plus per pixel the two Gaussian-smoothed
        displacement fields (separable, kernel side ``8 * sigma + 1``: ``4 * (8 * sigma + 1)``) and 16 for
        the noise, folding and snapping."""
        n, h, w, _ = shape
        k = 8.0 * float(self.config["sigma"]) + 1.0
        return 12.0 * float(math.prod(shape)) + (4.0 * k + 16.0) * float(n * h * w)

    def sample(self, rng: np.random.Generator, shape: Shape) -> Params:
        """Per image: the seed of its displacement field."""
        return {"seed": rng.integers(0, 2**63 - 1, size=shape[0], dtype=np.int64)}

    def grid(self, params: Params, i: int, in_hw: tuple[int, int], out_hw: tuple[int, int]) -> Grid:
        """Identity plus the seeded displacement field, folded at the edges (mirror border)."""
        h, w = in_hw
        dx, dy = elastic_field(int(params["seed"][i]), h, w, self.config["alpha"], self.config["sigma"])
        dx += np.arange(w, dtype=np.float32)[None, :]
        dy += np.arange(h, dtype=np.float32)[:, None]
        map_x, map_y = fold_reflect(dx, w), fold_reflect(dy, h)
        return snap(map_x), snap(map_y)
