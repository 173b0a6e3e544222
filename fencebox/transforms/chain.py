"""Chain and the random combinators: each is itself a Transform, so they nest freely.

- ``chain``: run transforms one after another (``a | b | c`` in the compact spec form).
- ``choice(k=1, transforms=[...])``: per image, pick k of the n transforms at random and run them
  (FenceBox's random mode, Qiu et al. 2020).
- ``random_order(transforms=[...])``: per image, run all of them in a random order.
- ``random_apply(p=0.5, transform=...)``: per image, run the transform with probability p.

Routing is per image: each image gets its own draw, and subsets of the batch go to each child
with their slice of the child's params, so determinism per seed and thread-splitting still hold.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from fencebox.errors import SpecError
from fencebox.transforms.base import Param, Params, Shape, Transform, slice_params

if TYPE_CHECKING:
    import torch


def _combined_surrogate_kind(children: Iterable[Transform]) -> str:
    kinds = {c.surrogate_kind for c in children}
    if not kinds or kinds == {"exact"}:
        return "exact"
    if kinds == {"identity"}:
        return "identity"
    return "approximate"


def _check_children(owner: str, transforms: Any) -> list[Transform]:
    if not isinstance(transforms, list | tuple) or not all(isinstance(t, Transform) for t in transforms):
        raise SpecError(f"{owner}: 'transforms' must be a list of transforms")
    return list(transforms)


class _Composite(Transform):
    """Shared plumbing of transforms that hold children."""

    children: list[Transform]

    def cost(self, shape: Shape) -> float:
        """Upper bound: every child may run on the whole batch (the routing picks subsets of it); at
        least one pixel-operation per value, the copy that routing makes."""
        return max(float(sum(c.cost(shape) for c in self.children)), float(math.prod(shape)))

    def _init_children(self, children: Sequence[Transform]) -> None:
        self.children = list(children)
        self.randomized = type(self).randomized or any(c.randomized for c in self.children)
        self.min_size = max([1, *(c.min_size for c in self.children)])
        self.surrogate_kind = _combined_surrogate_kind(self.children)

    def _require_shape_preserving(self, shape: Shape) -> None:
        for c in self.children:
            if c.output_shape(shape) != shape:
                raise SpecError(
                    f"{self.name}: every child must keep the image shape, but {c} maps {shape} to "
                    f"{c.output_shape(shape)}; use out_size equal to the input size"
                )


def _route(
    images: np.ndarray, groups: list[tuple[np.ndarray, Any]], fn: Any, out_shape: Shape | None = None
) -> np.ndarray:
    """Run ``fn(subset, key)`` on each group of image indices and put the results back in order."""
    out: np.ndarray | None = None
    for idx, key in groups:
        if idx.size == 0:
            continue
        res = fn(images[idx], idx, key)
        if out is None:
            out = np.empty((images.shape[0], *res.shape[1:]), dtype=res.dtype)
        elif res.shape[1:] != out.shape[1:]:
            raise SpecError(f"children produced different image shapes: {res.shape[1:]} vs {out.shape[1:]}")
        out[idx] = res
    assert out is not None
    return out


def _route_torch(x: torch.Tensor, groups: list[tuple[np.ndarray, Any]], fn: Any) -> torch.Tensor:
    """Differentiable twin of :func:`_route`: gather, run, and scatter back with an inverse permutation."""
    import torch

    parts, order = [], []
    for idx, key in groups:
        if idx.size == 0:
            continue
        sel = torch.as_tensor(idx, device=x.device, dtype=torch.long)
        parts.append(fn(x.index_select(0, sel), idx, key))
        order.append(idx)
    perm = np.concatenate(order)
    inv = torch.as_tensor(np.argsort(perm), device=x.device, dtype=torch.long)
    return torch.cat(parts, 0).index_select(0, inv)


class Chain(_Composite):
    """Run transforms one after another; a Chain is itself a Transform."""

    name = "chain"
    params = (Param("transforms", "transforms", default=(), doc="the transforms, in order"),)

    def __init__(self, transforms: Sequence[Transform] = ()) -> None:
        """``transforms``: the transforms to run, in order (none: the identity)."""
        super().__init__(transforms=transforms)

    def _check(self) -> None:
        self._init_children(_check_children(self.name, self._config["transforms"]))
        self._config["transforms"] = self.children

    def __str__(self) -> str:
        """Top level: the items joined by pipes (``none`` for the empty chain)."""
        return " | ".join(c.compact_item() for c in self.children) if self.children else "none"

    def compact_item(self) -> str:
        """Inside a pipeline a chain is written out: ``chain(transforms=[...])``."""
        return "chain(transforms=[" + ", ".join(c.compact_nested() for c in self.children) + "])"

    def compact_nested(self) -> str:
        """As a parameter value, a chain of two or more is a pipeline."""
        if len(self.children) >= 2:
            return " | ".join(c.compact_item() for c in self.children)
        return self.compact_item()

    def __iter__(self) -> Any:
        return iter(self.children)

    def __len__(self) -> int:
        return len(self.children)

    def __getitem__(self, i: int) -> Transform:
        return self.children[i]

    def output_shape(self, shape: Shape) -> Shape:
        for c in self.children:
            shape = c.output_shape(shape)
        return shape

    def cost(self, shape: Shape) -> float:
        """The sum of the children's costs, each on the shape its predecessor outputs (at least one
        pixel-operation per value: even the empty chain hands the batch on)."""
        total, values = 0.0, float(math.prod(shape))
        for c in self.children:
            total += c.cost(shape)
            shape = c.output_shape(shape)
        return max(total, values)

    def sample(self, rng: np.random.Generator, shape: Shape) -> Params:
        steps = []
        for c in self.children:
            steps.append(c.sample(rng, shape))
            shape = c.output_shape(shape)
        return {"steps": steps}

    def apply(self, images: np.ndarray, params: Params) -> np.ndarray:
        for c, p in zip(self.children, params["steps"], strict=True):
            images = c.apply(images, p)
        return images

    def surrogate(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        for c, p in zip(self.children, params["steps"], strict=True):
            x = c.surrogate(x, p)
        return x


class Choice(_Composite):
    """Per image, run k of the n transforms picked at random without replacement (FenceBox random mode)."""

    name = "choice"
    randomized = True
    params = (
        Param("k", "int", default=1, low=1, doc="how many transforms to run per image"),
        Param("transforms", "transforms", doc="the transforms to pick from"),
    )

    def __init__(self, *, k: int = 1, transforms: Sequence[Transform]) -> None:
        """``k`` of the ``transforms`` run per image, picked without replacement."""
        super().__init__(k=k, transforms=transforms)

    def _check(self) -> None:
        self._init_children(_check_children(self.name, self._config["transforms"]))
        self._config["transforms"] = self.children
        if not self.children:
            raise SpecError("choice: 'transforms' must not be empty")
        if self.config["k"] > len(self.children):
            raise SpecError(f"choice: k={self.config['k']} exceeds the {len(self.children)} transforms given")

    def output_shape(self, shape: Shape) -> Shape:
        outs = {c.output_shape(shape) for c in self.children}
        if len(outs) != 1:
            raise SpecError(f"choice: children produce different shapes from {shape}: {sorted(outs)}")
        return outs.pop()

    def sample(self, rng: np.random.Generator, shape: Shape) -> Params:
        n, k = shape[0], self.config["k"]
        if k > 1:
            self._require_shape_preserving(shape)
        else:
            self.output_shape(shape)
        picks = np.argsort(rng.random((n, len(self.children))), axis=1)[:, :k]
        steps = [[c.sample(rng, shape) for c in self.children] for _ in range(k)]
        return {"picks": picks, "steps": steps}

    def _groups(self, params: Params, j: int) -> list[tuple[np.ndarray, Any]]:
        picks = params["picks"][:, j]
        return [(np.flatnonzero(picks == i), i) for i in range(len(self.children))]

    def apply(self, images: np.ndarray, params: Params) -> np.ndarray:
        for j, step in enumerate(params["steps"]):
            images = _route(
                images,
                self._groups(params, j),
                lambda sub, idx, i, step=step: self.children[i].apply(sub, slice_params(step[i], idx)),
            )
        return images

    def surrogate(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        for j, step in enumerate(params["steps"]):
            x = _route_torch(
                x,
                self._groups(params, j),
                lambda sub, idx, i, step=step: self.children[i].surrogate(sub, slice_params(step[i], idx)),
            )
        return x


class RandomOrder(_Composite):
    """Per image, run every transform once, in a random order."""

    name = "random_order"
    randomized = True
    params = (Param("transforms", "transforms", doc="the transforms to shuffle"),)

    def __init__(self, transforms: Sequence[Transform]) -> None:
        """Every one of ``transforms`` runs once per image, in an order drawn per image."""
        super().__init__(transforms=transforms)

    def _check(self) -> None:
        self._init_children(_check_children(self.name, self._config["transforms"]))
        self._config["transforms"] = self.children

    def sample(self, rng: np.random.Generator, shape: Shape) -> Params:
        self._require_shape_preserving(shape)
        orders = np.argsort(rng.random((shape[0], len(self.children))), axis=1)
        return {"orders": orders, "children": [c.sample(rng, shape) for c in self.children]}

    def _groups(self, params: Params) -> list[tuple[np.ndarray, Any]]:
        orders = params["orders"]
        if orders.shape[0] == 0 or orders.shape[1] == 0:
            return [(np.arange(orders.shape[0]), ())]
        uniq, inverse = np.unique(orders, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        return [(np.flatnonzero(inverse == g), tuple(int(i) for i in row)) for g, row in enumerate(uniq)]

    def apply(self, images: np.ndarray, params: Params) -> np.ndarray:
        def run(sub: np.ndarray, idx: np.ndarray, order: tuple[int, ...]) -> np.ndarray:
            for i in order:
                sub = self.children[i].apply(sub, slice_params(params["children"][i], idx))
            return sub

        return _route(images, self._groups(params), run)

    def surrogate(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        def run(sub: torch.Tensor, idx: np.ndarray, order: tuple[int, ...]) -> torch.Tensor:
            for i in order:
                sub = self.children[i].surrogate(sub, slice_params(params["children"][i], idx))
            return sub

        return _route_torch(x, self._groups(params), run)


class RandomApply(_Composite):
    """Per image, run the transform with probability p, else pass the image through."""

    name = "random_apply"
    randomized = True
    params = (
        Param("p", "float", default=0.5, low=0.0, high=1.0, doc="probability of applying"),
        Param("transform", "transform", doc="the transform to apply"),
    )

    def __init__(self, *, p: float = 0.5, transform: Transform) -> None:
        """``transform`` runs on each image with probability ``p``."""
        super().__init__(p=p, transform=transform)

    def _check(self) -> None:
        child = self._config["transform"]
        if not isinstance(child, Transform):
            raise SpecError("random_apply: 'transform' must be a transform")
        self._init_children([child])

    def sample(self, rng: np.random.Generator, shape: Shape) -> Params:
        self._require_shape_preserving(shape)
        mask = rng.random(shape[0]) < self.config["p"]
        return {"mask": mask, "child": self.children[0].sample(rng, shape)}

    @staticmethod
    def _groups(params: Params) -> list[tuple[np.ndarray, Any]]:
        mask = params["mask"]
        return [(np.flatnonzero(mask), True), (np.flatnonzero(~mask), False)]

    def apply(self, images: np.ndarray, params: Params) -> np.ndarray:
        child = self.children[0]
        return _route(
            images,
            self._groups(params),
            lambda sub, idx, on: child.apply(sub, slice_params(params["child"], idx)) if on else sub,
        )

    def surrogate(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        child = self.children[0]
        return _route_torch(
            x,
            self._groups(params),
            lambda sub, idx, on: child.surrogate(sub, slice_params(params["child"], idx)) if on else sub,
        )
