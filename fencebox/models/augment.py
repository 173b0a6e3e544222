"""Training-time augmentation: seeded random shifts and flips, and a purification chain as a layer.

:class:`ChainLayer` runs a FenceBox chain inside a torch graph: the forward value is the chain's exact
``apply`` on the uint8-quantised batch (what the service runs), the backward pass goes through the chain's
``surrogate`` (exact, approximate or identity/BPDA), so a model can be trained, and adversarially trained,
on purified inputs.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from fencebox.errors import ModelError
from fencebox.torch_util import nchw_float_to_nhwc_uint8, nhwc_uint8_to_nchw_float
from fencebox.transforms.base import Transform, check_batch


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by its own random offset in ``[-max_shift, max_shift]`` pixels, zero-filled."""
    if max_shift <= 0:
        return x
    n, _, h, w = x.shape
    s = max_shift
    padded = F.pad(x, (s, s, s, s))
    off = torch.randint(0, 2 * s + 1, (2, n), generator=generator).to(x.device)
    rows = (off[0][:, None] + torch.arange(h, device=x.device)[None, :])[:, None, :, None]
    cols = (off[1][:, None] + torch.arange(w, device=x.device)[None, :])[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, chan, rows, cols]


def random_hflip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror a random half of the images left-right."""
    flip = torch.rand(x.shape[0], generator=generator).to(x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


class ChainLayer:
    """Exact chain forward with surrogate gradients; randomness from its own seeded NumPy generator."""

    def __init__(self, chain: Transform, seed: int):
        self.chain = chain
        self.rng = np.random.default_rng(seed)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Purify float NCHW ``x`` in [0, 1]: value of ``chain.apply``, gradient of ``chain.surrogate``."""
        images = nchw_float_to_nhwc_uint8(x)
        check_batch(images, self.chain.min_size, self.chain.name or "chain")
        params = self.chain.sample(self.rng, images.shape)
        exact = nhwc_uint8_to_nchw_float(self.chain.apply(images, params)).to(x.device, x.dtype)
        surrogate = self.chain.surrogate(x, params)
        if surrogate.shape != exact.shape:
            raise ModelError(
                f"chain {self.chain}: surrogate shape {tuple(surrogate.shape)} differs from the exact output "
                f"{tuple(exact.shape)}; it cannot be trained through"
            )
        return surrogate + (exact - surrogate).detach()
