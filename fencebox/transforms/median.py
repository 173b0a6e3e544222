"""Median smoothing (Feature Squeezing, Xu et al. 2018; FenceBox's median filter).

The output equals ``scipy.ndimage.median_filter(images, size=(1, s, s, 1), mode="reflect")`` exactly, even
sizes included: the window of output pixel ``i`` covers input pixels ``i - s // 2 .. i - s // 2 + s - 1``
(scipy's origin convention) and the value taken is the element of rank ``s * s // 2`` (0-based; for even
windows the upper of the two middle values, never an average).  Borders are scipy's "reflect", which is
OpenCV's ``BORDER_REFLECT`` (``dcba|abcd|dcba``).

Odd sizes pad with ``cv2.copyMakeBorder`` and run ``cv2.medianBlur`` (its own border never reaches the
crop).  Even sizes, which OpenCV lacks, use a pruned selection network of element-wise min/max over
shifted views: sort each window column once (shared by every window containing it), sort the window rows
(the tableau stays column-sorted), keep only the tableau cells that can still hold the wanted rank, and
select from those.  The torch surrogate pads the same way, finds the same rank with the same network
(torch min/max, no autograd: far faster than unfold + ``torch.kthvalue``) and gathers the selected
window pixel, so it is exact and its gradient flows to the selected pixel.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from fencebox.errors import SpecError
from fencebox.transforms.base import Param, Params, Shape, Transform, bounds, per_image

if TYPE_CHECKING:
    import torch

MIN_SIZE, MAX_SIZE = 2, 9
STRIPE_ROWS = {2: 64, 4: 64, 6: 48, 8: 48}  # even size -> rows per network pass (measured best)
TORCH_CHUNK = 8  # images per network pass in the surrogate: bounds its temporary memory


def window_offsets(size: int) -> tuple[int, int]:
    """Pixels reached before and after the centre by a ``size`` window with scipy's origin 0."""
    return size // 2, size - 1 - size // 2


def reflect_index(n: int, before: int, after: int) -> np.ndarray:
    """Source indices of an axis of length ``n`` padded with scipy "reflect" (= cv2 BORDER_REFLECT)."""
    return np.pad(np.arange(n), (before, after), mode="symmetric")


def reflect_pad(x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """Pad an NCHW tensor like cv2 BORDER_REFLECT (edge repeated), differentiably and for any pad width.

    ``torch.nn.functional.pad`` has no edge-repeating reflection, so this gathers rows and columns.
    """
    import torch

    rows = torch.from_numpy(reflect_index(x.shape[2], top, bottom)).to(x.device)
    cols = torch.from_numpy(reflect_index(x.shape[3], left, right)).to(x.device)
    return x.index_select(2, rows).index_select(3, cols)


# ----- pruned min/max selection networks ----------------------------------------------------------------

# An op (a, b, lo, hi): variables lo := min(a, b) and hi := max(a, b); lo or hi is -1 when not needed.
Op = tuple[int, int, int, int]
MinMax = Callable[[Any, Any], Any]


def _batcher_pairs(n: int) -> Iterator[tuple[int, int]]:
    """Comparators of Batcher's odd-even merge sort on ``n`` rounded up to a power of two wires."""
    p = 1
    while p < n:
        p *= 2

    def merge(lo: int, hi: int, r: int) -> Iterator[tuple[int, int]]:
        step = r * 2
        if step < hi - lo:
            yield from merge(lo, hi, step)
            yield from merge(lo + r, hi, step)
            yield from ((i, i + r) for i in range(lo + r, hi - r, step))
        else:
            yield (lo, lo + r)

    def sort(lo: int, hi: int) -> Iterator[tuple[int, int]]:
        if hi - lo >= 1:
            mid = lo + (hi - lo) // 2
            yield from sort(lo, mid)
            yield from sort(mid + 1, hi)
            yield from merge(lo, hi, 1)

    yield from sort(0, p - 1)


@lru_cache(maxsize=64)
def selection_network(n: int, wanted: tuple[int, ...]) -> tuple[tuple[Op, ...], tuple[int, ...]]:
    """A min/max program putting the ranks ``wanted`` of ``n`` inputs (variables 0..n-1) into variables.

    Built from Batcher's sorting network: padding wires are +infinity constants (folded away), then every
    comparator that cannot reach a wanted output is dropped.  Returns the ops and the variable of each
    wanted rank.
    """
    inf = -1
    state = list(range(n)) + [inf] * (max(1, 1 << (n - 1).bit_length()) - n)
    ops: list[list[int]] = []
    nxt = n
    for i, j in _batcher_pairs(n):
        a, b = state[i], state[j]
        if b == inf:
            continue
        if a == inf:
            state[i], state[j] = b, inf
            continue
        ops.append([a, b, nxt, nxt + 1])
        state[i], state[j] = nxt, nxt + 1
        nxt += 2
    outputs = tuple(state[r] for r in wanted)
    needed = set(outputs)
    kept: list[Op] = []
    for a, b, lo, hi in reversed(ops):
        use_lo, use_hi = lo in needed, hi in needed
        if use_lo or use_hi:
            kept.append((a, b, lo if use_lo else -1, hi if use_hi else -1))
            needed.update((a, b))
    kept.reverse()
    return tuple(kept), outputs


def run_network(
    inputs: Sequence[Any], wanted: Sequence[int], minimum: MinMax = np.minimum, maximum: MinMax = np.maximum
) -> list[Any]:
    """Element-wise ranks ``wanted`` of equally shaped arrays ``inputs`` (a pruned sorting network).

    ``minimum`` and ``maximum`` are NumPy's by default; pass torch's to run it on tensors, on any device.
    """
    ops, outputs = selection_network(len(inputs), tuple(wanted))
    last_use: dict[int, int] = {}
    for k, (a, b, _, _) in enumerate(ops):
        last_use[a] = last_use[b] = k
    keep = set(outputs)
    vals: dict[int, Any] = dict(enumerate(inputs))
    for k, (a, b, lo, hi) in enumerate(ops):
        va, vb = vals[a], vals[b]
        if lo >= 0:
            vals[lo] = minimum(va, vb)
        if hi >= 0:
            vals[hi] = maximum(va, vb)
        for v in (a, b):
            if last_use[v] == k and v not in keep:
                del vals[v]
    return [vals[o] for o in outputs]


@lru_cache(maxsize=16)
def _tableau_plan(size: int) -> tuple[tuple[tuple[int, int], ...], int]:
    """The cells of a row- and column-sorted ``size`` x ``size`` tableau that may hold the median.

    Cell (a, b) has at least (a+1)(b+1) elements <= it and (s-a)(s-b) >= it, so with r = s*s // 2 it is
    certainly below rank r when (s-a)(s-b) > s*s - r and certainly above when (a+1)(b+1) > r + 1.  Returns
    the candidate cells and the rank of the median among them.
    """
    r = size * size // 2
    cells, below = [], 0
    for a in range(size):
        for b in range(size):
            if (size - a) * (size - b) > size * size - r:
                below += 1
            elif (a + 1) * (b + 1) <= r + 1:
                cells.append((a, b))
    return tuple(cells), r - below


def median_network(
    padded: Any, size: int, h: int, w: int, minimum: MinMax = np.minimum, maximum: MinMax = np.maximum
) -> Any:
    """Rank ``size*size//2`` of each ``size`` x ``size`` window of a padded (N, h+s-1, w+s-1, C) batch.

    Works for any size and on anything with NumPy-style slicing (NumPy arrays, or torch tensors with
    torch's minimum and maximum); the values are selected, never computed, so the result is exact.
    """
    cells, rank = _tableau_plan(size)
    rows_needed = sorted({a for a, _ in cells})
    columns = run_network([padded[:, a : a + h] for a in range(size)], rows_needed, minimum, maximum)
    by_row = dict(zip(rows_needed, columns, strict=True))
    candidates: list[Any] = []
    for a in rows_needed:
        wanted = [b for aa, b in cells if aa == a]
        row = by_row.pop(a)
        candidates += run_network([row[:, :, b : b + w] for b in range(size)], wanted, minimum, maximum)
    (out,) = run_network(candidates, [rank], minimum, maximum)
    return out


# ----- the transform --------------------------------------------------------------------------------------


class Median(Transform):
    """Per-channel median filter over a size x size window (scipy median_filter, mode "reflect", exactly)."""

    name = "median"
    params = (
        Param(
            "size",
            "int",
            default=3,
            low=MIN_SIZE,
            high=MAX_SIZE,
            allow_range=True,
            doc="window side in pixels; even sizes follow scipy (upper middle value, window shifted up-left)",
        ),
    )
    surrogate_kind = "exact"

    def __init__(self, size: int | Sequence[int] = 3) -> None:
        """See the class docstring and :attr:`params` for each parameter's meaning and range."""
        super().__init__(size=size)
        lo, hi = bounds(self.config["size"])
        self.randomized = lo != hi
        self.min_size = int(hi)

    def cost(self, shape: Shape) -> float:
        """Pixel-operations: ``size² + 4`` per value (pixel x channel) for the largest window drawn.

        An upper bound: OpenCV's odd-size median is sublinear in the window, the even-size selection
        network about ``size² log size / 2`` min/max per value, both under ``size²`` plus the padding.
        """
        size = int(bounds(self.config["size"])[1])
        return float(size * size + 4) * float(math.prod(shape))

    def sample(self, rng: np.random.Generator, shape: Shape) -> Params:
        """Draw the window size of each image (a constant when ``size`` is a single number)."""
        return {"size": per_image(self.config["size"], rng, shape[0], integer=True)}

    def _sizes(self, params: Params, n: int) -> np.ndarray:
        sizes = np.asarray(params["size"], dtype=np.int64).reshape(-1)
        if sizes.shape[0] != n:
            raise SpecError(f"median: params hold {sizes.shape[0]} sizes for a batch of {n} images")
        if sizes.size and (sizes.min() < MIN_SIZE or sizes.max() > MAX_SIZE):
            raise SpecError(f"median: parameter 'size' must be int in [{MIN_SIZE}, {MAX_SIZE}], got {sizes}")
        return sizes

    def apply(self, images: np.ndarray, params: Params) -> np.ndarray:
        """Median-filter each image with its window size (OpenCV for odd sizes, a min/max network for even)."""
        n = images.shape[0]
        sizes = self._sizes(params, n)
        if np.all(sizes == sizes[0]):
            return median_numpy(images, int(sizes[0]))
        out = np.empty_like(images)
        for s in np.unique(sizes):
            idx = np.flatnonzero(sizes == s)
            out[idx] = median_numpy(images[idx], int(s))
        return out

    def surrogate(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        """The same median in torch (same padding, same rank): exact, the gradient goes to the chosen pixel."""
        import torch

        sizes = self._sizes(params, x.shape[0])
        parts, order = [], []
        for s in np.unique(sizes):
            idx = np.flatnonzero(sizes == s)
            parts.append(median_torch(x[torch.from_numpy(idx).to(x.device)], int(s)))
            order.append(idx)
        inverse = np.argsort(np.concatenate(order), kind="stable")
        return torch.cat(parts)[torch.from_numpy(inverse).to(x.device)]


def median_numpy(images: np.ndarray, size: int) -> np.ndarray:
    """scipy's ``median_filter(images, size=(1, size, size, 1), mode="reflect")`` for a uint8 NHWC batch."""
    n, h, w, c = images.shape
    before, after = window_offsets(size)
    out = np.empty_like(images)
    for i in range(n):
        img = images[i, :, :, 0] if c == 1 else images[i]
        padded = cv2.copyMakeBorder(img, before, after, before, after, cv2.BORDER_REFLECT)
        if size % 2:
            out[i] = cv2.medianBlur(padded, size)[before : before + h, before : before + w].reshape(h, w, c)
            continue
        # Even sizes: a stripe of rows at a time, so the network's operands stay small (in cache, and
        # reused by the allocator instead of being mapped afresh) whatever the image size.
        padded = padded.reshape(1, h + size - 1, w + size - 1, c)
        stripe = STRIPE_ROWS[size]
        for top in range(0, h, stripe):
            bottom = min(h, top + stripe)
            out[i, top:bottom] = median_network(padded[:, top : bottom + size - 1], size, bottom - top, w)[0]
    return out


def median_torch(x: torch.Tensor, size: int) -> torch.Tensor:
    """The same median on float NCHW torch, differentiable: the gradient goes to the selected pixel.

    The rank is found without autograd by the min/max network (much faster than ``unfold`` plus
    ``kthvalue``); the first window pixel holding that value (raster order) is then gathered from the
    padded input, which is what carries the gradient.
    """
    import torch

    n, c, h, w = x.shape
    before, after = window_offsets(size)
    padded = reflect_pad(x, before, after, before, after)
    wp = w + size - 1
    with torch.no_grad():
        p = padded.detach()
        nhwc = p.permute(0, 2, 3, 1)
        value = torch.cat(
            [
                median_network(nhwc[i : i + TORCH_CHUNK], size, h, w, torch.minimum, torch.maximum)
                for i in range(0, n, TORCH_CHUNK)
            ]
        ).permute(0, 3, 1, 2)
        corner = (torch.arange(h, device=x.device)[:, None] * wp + torch.arange(w, device=x.device)).expand(
            n, c, h, w
        )
        index = torch.full((n, c, h, w), -1, dtype=torch.long, device=x.device)
        for a in range(size):
            for b in range(size):
                hit = (p[:, :, a : a + h, b : b + w] == value) & (index < 0)
                index = torch.where(hit, corner + (a * wp + b), index)
    return padded.reshape(n, c, -1).gather(2, index.reshape(n, c, -1)).reshape(n, c, h, w)
