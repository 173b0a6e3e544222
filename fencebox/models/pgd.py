"""L-infinity PGD (Madry et al. 2018) for adversarial training and for measuring a model's robust accuracy."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

LogitsFn = Callable[[torch.Tensor], torch.Tensor]


def pgd_linf(
    logits_fn: LogitsFn,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int,
    alpha: float | None = None,
    random_start: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Untargeted PGD on the cross-entropy within the L-inf ball of radius ``eps`` around ``x``, clipped to [0, 1].

    ``alpha`` defaults to ``2.5 * eps / steps`` (Madry et al.'s rule of thumb).  With ``random_start`` the
    search begins at a uniform point of the ball, drawn from ``generator`` so runs are reproducible.  The
    result is detached; the model's parameters receive no gradient.
    """
    if steps < 1 or eps <= 0:
        return x.detach().clone()
    step = 2.5 * eps / steps if alpha is None else alpha
    x0 = x.detach()
    if random_start:
        noise = torch.rand(x0.shape, generator=generator, device="cpu").to(x0.device)
        adv = (x0 + (noise * 2 - 1) * eps).clamp(0, 1)
    else:
        adv = x0.clone()
    for _ in range(steps):
        adv.requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(logits_fn(adv), y)
            (grad,) = torch.autograd.grad(loss, adv)
        adv = adv.detach() + step * grad.sign()
        adv = torch.min(torch.max(adv, x0 - eps), x0 + eps).clamp(0, 1)
    return adv.detach()


def accuracy(
    logits_fn: LogitsFn,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int = 500,
    attack: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> float:
    """Fraction of ``x`` classified as ``y``, optionally after ``attack(x_batch, y_batch)``, in batches."""
    correct = 0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        if attack is not None:
            xb = attack(xb, yb)
        with torch.no_grad():
            correct += int((logits_fn(xb).argmax(1) == yb).sum())
    return correct / max(1, len(x))
