"""AdvGAN (Xiao et al. 2018): a small generator that makes an adversarial perturbation in one forward pass.

The generator ``G`` maps an image to a perturbation: its tanh output is mapped onto each pixel's
feasible interval ``[max(x - k/255, 0), min(x + k/255, 1)]`` (:func:`perturb`), so every pixel moves by at
most ``k`` grey levels (the L∞ budget as a whole number of levels, ``k = floor(255 ε)``).  ``G`` is trained against a target's logits with
the paper's losses: the C&W margin ``max(z_y - max_{j≠y} z_j, -κ)`` (untargeted) plus ``alpha`` times the
least-squares GAN loss of a small discriminator ``D`` that tells generated images from clean ones.  The
paper's soft hinge on the perturbation norm is not needed: the tanh bound enforces the budget exactly.

Used by ``fencebox train --adversarial advgan`` (a model trained on generated examples mixed with clean
ones) and by the harness's AdvGAN attack (:mod:`fencebox.harness.advgan`), which trains ``G`` against
the defended model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fencebox.errors import ConfigError, ModelError

LogitsFn = Callable[[torch.Tensor], torch.Tensor]


def grey_levels(eps: float) -> int:
    """The L∞ budget ``eps`` (pixel units in [0, 1]) as a whole number of grey levels: ``floor(255 eps)``."""
    if not (0 <= eps <= 1) or not math.isfinite(eps):
        raise ConfigError(f"eps must be in [0, 1], got {eps}")
    return math.floor(255.0 * eps + 1e-9)


class Generator(nn.Module):
    """Encoder (stride 2), two residual blocks, decoder back to the input size; ~40k parameters.

    The input carries two coordinate channels (CoordConv): a plain convolutional net sees MNIST's black
    background as the same everywhere and could only paint it one uniform value, while a useful
    perturbation depends on the position.  Any input size: the decoder upsamples to the input's size.
    """

    def __init__(self, channels: int, width: int = 32) -> None:
        super().__init__()
        self.channels, self.width = channels, width
        self.enc = nn.Sequential(
            nn.Conv2d(channels + 2, width // 2, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width // 2, width, 3, stride=2, padding=1),
            nn.LeakyReLU(0.2),
        )
        self.res = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(width, width, 3, padding=1),
                nn.LeakyReLU(0.2),
                nn.Conv2d(width, width, 3, padding=1),
            )
            for _ in range(2)
        )
        self.dec = nn.Sequential(
            nn.Conv2d(width, width // 2, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width // 2, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Unbounded perturbation logits, shape of ``x`` (:func:`perturb` bounds them)."""
        n, _, height, width = x.shape
        ys = torch.linspace(-1.0, 1.0, height, dtype=x.dtype, device=x.device)
        xs = torch.linspace(-1.0, 1.0, width, dtype=x.dtype, device=x.device)
        grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij")).expand(n, -1, -1, -1)
        h = self.enc(torch.cat([x * 2.0 - 1.0, grid], 1))
        for block in self.res:
            h = F.leaky_relu(h + block(h), 0.2)
        h = F.interpolate(h, size=x.shape[-2:], mode="nearest")
        return self.dec(h)


class Discriminator(nn.Module):
    """Two strided convolutions, global average pooling, one logit: clean (1) or generated (0)."""

    def __init__(self, channels: int, width: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width // 2, 3, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width // 2, width, 3, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(width, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One realism score per image."""
        return self.net(x * 2.0 - 1.0).squeeze(1)


def perturb(generator: nn.Module, x: torch.Tensor, levels: int) -> torch.Tensor:
    """The adversarial image: ``G``'s tanh output mapped onto each pixel's feasible interval.

    The interval is ``[max(x - k/255, 0), min(x + k/255, 1)]``, so the budget and the [0, 1] range hold
    by construction, with no clipping that would cut the gradient (clipping a black background pixel
    pushed below 0 gives no gradient, and the generator then collapses to a useless saturated corner).
    Differentiable in ``G``'s parameters.
    """
    e = levels / 255.0
    lo, hi = (x - e).clamp_min(0.0), (x + e).clamp_max(1.0)
    return lo + (hi - lo) * (torch.tanh(generator(x)) + 1.0) / 2.0


def generate_uint8(generator: nn.Module, images: np.ndarray, levels: int, batch: int = 512) -> np.ndarray:
    """Adversarial uint8 NHWC images (:func:`perturb`, rounded): each pixel moves by at most ``levels``."""
    out = np.empty_like(images)
    with torch.no_grad():
        for i in range(0, len(images), batch):
            u8 = torch.from_numpy(np.ascontiguousarray(images[i : i + batch])).permute(0, 3, 1, 2)
            v = u8.to(torch.float32)
            lo, hi = (v - levels).clamp_min(0.0), (v + levels).clamp_max(255.0)
            t = torch.tanh(generator(v / 255.0))
            adv = (lo + (hi - lo) * (t + 1.0) / 2.0).round().clamp(lo, hi).to(torch.uint8)
            out[i : i + batch] = adv.permute(0, 2, 3, 1).numpy()
    return out


def margin(logits: torch.Tensor, y: torch.Tensor, kappa: float = 0.0) -> torch.Tensor:
    """C&W untargeted loss to minimise: ``max(z_y - max_{j≠y} z_j, -κ)`` per example."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(1)
    return (true - other).clamp_min(-kappa)


class AdvGAN:
    """A generator, its discriminator and their optimisers: one :meth:`step` trains both on a batch."""

    def __init__(
        self, channels: int, levels: int, lr: float = 1e-3, alpha: float = 0.1, seed: int = 0
    ) -> None:
        if not 0 < levels <= 255:
            raise ConfigError(f"AdvGAN needs a budget of 1 to 255 grey levels, got {levels}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.generator = Generator(channels)
            self.discriminator = Discriminator(channels)
        self.levels, self.alpha = levels, alpha
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=lr, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=(0.5, 0.999))

    def step(
        self, target: LogitsFn, x: torch.Tensor, y: torch.Tensor, kappa: float = 0.0
    ) -> dict[str, float]:
        """One discriminator and one generator update on the batch; returns the losses and fooled share."""
        with torch.enable_grad():
            adv = perturb(self.generator, x, self.levels)
            if self.alpha > 0:
                d_real, d_fake = self.discriminator(x), self.discriminator(adv.detach())
                loss_d = ((d_real - 1.0) ** 2).mean() + (d_fake**2).mean()
                self.opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                self.opt_d.step()
            logits = target(adv)
            loss_adv = margin(logits, y, kappa).mean()
            loss_gan = ((self.discriminator(adv) - 1.0) ** 2).mean() if self.alpha > 0 else torch.zeros(())
            loss = loss_adv + self.alpha * loss_gan
            self.opt_g.zero_grad(set_to_none=True)
            loss.backward()
            self.opt_g.step()
        self.discriminator.zero_grad(set_to_none=True)
        fooled = float((logits.detach().argmax(1) != y).float().mean())
        return {"adv": float(loss_adv.detach()), "gan": float(loss_gan.detach()), "fooled": fooled}


def save_generator(
    generator: Generator, levels: int, path: str | Path, info: dict[str, object] | None = None
) -> Path:
    """Write the generator as safetensors with its channels, width, budget and ``info`` in the metadata."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"channels": generator.channels, "width": generator.width, "levels": levels, **(info or {})}
    state = {k: v.detach().cpu().contiguous() for k, v in generator.state_dict().items()}
    save_file(state, str(path), metadata={"fencebox-advgan": json.dumps(meta, sort_keys=True, default=str)})
    return path


def load_generator(path: str | Path) -> tuple[Generator, int, dict[str, object]]:
    """Load a generator saved by :func:`save_generator`: (generator, levels, metadata)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such AdvGAN generator file")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("fencebox-advgan")
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no iterator)
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise ModelError(f"{path}: not a readable safetensors file: {e}") from e
    if raw is None:
        raise ModelError(f"{path}: not an AdvGAN generator (no 'fencebox-advgan' metadata)")
    meta = json.loads(raw)
    gen = Generator(int(meta["channels"]), int(meta["width"]))
    try:
        gen.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelError(f"{path}: weights do not fit the AdvGAN generator: {e}") from e
    return gen.eval(), int(meta["levels"]), meta
