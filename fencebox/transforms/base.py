"""The Transform contract every purifier, combinator and chain follows.

Serving path: ``uint8`` NumPy batches ``(N, H, W, C)`` with C = 1 or 3.
Randomness is explicit: ``params = t.sample(rng, shape)`` draws everything random, and
``t.apply(images, params)`` is then deterministic.  ``t.surrogate(x, params)`` is the
differentiable twin on float torch ``(N, C, H, W)`` tensors in [0, 1] used by the harness.

Params are a tree (dicts and lists) whose leaves are NumPy arrays with the batch as their
first axis, so any params can be sliced per image (:func:`slice_params`): that is what lets a
batch be split across threads, and combinators route subsets of a batch to a child, without
any transform knowing about it.
"""

from __future__ import annotations

import difflib
import itertools
import json
import math
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from fencebox.errors import InputError, SpecError
from fencebox.transforms.adapters import from_native, to_native
from fencebox.transforms.cancel import cancel_scope, check_cancelled, current_token

if TYPE_CHECKING:
    import torch

Shape = tuple[int, int, int, int]
Params = dict[str, Any]

_MISSING = object()


@dataclass(frozen=True)
class Param:
    """One declared parameter of a transform: type, bounds, default and a one-line description.

    ``kind`` is one of ``"int"``, ``"float"``, ``"str"``, ``"bool"``, ``"transform"`` or
    ``"transforms"`` (the last two for combinators).  ``allow_range`` lets a numeric parameter be
    given as ``[lo, hi]``, drawn per image by the transform.  ``nullable`` allows ``None``.
    """

    name: str
    kind: str
    default: Any = _MISSING
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] | None = None
    allow_range: bool = False
    nullable: bool = False
    doc: str = ""

    @property
    def required(self) -> bool:
        return self.default is _MISSING

    def describe_range(self) -> str:
        """A human-readable statement of the accepted values, used in error messages and tables."""
        if self.choices is not None:
            text = "one of " + ", ".join(repr(c) for c in self.choices)
        elif self.kind in ("int", "float") and (self.low is not None or self.high is not None):
            lo = "-inf" if self.low is None else _fmt_num(self.low)
            hi = "inf" if self.high is None else _fmt_num(self.high)
            text = f"{self.kind} in [{lo}, {hi}]"
        else:
            text = self.kind
        if self.allow_range:
            text += " or a range [lo, hi]"
        if self.nullable:
            text += " or null"
        return text

    def validate(self, owner: str, value: Any) -> Any:
        """Check and normalise ``value`` for this parameter, raising SpecError naming it and its range."""
        if value is None:
            if self.nullable:
                return None
            raise SpecError(f"{owner}: parameter '{self.name}' must be {self.describe_range()}, got null")
        if self.kind in ("transform", "transforms"):
            return value
        if self.allow_range and isinstance(value, list | tuple):
            if len(value) != 2:
                raise SpecError(
                    f"{owner}: parameter '{self.name}' as a range must be [lo, hi], got {list(value)!r}"
                )
            lo, hi = (self._scalar(owner, v) for v in value)
            if lo > hi:
                raise SpecError(f"{owner}: parameter '{self.name}' range [{lo}, {hi}] has lo > hi")
            return [lo, hi]
        return self._scalar(owner, value)

    def _scalar(self, owner: str, value: Any) -> Any:
        bad = SpecError(f"{owner}: parameter '{self.name}' must be {self.describe_range()}, got {value!r}")
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise bad
            return value
        if self.kind == "str":
            if not isinstance(value, str):
                raise bad
            out: Any = value
        elif self.kind == "int":
            if not is_integral(value):
                raise bad
            out = int(value)
        elif self.kind == "float":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise bad
            try:
                out = float(value)
            except OverflowError:  # an int too large for a float
                raise bad from None
            if not math.isfinite(out):
                raise bad
        else:  # pragma: no cover - declaration error, not user error
            raise TypeError(f"unknown parameter kind {self.kind!r}")
        if self.choices is not None and out not in self.choices:
            raise bad
        if self.low is not None and out < self.low:
            raise bad
        if self.high is not None and out > self.high:
            raise bad
        return out


def is_integral(value: Any) -> bool:
    """Whether ``value`` is an int, or a finite float with no fractional part (never a bool).

    Spec values arrive from YAML, JSON and the compact form, where ``5.0`` and ``1e400`` are floats:
    the first is a valid int parameter, the second (infinity) must be refused, not crash ``int()``.
    """
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value) and value.is_integer()


def format_value(v: Any) -> str:
    """A parameter value in the compact string form (JSON-like literals; transforms nested)."""
    if isinstance(v, Transform):
        return v.compact_nested()
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(format_value(x) for x in v) + "]"
    return str(v)


def _fmt_num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


class Transform:
    """Base class of every purifier, combinator and chain.

    Subclasses declare ``name`` (the registry name), ``params`` (a tuple of :class:`Param`),
    ``randomized`` and ``min_size`` (the smallest H and W they accept), and implement
    :meth:`apply`; random ones implement :meth:`sample`; exact or approximate differentiable ones
    override :meth:`surrogate` (the default is the identity: BPDA).  Validated parameter values
    live in one place, the read-only ``self.config``; attributes of the same names read them, and
    setting one is an error (build a new transform instead).
    """

    name: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()
    randomized: bool = False
    min_size: int = 1
    surrogate_kind: str = "identity"
    """How :meth:`surrogate` relates to :meth:`apply`: "exact", "approximate" or "identity" (BPDA)."""
    cost_per_value: ClassVar[float] = 4.0
    """Declared cost of :meth:`apply` in pixel-operations per value (pixel x channel) of the larger of
    its input and output; :meth:`cost` multiplies it out.  Transforms whose work grows with their
    parameters (window sizes, iterations, output size) override :meth:`cost` instead."""

    _config: dict[str, Any]
    _config_view: Mapping[str, Any]
    renamed: ClassVar[Mapping[str, tuple[str, int]]] = MappingProxyType({})
    """Old parameter spellings still read from specs: ``{"min_scale": ("scale", 0)}`` means a spec's
    ``min_scale`` is the low end of today's ``scale=[lo, hi]`` range (``max_scale`` would be index 1)."""

    def __init__(self, **kwargs: Any) -> None:
        """Validate the parameters (SpecError naming the parameter and its range) and store them.

        Built-in transforms declare an explicit signature and pass their arguments here by keyword;
        a plugin may also take ``**kwargs`` and rely on this constructor alone.
        """
        given = self.bind(kwargs)
        config: dict[str, Any] = {}
        for p in self.params:
            if p.name in given:
                config[p.name] = p.validate(self.name, given[p.name])
            elif isinstance(p.default, list | tuple) and p.kind not in ("transform", "transforms"):
                config[p.name] = list(p.default)  # a fresh list: the declaration is never shared or mutated
            else:
                config[p.name] = p.default
        object.__setattr__(self, "_config", config)
        object.__setattr__(self, "_config_view", MappingProxyType(config))
        self._check()
        object.__setattr__(self, "_sealed", True)

    @classmethod
    def bind(cls, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Map spec arguments onto the declared parameters, old spellings upgraded to today's.

        Raises SpecError for an unknown parameter (suggesting the closest name), a missing required one,
        or a value given in both its old and new spelling.  Values are validated by the constructor.
        """
        declared = {p.name: p for p in cls.params}
        given = dict(kwargs)
        upgraded: dict[str, list[Any]] = {}
        for old, (new, index) in cls.renamed.items():
            if old in given:
                if new in kwargs:
                    raise SpecError(f"{cls.name}: give '{new}' or its old spelling '{old}', not both")
                upgraded.setdefault(new, [None, None])[index] = given.pop(old)
        for new, pair in upgraded.items():
            default = declared[new].default
            lo, hi = default if isinstance(default, list | tuple) else (default, default)
            given[new] = [lo if pair[0] is None else pair[0], hi if pair[1] is None else pair[1]]
        unknown = sorted(set(given) - set(declared))
        if unknown:
            hints = []
            for u in unknown:
                close = difflib.get_close_matches(u, [*declared, *cls.renamed], n=1)
                hints.append(f"'{u}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
            accepted = ", ".join(declared) or "none"
            raise SpecError(f"{cls.name}: unknown parameter {', '.join(hints)}; accepted: {accepted}")
        for p in cls.params:
            if p.required and p.name not in given:
                raise SpecError(f"{cls.name}: missing required parameter '{p.name}' ({p.describe_range()})")
        return given

    @property
    def config(self) -> Mapping[str, Any]:
        """The validated parameter values (read-only; the one place they are stored)."""
        return self._config_view

    def __getattr__(self, key: str) -> Any:
        # Only reached when normal lookup fails: parameters read through to the config.
        config = self.__dict__.get("_config")
        if config is not None and key in config:
            return config[key]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {key!r}")

    def __setattr__(self, key: str, value: Any) -> None:
        if self.__dict__.get("_sealed") and (key in self._config or key in self.renamed):
            raise AttributeError(
                f"{self.name}: parameter '{key}' is read-only; build a new transform instead, "
                f"e.g. {type(self).__name__}(**{{**t.config, '{key}': ...}})"
            )
        object.__setattr__(self, key, value)

    def _check(self) -> None:
        """Cross-parameter validation hook; raise SpecError when the combination is invalid.

        It may normalise values in ``self._config`` (the config is read-only once it returns).
        """

    # ----- the contract -------------------------------------------------------------------------

    def output_shape(self, shape: Shape) -> Shape:
        """The shape of ``apply``'s output for an input batch of ``shape`` (default: unchanged)."""
        return shape

    def cost(self, shape: Shape) -> float:
        """Estimated work of :meth:`apply` on a batch of ``shape``, in pixel-operations (an upper bound).

        Machine-independent units, so a server can refuse a chain before running it: roughly the number
        of elementary operations, counted per value (pixel x channel).  The default is
        ``cost_per_value`` times the values of the larger of the input and output batches.
        """
        out = self.output_shape(shape)
        values = max(math.prod(shape), math.prod(out))
        return float(self.cost_per_value) * float(values)

    def sample(self, rng: np.random.Generator, shape: Shape) -> Params:
        """Draw every random choice for a batch of ``shape`` (per-image arrays, batch axis first)."""
        return {}

    def apply(self, images: np.ndarray, params: Params) -> np.ndarray:
        """Purify a uint8 ``(N, H, W, C)`` batch deterministically given ``params``."""
        raise NotImplementedError

    def surrogate(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        """Differentiable twin of :meth:`apply` on float ``(N, C, H, W)`` in [0, 1] (default: identity)."""
        return x

    # ----- conveniences built on the contract ---------------------------------------------------

    def __call__(self, images: Any, rng: np.random.Generator | int | None = None, workers: int = 1) -> Any:
        """Sample and apply in one step on a batch, a single image, a PIL image or a torch tensor.

        The result has the same kind as the input (a torch tensor stays on its device and dtype).
        ``rng`` may be a seed; ``None`` draws fresh randomness.  ``workers`` > 1 splits the batch
        across a thread pool; the output does not depend on it.
        """
        batch, restore = from_native(images)
        out = self.run(batch, rng, workers=workers)
        return to_native(out, restore)

    def run(
        self, images: np.ndarray, rng: np.random.Generator | int | None = None, workers: int = 1
    ) -> np.ndarray:
        """Validate a uint8 NHWC batch, sample params and apply them, optionally across threads."""
        check_batch(images, self.min_size, self.name)
        gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        shape: Shape = images.shape
        params = self.sample(gen, shape)
        return apply_parallel(self, images, params, workers)

    def to_spec(self) -> dict[str, Any]:
        """The dict form of this transform's spec: ``{"name": ..., <every parameter>: value}``."""
        spec: dict[str, Any] = {"name": self.name}
        for p in self.params:
            v = self.config[p.name]
            if p.kind == "transform":
                v = v.to_spec()
            elif p.kind == "transforms":
                v = [t.to_spec() for t in v]
            spec[p.name] = v
        return spec

    # ----- the compact string form (parsed by fencebox.spec) -------------------------------------

    def compact_call(self) -> str:
        """``name(param=value, ...)`` with every parameter, in declaration order."""
        args = ", ".join(f"{p.name}={format_value(self.config[p.name])}" for p in self.params)
        return f"{self.name}({args})"

    def compact_item(self) -> str:
        """How this transform is written as one item of a ``|`` pipeline."""
        return self.compact_call()

    def compact_nested(self) -> str:
        """How this transform is written as the value of a combinator's parameter."""
        return self.compact_item()

    def __str__(self) -> str:
        return self.compact_item()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Transform) and self.to_spec() == other.to_spec()

    def __hash__(self) -> int:
        return hash(str(self))

    @classmethod
    def describe(cls) -> str:
        """First line of the class docstring: what the transform does, for tables and docs."""
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""


# ----- helpers shared by all transforms -------------------------------------------------------------


def check_batch(images: Any, min_size: int = 1, owner: str = "transform") -> None:
    """Raise InputError unless ``images`` is a non-empty uint8 (N, H, W, C) array with C in {1, 3}."""
    if not isinstance(images, np.ndarray):
        raise InputError(f"{owner}: expected a uint8 NumPy array (N, H, W, C), got {type(images).__name__}")
    if images.dtype != np.uint8:
        raise InputError(f"{owner}: expected dtype uint8 (N, H, W, C), got {images.dtype}")
    if images.ndim != 4:
        raise InputError(f"{owner}: expected a 4-d batch (N, H, W, C), got shape {images.shape}")
    n, h, w, c = images.shape
    if c not in (1, 3):
        raise InputError(f"{owner}: expected 1 or 3 channels (N, H, W, C), got {c} in shape {images.shape}")
    if n == 0:
        raise InputError(f"{owner}: the batch is empty (shape {images.shape})")
    if h < min_size or w < min_size:
        raise InputError(f"{owner}: images must be at least {min_size}x{min_size} pixels, got {h}x{w}")


def batch_size(params: Any) -> int | None:
    """The batch size a params tree was sampled for (None when it holds no per-image arrays)."""
    if isinstance(params, np.ndarray):
        return int(params.shape[0]) if params.ndim else None
    if isinstance(params, Mapping):
        for v in params.values():
            n = batch_size(v)
            if n is not None:
                return n
    if isinstance(params, list | tuple):
        for v in params:
            n = batch_size(v)
            if n is not None:
                return n
    return None


def slice_params(params: Any, index: Any) -> Any:
    """Select images ``index`` (a slice, an index array or a mask) from every per-image leaf."""
    if isinstance(params, np.ndarray):
        return params[index] if params.ndim else params
    if isinstance(params, Mapping):
        return {k: slice_params(v, index) for k, v in params.items()}
    if isinstance(params, list):
        return [slice_params(v, index) for v in params]
    if isinstance(params, tuple):
        return tuple(slice_params(v, index) for v in params)
    return params


PARALLEL_CHUNK_BYTES = 1 << 20
"""About how much of the batch one worker takes at a time in :func:`apply_parallel`.

Pieces of a few images (six at 224x224x3), as many for each worker, let each worker write its
pieces straight into the output while the others run, and a worker that starts late (a new thread
takes up to a few ms to start) takes fewer of them.  On ``fencebox-default`` (64 images at
224x224x3, two cores) two workers gave 1.51-1.75x one in three runs of benchmarks/bench_chain.py
(median of alternating pairs), where two independent processes gave 2.00-2.12x; the piece size
itself made no measurable difference between 150 KB and whole halves."""


def apply_parallel(t: Transform, images: np.ndarray, params: Params, workers: int = 1) -> np.ndarray:
    """Apply ``t`` over pieces of the batch in a pool of ``workers`` threads; same output as one call.

    Each worker writes its pieces straight into the output batch (of :meth:`Transform.output_shape`);
    a transform whose output differs from what it declares is joined piece by piece instead.
    """
    n = images.shape[0]
    workers = max(1, min(int(workers), n))
    if workers == 1:
        return t.apply(images, params)
    per_piece = max(1, PARALLEL_CHUNK_BYTES // max(1, images[0].nbytes))
    count = min(n, workers * -(-n // (workers * per_piece)))  # a multiple of workers: even shares
    edges = np.linspace(0, n, count + 1).astype(int)
    pieces = [slice(int(a), int(b)) for a, b in itertools.pairwise(edges)]
    out = np.empty(t.output_shape(images.shape), dtype=images.dtype)
    token = current_token()

    def run_piece(s: slice) -> np.ndarray | None:
        with cancel_scope(token):
            check_cancelled()
            part = t.apply(images[s], slice_params(params, s))
        if part.shape[1:] != out.shape[1:] or part.dtype != out.dtype:
            return part
        out[s] = part
        return None

    with ThreadPoolExecutor(max_workers=workers) as pool:
        parts = list(pool.map(run_piece, pieces))
    if all(p is None for p in parts):
        return out
    return np.concatenate([out[s] if p is None else p for s, p in zip(pieces, parts, strict=True)], axis=0)


def default_workers() -> int:
    """The number of worker threads to use when a caller asks for 'all cores'."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def per_image(value: Any, rng: np.random.Generator, n: int, integer: bool = False) -> np.ndarray:
    """Draw a per-image value: a constant broadcast to ``n``, or uniform in ``[lo, hi]`` for a range."""
    if isinstance(value, list | tuple):
        lo, hi = value
        if integer:
            return rng.integers(int(lo), int(hi) + 1, size=n)
        return rng.uniform(float(lo), float(hi), size=n)
    return np.full(n, value, dtype=np.int64 if integer else np.float64)


def min_max_spelling(name: str) -> Mapping[str, tuple[str, int]]:
    """The :attr:`Transform.renamed` entry reading old ``min_<name>``/``max_<name>`` pairs as ``<name>=[lo, hi]``."""
    return MappingProxyType({f"min_{name}": (name, 0), f"max_{name}": (name, 1)})


def bounds(value: Any) -> tuple[Any, Any]:
    """``(lo, hi)`` of a parameter that is a constant or a range ``[lo, hi]`` (a constant is both)."""
    if isinstance(value, list | tuple):
        lo, hi = value
        return lo, hi
    return value, value


def to_float(images: np.ndarray) -> np.ndarray:
    """uint8 NHWC -> float32 in [0, 1]."""
    return images.astype(np.float32) * np.float32(1.0 / 255.0)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """float in [0, 1] -> uint8 by rounding to nearest and clipping."""
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
