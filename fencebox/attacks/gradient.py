"""White-box gradient attacks, the one implementation training and the harness share.

(torchattacks cannot be installed beside our torch.)

Every attack takes ``model`` (any ``nn.Module``/callable mapping float NCHW in [0, 1] to logits, e.g. a
:class:`~fencebox.harness.DefendedClassifier`), clean images ``x``, true labels ``y``, ε and a norm, and
returns an :class:`AttackOutput`: per example the best point found (the first iterate the attacked
model misclassifies, else the highest-loss iterate) and the number of gradient evaluations spent.

``lattice=True`` (the harness): one budget.  The L∞ radius is ``floor(255 ε)`` whole grey levels, and
every iterate is evaluated (loss, gradient, success) at its nearest uint8 point within that budget
(:func:`~fencebox.attacks.geometry.snap`), so the candidate returned is exactly what the judge
receives: nothing the attack found is undone by quantisation, and no success is thrown away.

- :func:`fgsm`: one signed-gradient step (Goodfellow et al. 2015), L∞.
- :func:`pgd`: projected gradient descent (Madry et al. 2018), L∞ or L2, random start, CE or the
  C&W margin loss (Carlini & Wagner 2017) as ``loss="cw"``.
- :func:`apgd`: Auto-PGD (Croce & Hein 2020), L∞ or L2, CE or DLR loss, with the paper's momentum
  (α = 0.75), initial step 2ε, checkpoints p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03,
  0.06), and the two halving conditions (fewer than 75 % improving steps since the last checkpoint,
  or no step-size change and no gain in the best loss), restarting from the best point when halving.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fencebox.attacks.geometry import budget, check_norm, flat_norm, project, snap
from fencebox.errors import InputError

Model = Callable[[torch.Tensor], torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class AttackOutput:
    """Result of one attack run: adversarial candidates (float NCHW) and model evaluations per example."""

    x_adv: torch.Tensor
    queries: torch.Tensor


# ----- losses (per example, to be maximised) --------------------------------------------------------


def ce_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the true class, per example."""
    return F.cross_entropy(logits, y, reduction="none")


def margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """C&W margin ``max_{j != y} z_j - z_y``: positive exactly when the example is misclassified."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(1)
    return other - true


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference-of-logits-ratio loss (Croce & Hein 2020): scale-invariant margin; needs >= 3 classes."""
    if logits.shape[1] < 3:
        raise InputError(f"the DLR loss needs at least 3 classes, the model has {logits.shape[1]}")
    srt, ind = logits.sort(dim=1)
    top_is_true = (ind[:, -1] == y).to(logits.dtype)
    true = logits.gather(1, y[:, None]).squeeze(1)
    best_other = srt[:, -2] * top_is_true + srt[:, -1] * (1.0 - top_is_true)
    return -(true - best_other) / (srt[:, -1] - srt[:, -3] + 1e-12)


LOSSES: dict[str, LossFn] = {"ce": ce_loss, "cw": margin_loss, "dlr": dlr_loss}


def _loss_fn(name: str) -> LossFn:
    if name not in LOSSES:
        raise InputError(f"unknown loss {name!r}; expected one of {', '.join(LOSSES)}")
    return LOSSES[name]


def loss_and_grad(model: Model, x: torch.Tensor, y: torch.Tensor, loss: LossFn) -> tuple[torch.Tensor, ...]:
    """Per-example loss, logits and the gradient of the summed loss with respect to ``x``.

    A model whose output does not depend differentiably on ``x`` yields an all-zero gradient, which
    the ``gradients-finite-nonzero`` check then reports instead of the attack crashing.
    """
    xg = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = model(xg)
        values = loss(logits, y)
        if values.requires_grad:
            (grad,) = torch.autograd.grad(values.sum(), xg)
        else:  # the model cut the graph (a fully masking surrogate): no gradient at all
            grad = torch.zeros_like(xg)
    return values.detach(), logits.detach(), grad.detach()


def _bshape(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


def _normalise(g: torch.Tensor, norm: str) -> torch.Tensor:
    """The steepest-ascent direction for a unit step in ``norm``."""
    if norm == "linf":
        return g.sign()
    return g / _bshape(flat_norm(g, "l2").clamp_min(1e-12), g)


def random_start(x: torch.Tensor, eps: float, norm: str, generator: torch.Generator | None) -> torch.Tensor:
    """A uniformly random point of the ε-ball (L∞: per-pixel uniform; L2: uniform in the ball), clipped."""
    if norm == "linf":
        u = torch.rand(x.shape, generator=generator, device="cpu").to(x) * 2.0 - 1.0
        return project(x + eps * u, x, eps, norm)
    d = x[0].numel()
    g = torch.randn(x.shape, generator=generator, device="cpu").to(x)
    r = torch.rand(x.shape[0], generator=generator, device="cpu").to(x) ** (1.0 / d)
    g = g / _bshape(flat_norm(g, "l2").clamp_min(1e-12), g) * _bshape(r * eps, g)
    return project(x + g, x, eps, norm)


class _Best:
    """Tracks per example the candidate to return and the model evaluations spent on it.

    ``early_stop=True`` (deterministic models): keep the first iterate the attacked model
    misclassifies and drop that example from further steps; the runner judges every candidate anyway,
    and the early stop is what keeps attacks affordable.  ``early_stop=False`` (random models, where
    one misclassified EOT average does not mean a misclassified single draw): every example runs
    every step and the highest-loss iterate is kept, which maximises the chance a fresh draw fails.
    """

    def __init__(self, x: torch.Tensor, early_stop: bool = True) -> None:
        self.x = x.clone()
        self.early_stop = early_stop
        self.loss = torch.full((x.shape[0],), float("-inf"), device=x.device)
        self.fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        self.queries = torch.zeros(x.shape[0], dtype=torch.long)

    def update(
        self, idx: torch.Tensor, x: torch.Tensor, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor
    ) -> None:
        """Record iterate ``x`` of the examples ``idx`` (their loss and logits)."""
        wrong = logits.argmax(1) != y
        fooled = self.fooled[idx]
        if self.early_stop:
            take = (wrong & ~fooled) | (~fooled & ~wrong & (loss > self.loss[idx]))
        else:
            take = loss > self.loss[idx]
        sel = idx[take]
        self.x[sel] = x[take]
        self.loss[sel] = loss[take]
        self.fooled[idx] = fooled | wrong
        self.queries[idx.cpu()] += 1

    def alive(self, idx: torch.Tensor) -> torch.Tensor:
        """The examples of ``idx`` that still take steps."""
        return idx[~self.fooled[idx]] if self.early_stop else idx


def _check(x: torch.Tensor, y: torch.Tensor, eps: float, norm: str) -> None:
    check_norm(norm)
    if x.dim() != 4 or y.shape != (x.shape[0],):
        raise InputError(f"expected x (N, C, H, W) and y (N,), got {tuple(x.shape)} and {tuple(y.shape)}")
    if not (eps >= 0 and math.isfinite(eps)):
        raise InputError(f"eps must be a finite number >= 0, got {eps}")


def fgsm(
    model: Model, x: torch.Tensor, y: torch.Tensor, eps: float, loss: str = "ce", lattice: bool = False
) -> AttackOutput:
    """Fast gradient sign method: ``x + ε sign(∇ loss)``, clipped to [0, 1] (L∞ only)."""
    _check(x, y, eps, "linf")
    r = budget(eps, "linf") if lattice else eps
    _, _, g = loss_and_grad(model, x, y, _loss_fn(loss))
    out = project(x + r * g.sign(), x, r, "linf")
    return AttackOutput(
        snap(out, x, eps, "linf") if lattice else out, torch.ones(x.shape[0], dtype=torch.long)
    )


def pgd(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    norm: str = "linf",
    steps: int = 40,
    step_size: float | None = None,
    loss: str = "ce",
    random_init: bool = True,
    generator: torch.Generator | None = None,
    early_stop: bool = True,
    lattice: bool = False,
    start: torch.Tensor | None = None,
) -> AttackOutput:
    """Projected gradient ascent on ``loss`` within the ε-ball; step size 2.5 ε / steps unless given.

    ``early_stop=False`` for random models (and adversarial training): run every step and return the
    highest-loss iterate.  ``lattice``: evaluate iterates on the uint8 lattice (see the module
    docstring).  ``start``: begin from these points (e.g. black-box adversarials) instead of a
    random or the clean point.
    """
    _check(x, y, eps, norm)
    if steps < 1:
        raise InputError(f"steps must be >= 1, got {steps}")
    if eps == 0:
        return AttackOutput(x.detach().clone(), torch.zeros(x.shape[0], dtype=torch.long))
    fn = _loss_fn(loss)
    r = budget(eps, norm) if lattice else eps
    alpha = step_size if step_size is not None else 2.5 * eps / steps
    if start is not None:
        x_adv = project(start.detach().clone(), x, r, norm)
    else:
        x_adv = random_start(x, r, norm, generator) if random_init else x.detach().clone()

    def at(points: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        return snap(points, clean, eps, norm) if lattice else points

    best = _Best(at(x_adv, x), early_stop)
    idx = torch.arange(x.shape[0], device=x.device)
    for _ in range(steps):
        if idx.numel() == 0:
            break
        xe = at(x_adv[idx], x[idx])
        values, logits, g = loss_and_grad(model, xe, y[idx], fn)
        best.update(idx, xe, values, logits, y[idx])
        x_adv[idx] = project(x_adv[idx] + alpha * _normalise(g, norm), x[idx], r, norm)
        idx = best.alive(idx)
    if idx.numel():
        with torch.no_grad():
            xe = at(x_adv[idx], x[idx])
            logits = model(xe)
            best.update(idx, xe, fn(logits, y[idx]), logits, y[idx])
    return AttackOutput(best.x, best.queries)


def apgd_checkpoints(steps: int) -> list[int]:
    """Auto-PGD's checkpoint iterations w_j = ceil(p_j N) (Croce & Hein 2020, Sec. 3.2)."""
    p = [0.0, 0.22]
    while p[-1] < 1.0:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({math.ceil(round(q * steps, 6)) for q in p if q <= 1.0})


def apgd(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    norm: str = "linf",
    steps: int = 100,
    loss: str = "ce",
    rho: float = 0.75,
    alpha: float = 0.75,
    generator: torch.Generator | None = None,
    early_stop: bool = True,
    lattice: bool = False,
    start: torch.Tensor | None = None,
) -> AttackOutput:
    """Auto-PGD with momentum and the checkpointed step-size schedule; CE (APGD-CE) or DLR (APGD-DLR).

    Per example; with ``early_stop`` an example leaves the run once the attacked model misclassifies
    it (its fooling iterate is kept), which does not change the trajectory of the others; without it
    (random models) every example runs every step and the highest-loss iterate is returned.
    ``lattice`` and ``start`` as in :func:`pgd`.
    """
    _check(x, y, eps, norm)
    if steps < 2:
        raise InputError(f"APGD needs steps >= 2, got {steps}")
    fn = _loss_fn(loss)
    n = x.shape[0]
    if eps == 0:
        return AttackOutput(x.detach().clone(), torch.zeros(n, dtype=torch.long))
    r = budget(eps, norm) if lattice else eps
    checkpoints = apgd_checkpoints(steps)
    eta = torch.full((n,), 2.0 * r, device=x.device, dtype=x.dtype)

    def at(points: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        return snap(points, clean, eps, norm) if lattice else points

    x_k = (
        project(start.detach().clone(), x, r, norm)
        if start is not None
        else random_start(x, r, norm, generator)
    )
    idx = torch.arange(n, device=x.device)
    xe = at(x_k, x)
    f_k, logits, g = loss_and_grad(model, xe, y, fn)
    best = _Best(xe, early_stop)
    best.update(idx, xe, f_k, logits, y)
    x_max, f_max, g_max = x_k.clone(), f_k.clone(), g.clone()
    x_prev = x_k.clone()
    improved = torch.zeros(n, device=x.device)  # steps with f(x_{k+1}) > f(x_k) since the last checkpoint
    last_check, last_eta = 0, eta.clone()
    last_f_max = f_max.clone()
    reduced_last = torch.ones(n, dtype=torch.bool, device=x.device)
    idx = best.alive(idx)

    for k in range(steps):
        if idx.numel() == 0:
            break
        xi, x0 = x_k[idx], x[idx]
        z = project(xi + _bshape(eta[idx], xi) * _normalise(g[idx], norm), x0, r, norm)
        a = 1.0 if k == 0 else alpha
        x_new = project(xi + a * (z - xi) + (1.0 - a) * (xi - x_prev[idx]), x0, r, norm)
        x_prev[idx] = xi
        xe = at(x_new, x0)
        f_new, logits, g_new = loss_and_grad(model, xe, y[idx], fn)
        best.update(idx, xe, f_new, logits, y[idx])
        improved[idx] += (f_new > f_k[idx]).to(improved.dtype)
        up = f_new > f_max[idx]
        sel = idx[up]
        x_max[sel], f_max[sel], g_max[sel] = x_new[up], f_new[up], g_new[up]
        x_k[idx], f_k[idx], g[idx] = x_new, f_new, g_new
        it = k + 1
        if it in checkpoints and it > last_check and it < steps:
            window = it - last_check
            cond1 = improved < rho * window
            cond2 = ~reduced_last & (eta == last_eta) & (f_max <= last_f_max)
            halve = cond1 | cond2
            last_eta = eta.clone()
            eta = torch.where(halve, eta / 2.0, eta)
            x_k = torch.where(_bshape(halve, x), x_max, x_k)
            g = torch.where(_bshape(halve, x), g_max, g)
            reduced_last = halve
            last_f_max = f_max.clone()
            improved.zero_()
            last_check = it
        idx = best.alive(idx)
    return AttackOutput(best.x, best.queries)
