"""The defended model as a torch ``nn.Module``: exact purification forward, BPDA / surrogate backward, EOT.

``DefendedClassifier(model, chain, gradient="bpda"|"surrogate", eot_samples=K)`` takes float
``(N, C, H, W)`` tensors in [0, 1] and returns logits, so any torch attack can run against it
(``forward(x, gradient=...)`` picks the estimator for one call):

- forward: quantise to uint8 (what a client can send), run the chain's exact ``apply`` with fresh
  random params for each of the K EOT samples, then the model; the K logits are averaged;
- backward: the chain's ``surrogate`` on the same params (``gradient="surrogate"``) or the identity
  (``gradient="bpda"``), averaged over the K samples.  Both via the straight-through identity
  ``y = s(x) + (exact(x) - s(x)).detach()``: values exact, gradients from the surrogate.

Throughput: a chain's deterministic prefix (its leading non-random steps) runs once per call on the
N images, and only the random rest runs on the N x K tiled batch; the rest's surrogate is taken at
the exact output of the prefix.

:meth:`DefendedClassifier.judge` is the serving path (uint8 in, one fresh draw, labels out) that
decides whether an adversarial image succeeded.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from fencebox.chain import Chain
from fencebox.errors import InputError
from fencebox.models.base import Classifier
from fencebox.torch_util import nchw_float_to_nhwc_uint8, nhwc_uint8_to_nchw_float
from fencebox.transforms.base import Transform, apply_parallel, check_batch

GRADIENTS = ("bpda", "surrogate")


def _check_input(x: Any, model: Classifier) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
        got = f"{type(x).__name__} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise InputError(f"expected a float (N, C, H, W) tensor in [0, 1], got {got}")
    h, w, c = model.input_shape
    if tuple(x.shape[1:]) != (c, h, w):
        raise InputError(
            f"expected images of shape (N, {c}, {h}, {w}) for {model.card.name}, got {tuple(x.shape)}"
        )


def quantise_ste(x: torch.Tensor) -> torch.Tensor:
    """Round to the 256 uint8 levels in the forward pass; pass the gradient straight through."""
    q = (x.clamp(0.0, 1.0) * 255.0).round() / 255.0
    return x + (q - x).detach()


class UndefendedClassifier(nn.Module):
    """The bare model as an ``nn.Module`` on [0, 1] NCHW (oblivious and transfer attacks use it)."""

    def __init__(self, model: Classifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the bare model on ``x`` (no quantisation, no purification)."""
        _check_input(x, self.model)
        return self.model.logits(x)


class DefendedClassifier(nn.Module):
    """Model behind a purification chain, differentiable by BPDA or the chain's surrogate, with EOT.

    ``seed`` fixes the generator the EOT draws come from, so attacks are reproducible; the judge
    (:meth:`judge`) draws from a separate generator the attacker never sees.  ``workers`` > 1 runs the
    chain's exact ``apply`` across threads (codecs release the GIL).
    """

    def __init__(
        self,
        model: Classifier,
        chain: Transform,
        gradient: str = "bpda",
        eot_samples: int = 1,
        seed: int | None = 0,
        workers: int = 1,
    ) -> None:
        super().__init__()
        if gradient not in GRADIENTS:
            raise InputError(f"gradient must be one of {', '.join(GRADIENTS)}, got {gradient!r}")
        if not isinstance(eot_samples, int) or eot_samples < 1:
            raise InputError(f"eot_samples must be an integer >= 1, got {eot_samples!r}")
        self.model = model
        self.chain = chain
        self.gradient = gradient
        self.eot_samples = eot_samples
        self.workers = max(1, int(workers))
        self.prefix, self.rest = split_chain(chain)
        self.reseed(seed)

    def reseed(self, seed: int | None) -> None:
        """Reset the attacker's EOT generator and the judge's generator from ``seed``."""
        seq = np.random.SeedSequence(seed)
        attack_seq, judge_seq = seq.spawn(2)
        self.rng = np.random.default_rng(attack_seq)
        self.judge_rng = np.random.default_rng(judge_seq)

    def _purify(self, images: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, Any]:
        check_batch(images, self.chain.min_size, self.chain.name)
        params = self.chain.sample(rng, images.shape)
        out = apply_parallel(self.chain, images, params, self.workers)
        h, w, c = self.model.input_shape
        if out.shape[1:] != (h, w, c):
            raise InputError(
                f"the chain {self.chain} maps images to {out.shape[1:]}, but the model expects {(h, w, c)}; "
                "add a resize to the chain"
            )
        return out, params

    def _stage(
        self, t: Transform, u8: np.ndarray, xs: torch.Tensor, gradient: str
    ) -> tuple[np.ndarray, torch.Tensor]:
        """Run ``t`` exactly on ``u8`` (one draw) and return it with its straight-through torch form."""
        params = t.sample(self.rng, u8.shape)
        out = apply_parallel(t, u8, params, self.workers)
        exact = nhwc_uint8_to_nchw_float(out, xs.device).to(xs.dtype)
        sur = xs if gradient == "bpda" else t.surrogate(xs, params)
        if sur.shape != exact.shape:
            raise InputError(f"surrogate of {t} gave shape {tuple(sur.shape)}, exact {tuple(exact.shape)}")
        return out, sur + (exact - sur).detach()

    def forward(self, x: torch.Tensor, gradient: str | None = None) -> torch.Tensor:
        """Logits averaged over ``eot_samples`` exact purifications; gradients via BPDA or the surrogate.

        ``gradient`` overrides the estimator for this call only (``"bpda"`` or ``"surrogate"``).
        """
        mode = self.gradient if gradient is None else gradient
        if mode not in GRADIENTS:
            raise InputError(f"gradient must be one of {', '.join(GRADIENTS)}, got {mode!r}")
        _check_input(x, self.model)
        xq = quantise_ste(x)
        if len(getattr(self.chain, "children", [None])) == 0:
            return self._logits(xq)
        check_batch(nchw_float_to_nhwc_uint8(x[:1]), self.chain.min_size, self.chain.name)
        u8, y = nchw_float_to_nhwc_uint8(x), xq
        if self.prefix is not None:
            u8, y = self._stage(self.prefix, u8, y, mode)
        if self.rest is None:
            return self._logits(y)
        n, k = x.shape[0], self.eot_samples
        tiled = np.tile(u8, (k, 1, 1, 1)) if k > 1 else u8
        _, y = self._stage(self.rest, tiled, y.repeat(k, 1, 1, 1) if k > 1 else y, mode)
        logits = self._logits(y)
        return logits.view(k, n, -1).mean(0) if k > 1 else logits

    def _logits(self, y: torch.Tensor) -> torch.Tensor:
        h, w, c = self.model.input_shape
        if tuple(y.shape[1:]) != (c, h, w):
            raise InputError(
                f"the chain {self.chain} maps images to {tuple(y.shape[1:])} (C, H, W), but the model expects "
                f"{(c, h, w)}; add a resize to the chain"
            )
        return self.model.logits(y)

    def purify(self, images: np.ndarray) -> np.ndarray:
        """The serving path's purification of a uint8 NHWC batch, with one fresh draw from the judge's generator."""
        return self._purify(images, self.judge_rng)[0]

    def judge(self, images: np.ndarray) -> np.ndarray:
        """Labels the deployed system gives a uint8 NHWC batch: one fresh chain draw, then the model."""
        return self.model.predict(self.purify(images))

    def judge_logits(self, images: np.ndarray) -> np.ndarray:
        """Logits the deployed system computes for a uint8 NHWC batch (one fresh chain draw)."""
        return self.model.predict_logits(self.purify(images))


def split_chain(chain: Transform) -> tuple[Transform | None, Transform | None]:
    """``chain`` as (deterministic prefix, random rest); either is None when empty.

    Only a :class:`~fencebox.chain.Chain` splits (its leading non-random steps form the prefix); any
    other transform is all prefix when deterministic, all rest when random.
    """
    if not chain.randomized:
        return chain, None
    if not isinstance(chain, Chain):
        return None, chain
    steps = list(chain.children)
    cut = next(i for i, c in enumerate(steps) if c.randomized)
    prefix = Chain(steps[:cut]) if cut else None
    return prefix, Chain(steps[cut:])
