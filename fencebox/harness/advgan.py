"""The AdvGAN attack (Xiao et al. 2018) against a defended model, next to PGD on the same images.

A small generator (:class:`fencebox.models.advgan.Generator`) is trained on the training split against
the attacked module (a :class:`~fencebox.harness.defended.DefendedClassifier` with either gradient
estimator, BPDA or the chain's surrogate, and EOT; or the bare model), under the L∞ budget as a whole
number of grey levels ``floor(255 ε)``.  On the test split it makes every adversarial image in one
forward pass; each is judged by the deployed system on a fresh draw, like every other attack.

The report gives its success rate and its speed (adversarial images per second, the generator's forward
pass; training time apart) next to PGD's on the same examples and model.  Trained generators are cached
under the cache folder by everything that decides them, and can be saved with :func:`save_generator`.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fencebox.attacks.gradient import pgd
from fencebox.errors import ConfigError
from fencebox.harness.cache import array_fingerprint, key_hash
from fencebox.harness.defended import DefendedClassifier
from fencebox.harness.fingerprint import judge_fingerprint
from fencebox.harness.judged import Judge, JudgedRow, VerdictConfig
from fencebox.models.advgan import (
    AdvGAN,
    Generator,
    generate_uint8,
    grey_levels,
    load_generator,
    save_generator,
)
from fencebox.torch_util import nhwc_uint8_to_nchw_float

__all__ = [
    "AdvGANConfig",
    "AdvGANResult",
    "evaluate_advgan",
    "load_generator",
    "save_generator",
    "train_generator",
]


@dataclass(frozen=True)
class AdvGANConfig:
    """Training settings of the attack's generator: epochs over the training split, batch, lr, GAN weight."""

    epochs: int = 10
    batch: int = 64
    lr: float = 1e-3
    alpha: float = 0.1
    kappa: float = 0.0
    seed: int = 0
    limit: int | None = None
    """Train on the first ``limit`` training images (small runs)."""

    def validate(self) -> None:
        """Raise ConfigError naming the first bad setting."""
        if self.epochs < 1 or self.batch < 1:
            raise ConfigError(f"AdvGAN epochs and batch must be >= 1, got {self.epochs} and {self.batch}")
        if not (self.lr > 0 and math.isfinite(self.lr)) or self.alpha < 0 or self.kappa < 0:
            raise ConfigError(
                f"AdvGAN needs lr > 0, alpha >= 0 and kappa >= 0, got {self.lr}, {self.alpha}, {self.kappa}"
            )
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"AdvGAN limit must be >= 1, got {self.limit}")


@dataclass(kw_only=True)
class AdvGANResult(JudgedRow):
    """AdvGAN and PGD on one chain at one budget, judged on selection + scoring draws; per example.

    ``success_rate`` is the mean fraction of scoring draws wrong over the attacked examples (``ci95``
    its Wilson interval), ``robust_accuracy`` the mean fraction correct over all examples (``strict``:
    correct on every draw), for AdvGAN's images; the ``pgd_`` fields the same for PGD's.
    ``adversarials`` (AdvGAN's selected candidates) are not part of the JSON form.
    """

    chain: str
    eps: float
    levels: int
    gradient: str
    eot: int
    images_per_s: float
    train_seconds: float
    pgd_steps: int
    pgd_success_rate: float | None
    pgd_robust_accuracy: float | None
    pgd_images_per_s: float | None


def _parameters(attack: nn.Module) -> list[nn.Parameter]:
    """The attacked module's parameters, and those of the classifier a defended model wraps."""
    params = list(attack.parameters())
    inner = getattr(getattr(attack, "model", None), "torch_module", None)
    module = inner() if callable(inner) else None
    if isinstance(module, nn.Module):
        params += list(module.parameters())
    return params


def train_generator(
    attack: nn.Module, images: np.ndarray, labels: np.ndarray, levels: int, cfg: AdvGANConfig
) -> Generator:
    """Train an AdvGAN generator against ``attack``'s logits on uint8 NHWC training images; seeded."""
    cfg.validate()
    x_np, y_np = (images, labels) if cfg.limit is None else (images[: cfg.limit], labels[: cfg.limit])
    gan = AdvGAN(x_np.shape[3], levels, lr=cfg.lr, alpha=cfg.alpha, seed=cfg.seed)
    x = nhwc_uint8_to_nchw_float(x_np)
    y = torch.as_tensor(y_np, dtype=torch.long)
    gen = torch.Generator().manual_seed(cfg.seed)
    frozen = [p for p in _parameters(attack) if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        for _ in range(cfg.epochs):
            perm = torch.randperm(len(x), generator=gen)
            for i in range(0, len(x), cfg.batch):
                b = perm[i : i + cfg.batch]
                gan.step(attack, x[b], y[b], cfg.kappa)
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return gan.generator.eval()


def load_or_train_generator(
    attack: nn.Module,
    train: tuple[np.ndarray, np.ndarray],
    levels: int,
    cfg: AdvGANConfig,
    key: dict[str, Any],
    cache_dir: Path | None = None,
) -> tuple[Generator, float]:
    """:func:`train_generator`, cached as safetensors under ``cache_dir``; (generator, training seconds)."""
    full = {**key, "advgan": asdict(cfg), "levels": levels, "train": array_fingerprint(*train)}
    path = None if cache_dir is None else cache_dir / f"advgan-{key_hash(full)}.safetensors"
    if path is not None and path.exists():
        gen, _, meta = load_generator(path)
        return gen, float(str(meta.get("train_seconds", 0.0)))
    t0 = time.perf_counter()
    gen = train_generator(attack, *train, levels, cfg)
    seconds = time.perf_counter() - t0
    if path is not None:
        save_generator(gen, levels, path, {"train_seconds": round(seconds, 2), "key": key_hash(full)})
    return gen, seconds


def evaluate_advgan(
    judge: DefendedClassifier,
    attack: nn.Module,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    eps: float,
    cfg: AdvGANConfig,
    chain_name: str = "chain",
    pgd_steps: int = 20,
    cache_dir: Path | None = None,
    cache_key: dict[str, Any] | None = None,
    verdict: VerdictConfig | None = None,
) -> AdvGANResult:
    """Train (or load) the generator, attack the test examples, judge like every other threat.

    ``judge`` is the deployed system (its model and exact chain).  The examples some selection draw
    gets right are attacked; per example the worse of the clean image and the generated one on the
    selection draws is scored on fresh scoring draws (``verdict``).  PGD (``pgd_steps`` steps, CE
    loss, the same ``attack`` module and budget) runs on the same examples and is judged the same way,
    for the speed and success comparison; ``pgd_steps=0`` skips it.
    """
    levels = grey_levels(eps)
    if levels < 1:
        raise ConfigError(f"eps {eps:g} is less than one grey level (1/255); AdvGAN needs at least one")
    x_te, y_te = test
    verdicts = Judge(judge.model, judge.chain, verdict or VerdictConfig(), f"advgan-{levels}")
    idx = np.flatnonzero(verdicts.attackable(x_te, y_te))
    key = {**(cache_key or {}), **judge_fingerprint(judge)}
    gen, train_seconds = load_or_train_generator(attack, train, levels, cfg, key, cache_dir)
    t0 = time.perf_counter()
    adv = x_te.copy()
    if idx.size:
        adv[idx] = generate_uint8(gen, x_te[idx], levels)
    gen_seconds = time.perf_counter() - t0
    judged = verdicts(x_te, y_te, [adv])
    stats = judged.summary()
    pgd_rate, pgd_robust, pgd_speed = None, None, None
    if pgd_steps > 0 and idx.size:
        eps_q = levels / 255.0
        x = nhwc_uint8_to_nchw_float(x_te[idx])
        y = torch.as_tensor(y_te[idx], dtype=torch.long)
        randomized = bool(getattr(judge.chain, "randomized", False))
        t1 = time.perf_counter()
        out = pgd(
            attack,
            x,
            y,
            eps_q,
            "linf",
            pgd_steps,
            generator=torch.Generator().manual_seed(cfg.seed),
            early_stop=not randomized,
        )
        pgd_seconds = time.perf_counter() - t1
        adv_p = x_te.copy()
        adv_p[idx] = (
            np.clip(
                np.rint(out.x_adv.permute(0, 2, 3, 1).numpy() * 255.0),
                x_te[idx].astype(np.int16) - levels,
                x_te[idx].astype(np.int16) + levels,
            )
            .clip(0, 255)
            .astype(np.uint8)
        )
        pgd_stats = verdicts(x_te, y_te, [adv_p]).summary()
        pgd_rate, pgd_robust = pgd_stats["success_rate"], pgd_stats["robust_accuracy"]
        pgd_speed = idx.size / max(pgd_seconds, 1e-9)
    return AdvGANResult(
        chain=chain_name,
        eps=eps,
        levels=levels,
        gradient=str(getattr(attack, "gradient", "none")),
        eot=int(getattr(attack, "eot_samples", 1)),
        images_per_s=idx.size / max(gen_seconds, 1e-9),
        train_seconds=round(train_seconds, 2),
        pgd_steps=pgd_steps,
        pgd_success_rate=pgd_rate,
        pgd_robust_accuracy=pgd_robust,
        pgd_images_per_s=pgd_speed,
        verdict=judged.verdict,
        per_example=judged.per_example(),
        adversarials=judged.images,
        labels=y_te,
        **stats,
    )
