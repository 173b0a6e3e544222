"""Patch threats and the AdvGAN attack over a set of chains, as report rows (what ``fencebox evaluate`` adds).

Patch threats (``--threat patch``) have no ε: each (chain, shape, size, gradient estimator) is its own
row, outside the L∞ worst case.  AdvGAN (``--attacks advgan``) gives one row per (chain, ε, gradient
estimator) with PGD beside it.  Every chain is attacked with BPDA and, where its surrogate is not the
identity, with the surrogate; EOT over ``eot`` draws on random chains.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fencebox.errors import ConfigError
from fencebox.harness.advgan import AdvGANConfig, evaluate_advgan
from fencebox.harness.defended import DefendedClassifier
from fencebox.harness.judged import Judge, VerdictConfig
from fencebox.harness.patch import PATCH_SHAPES, PatchConfig, evaluate_patch, square_side
from fencebox.harness.verdict import save_candidates
from fencebox.models.base import Classifier
from fencebox.models.data import eye_line
from fencebox.transforms.base import Transform

Progress = Callable[[str], None]
Data = tuple[np.ndarray, np.ndarray]


def train_split_of(data_ref: str) -> str:
    """The training split that goes with a test data set reference (``builtin:X-test`` -> ``builtin:X-train``).

    Patches and generators are trained on it; ConfigError when the data set has no known training split.
    """
    if data_ref.startswith("builtin:") and data_ref.endswith("-test"):
        return data_ref.removesuffix("-test") + "-train"
    raise ConfigError(
        f"patch and AdvGAN attacks are trained on a training split, and {data_ref!r} has none known: "
        "evaluate on a built-in test split (e.g. builtin:faces-test)"
    )


def parse_patch_shapes(text: str) -> list[str]:
    """'square,glasses' (or 'square|glasses') -> shape names; ConfigError on an unknown one."""
    shapes = [s.strip() for s in text.replace("|", ",").split(",") if s.strip()]
    for s in shapes:
        if s not in PATCH_SHAPES:
            raise ConfigError(f"unknown patch shape {s!r}; expected {' or '.join(PATCH_SHAPES)}")
    if not shapes:
        raise ConfigError("--patch-shape names no shape; expected square and/or glasses")
    return shapes


def estimators(chain: Transform, eot: int) -> list[tuple[str, int]]:
    """(gradient, EOT draws) pairs to try on ``chain``: BPDA, and the surrogate where it is not the identity.

    An empty chain has one: both estimators are the bare model's gradient.
    """
    k = eot if chain.randomized else 1
    out = [("bpda", k)]
    if chain.surrogate_kind != "identity" and getattr(chain, "children", None) != []:
        out.append(("surrogate", k))
    return out


def patch_configs(
    shapes: list[str],
    sizes: list[float],
    data_ref: str,
    image_hw: tuple[int, int],
    steps: int = 100,
    seed: int = 0,
) -> list[PatchConfig]:
    """The patch attacks to run, checked before any work: ConfigError for a patch larger than the image
    or a glasses mask on a data set without an eye line."""
    h, w = image_hw
    configs: list[PatchConfig] = []
    for shape in shapes:
        for size in sizes if shape == "square" else [0.05]:
            cfg = PatchConfig(shape=shape, size=size, steps=steps, seed=seed)
            cfg.validate()
            if shape == "square":
                square_side(size, h, w)
            elif eye_line(data_ref) is None:
                raise ConfigError(
                    f"--patch-shape glasses needs a face data set with an eye line; {data_ref} has none "
                    "(use --patch-shape square)"
                )
            configs.append(cfg)
    return configs


def _worst_row(
    judge: Judge, name: str, rows: list[Any], x: np.ndarray, y: np.ndarray
) -> tuple[dict[str, Any], np.ndarray]:
    """Per example the worst candidate of a group's estimator rows on the selection draws, re-scored."""
    judged = judge(x, y, [r.adversarials for r in rows])
    row = {k: v for k, v in rows[0].to_dict().items() if k not in ("per_example", "verdict")}
    row.update(judged.summary())
    row["ci95"], row["robust_ci95"] = list(row["ci95"]), list(row["robust_ci95"])
    gradients = [r.gradient for r in rows]
    row.update(
        {
            "chain": name,
            "gradient": "worst of " + "+".join(gradients),
            "eot": max(r.eot for r in rows),
            **({"seconds": sum(r.seconds for r in rows)} if hasattr(rows[0], "seconds") else {}),
            "verdict": judged.verdict,
            "per_example": {
                **{k: rows[0].per_example[k] for k in ("index",) if k in rows[0].per_example},
                "clean": judged.clean.tolist(),
                "score": judged.score.tolist(),
                "chosen": [(["clean", *gradients])[i] for i in judged.chosen],
            },
        }
    )
    return row, judged.images


def patch_rows(
    model: Classifier,
    model_ref: str,
    data_ref: str,
    test: Data,
    train: Data,
    chains: dict[str, Transform],
    shapes: list[str],
    sizes: list[float],
    eot: int = 20,
    steps: int = 100,
    seed: int = 0,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
    verdict: VerdictConfig | None = None,
    save_to: Path | None = None,
) -> list[dict[str, Any]]:
    """Every (chain, shape, size, estimator) patch row as a report dict; validated before any work.

    Where a chain has two estimators, a ``worst`` row follows: per example the worse of their
    candidates on the selection draws, scored on the scoring draws.  ``save_to``: write every row's
    selected adversarials there (``--save-adversarials``; ``fencebox replay`` re-judges them).
    """
    tick = progress or (lambda _msg: None)
    vcfg = verdict or VerdictConfig(seed=seed)
    eyes = eye_line(data_ref)
    configs = patch_configs(shapes, sizes, data_ref, test[0].shape[1:3], steps, seed)
    target = test[1] == eyes.face_label if eyes is not None else np.ones(len(test[1]), dtype=bool)
    xt, yt = test[0][target], test[1][target]
    rows: list[dict[str, Any]] = []
    for name, chain in chains.items():
        judge = DefendedClassifier(model, chain, seed=seed + 2, workers=vcfg.workers)
        for cfg in configs:
            group = []
            for gradient, k in estimators(chain, eot):
                attack = DefendedClassifier(model, chain, gradient=gradient, eot_samples=k, seed=seed + 1)
                tick(f"{name}: patch {cfg.shape} {cfg.size if cfg.shape == 'square' else ''} {gradient}")
                key = {"model": model_ref, "chain": str(chain), "gradient": gradient, "eot": k}
                res, _ = evaluate_patch(
                    judge,
                    attack,
                    train,
                    test,
                    cfg,
                    eyes,
                    name,
                    cache_dir=cache_dir,
                    cache_key=key,
                    verdict=vcfg,
                )
                group.append(res)
                row = res.to_dict()
                row.update({"threat": f"patch-{cfg.shape}", "chain_spec": str(chain), "steps": cfg.steps})
                rows.append(row)
                if save_to is not None and res.adversarials is not None:
                    rows[-1]["verdict"]["adversarials"] = save_candidates(
                        save_to,
                        f"patch-{len(rows) - 1:03d}.npz",
                        res.adversarials,
                        yt,
                        np.flatnonzero(target),
                    )
            if len(group) > 1:
                group_name = f"patch-{cfg.shape}" + (f"-{cfg.size:g}" if cfg.shape == "square" else "")
                worst, images = _worst_row(Judge(model, chain, vcfg, group_name), name, group, xt, yt)
                worst.update({"threat": f"patch-{cfg.shape}", "chain_spec": str(chain), "steps": cfg.steps})
                if save_to is not None:
                    worst["verdict"]["adversarials"] = save_candidates(
                        save_to, f"patch-{len(rows):03d}.npz", images, yt, np.flatnonzero(target)
                    )
                rows.append(worst)
    return rows


def advgan_rows(
    model: Classifier,
    model_ref: str,
    test: Data,
    train: Data,
    chains: dict[str, Transform],
    eps: list[float],
    eot: int = 20,
    pgd_steps: int = 20,
    epochs: int = 5,
    seed: int = 0,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
    verdict: VerdictConfig | None = None,
    save_to: Path | None = None,
) -> list[dict[str, Any]]:
    """Every (chain, ε, estimator) AdvGAN row with PGD beside it, as report dicts.

    Where a chain has two estimators, a ``worst`` row follows (per example the worse generated
    image on the selection draws, re-scored).  ``save_to`` as in :func:`patch_rows`.  Each generator is
    trained on all of ``train``: ``fencebox evaluate --train-limit`` subsets it (class-spread) beforehand.
    """
    tick = progress or (lambda _msg: None)
    vcfg = verdict or VerdictConfig(seed=seed)
    cfg = AdvGANConfig(epochs=epochs, seed=seed)
    cfg.validate()
    rows: list[dict[str, Any]] = []
    x, y = test
    index = np.arange(len(y))
    for name, chain in chains.items():
        judge = DefendedClassifier(model, chain, seed=seed + 2, workers=vcfg.workers)
        for e in eps:
            group = []
            for gradient, k in estimators(chain, eot):
                attack = DefendedClassifier(model, chain, gradient=gradient, eot_samples=k, seed=seed + 1)
                tick(f"{name}: advgan eps={e:g} {gradient}")
                key = {"model": model_ref, "chain": str(chain), "gradient": gradient, "eot": k}
                res = evaluate_advgan(
                    judge, attack, train, test, e, cfg, name, pgd_steps, cache_dir, key, verdict=vcfg
                )
                group.append(res)
                row = res.to_dict()
                row.update({"attack": "advgan", "chain_spec": str(chain)})
                if save_to is not None and res.adversarials is not None:
                    row["verdict"]["adversarials"] = save_candidates(
                        save_to, f"advgan-{len(rows):03d}.npz", res.adversarials, y, index
                    )
                rows.append(row)
            if len(group) > 1:
                worst, images = _worst_row(
                    Judge(model, chain, vcfg, f"advgan-{group[0].levels}"), name, group, x, y
                )
                worst.update({"attack": "advgan", "chain_spec": str(chain)})
                for f in ("pgd_success_rate", "pgd_robust_accuracy", "pgd_images_per_s"):
                    worst[f] = None  # PGD is compared per estimator, in the rows above
                if save_to is not None:
                    worst["verdict"]["adversarials"] = save_candidates(
                        save_to, f"advgan-{len(rows):03d}.npz", images, y, index
                    )
                rows.append(worst)
    return rows
