"""An independent plain-torch EOT PGD, to check that the harness is not weaker than a textbook attack.

Deliberately shares no code with ``fencebox.attacks`` or ``fencebox.harness``: it uses only a chain's
public ``sample``/``apply``/``surrogate`` and the model's ``logits``/``predict``.  Per step it draws
``--eot`` fresh chain parameters per image, runs the exact uint8 chain forward, takes gradients through
the chain's surrogate (or the identity, ``--estimator identity``) by the straight-through trick, averages
the logits over the draws, and takes a signed step of ``2.5 * eps / steps`` grey levels, rounded to whole
levels and clipped to ``floor(255 eps)`` levels.  Deterministic chains stop per example at the first
misclassified iterate; random chains keep, per example, the iterate with the highest EOT cross-entropy.
Candidates are scored on ``--draws`` fresh draws from a generator the attack never sees: robust accuracy
is the mean fraction of draws correct (the harness's definition), "strict" counts examples correct on
every draw.

    python benchmarks/plain_eot_pgd.py --model builtin:mnist-adv --chain fencebox-default -n 50 \
        --eps 0.3 --steps 100 --eot 20
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

import fencebox
from fencebox.models import load_dataset, load_model


def to_float(u8: np.ndarray) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(u8)).permute(0, 3, 1, 2).float() / 255.0


def to_u8(levels: torch.Tensor) -> np.ndarray:
    """Whole grey levels (float NCHW in [0, 255]) -> uint8 NHWC."""
    return np.ascontiguousarray(
        levels.detach().round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    )


def main() -> None:
    """Run the attack and print robust accuracy (mean fraction of fresh draws correct) and seconds."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="builtin:mnist-adv")
    ap.add_argument("--chain", default="fencebox-default")
    ap.add_argument("-n", type=int, default=50)
    ap.add_argument("--eps", type=float, default=0.3)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--eot", type=int, default=20)
    ap.add_argument("--restarts", type=int, default=1)
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument("--estimator", choices=("surrogate", "identity"), default="surrogate")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    images, labels = load_dataset("builtin:mnist-test")
    x, y = images[: args.n], torch.as_tensor(labels[: args.n]).long()
    model = load_model(args.model, device="cpu")
    chain = fencebox.load_chain(args.chain)
    rng = np.random.default_rng(args.seed)
    judge_rng = np.random.default_rng(10_000 + args.seed)
    eps = math.floor(255 * args.eps + 1e-6)
    alpha = 2.5 * eps / args.steps
    k = args.eot if chain.randomized else 1
    x0 = to_float(x) * 255.0
    n = len(x)

    def logits_of(adv: torch.Tensor, grad: bool) -> torch.Tensor:
        tiled = adv.repeat(k, 1, 1, 1)
        u8 = to_u8(tiled)
        params = chain.sample(rng, u8.shape)
        exact = to_float(chain.apply(u8, params))
        xa = tiled / 255.0
        s = (chain.surrogate(xa, params) if args.estimator == "surrogate" else xa) if grad else exact
        out = s + (exact - s).detach()
        return model.logits(out).view(k, n, -1).mean(0)

    def score(cand: np.ndarray) -> np.ndarray:
        right = np.zeros((n, args.draws), dtype=bool)
        for d in range(args.draws):
            right[:, d] = model.predict(chain.apply(cand, chain.sample(judge_rng, cand.shape))) == y.numpy()
        return right

    t0 = time.time()
    worst = x.copy()
    worst_frac = score(worst).mean(1)
    for r in range(args.restarts):
        gen = torch.Generator().manual_seed(args.seed * 100 + r)
        adv = (x0 + torch.empty_like(x0).uniform_(-eps, eps, generator=gen)).clamp(0, 255).round()
        best, best_loss = adv.clone(), torch.full((n,), -math.inf)
        done = torch.zeros(n, dtype=torch.bool)
        for _ in range(args.steps):
            a = adv.clone().requires_grad_(True)
            with torch.enable_grad():
                loss = F.cross_entropy(logits_of(a, True), y, reduction="none")
                (g,) = torch.autograd.grad(loss.sum(), a)
            lo = loss.detach()
            if chain.randomized:
                take = lo > best_loss
            else:  # keep the first success, else the highest loss
                wrong = logits_of(adv, False).argmax(1) != y
                take = ~done & (wrong | (lo > best_loss))
                done |= wrong
            best[take], best_loss[take] = adv[take], lo[take]
            step = torch.where(done[:, None, None, None], torch.zeros_like(g), alpha * g.sign())
            adv = torch.min(torch.max((adv + step).round(), x0 - eps), x0 + eps).clamp(0, 255)
        with torch.no_grad():
            lo = F.cross_entropy(logits_of(adv, False), y, reduction="none")
            take = ~done & (lo > best_loss)
            best[take] = adv[take]
        cand = to_u8(best)
        frac = score(cand).mean(1)
        better = frac < worst_frac
        worst[better], worst_frac[better] = cand[better], frac[better]
    strict = float((worst_frac == 1.0).mean())
    print(
        f"{args.model} {args.chain} eps={args.eps} ({eps} levels) steps={args.steps} eot={k} "
        f"restarts={args.restarts} estimator={args.estimator}: robust {worst_frac.mean():.3f} "
        f"strict {strict:.3f} clean-scored n={n} in {time.time() - t0:.0f} s"
    )


if __name__ == "__main__":
    main()
