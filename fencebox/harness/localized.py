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
from fencebox.harness.patch import PATCH_SHAPES, PatchConfig, evaluate_patch, square_side
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
) -> list[dict[str, Any]]:
    """Every (chain, shape, size, estimator) patch row as a report dict; validated before any work."""
    tick = progress or (lambda _msg: None)
    eyes = eye_line(data_ref)
    configs = patch_configs(shapes, sizes, data_ref, test[0].shape[1:3], steps, seed)
    rows = []
    for name, chain in chains.items():
        for gradient, k in estimators(chain, eot):
            attack = DefendedClassifier(model, chain, gradient=gradient, eot_samples=k, seed=seed + 1)
            for cfg in configs:
                tick(f"{name}: patch {cfg.shape} {cfg.size if cfg.shape == 'square' else ''} {gradient}")
                judge = DefendedClassifier(model, chain, seed=seed + 2)
                key = {"model": model_ref, "chain": str(chain), "gradient": gradient, "eot": k}
                res, _ = evaluate_patch(
                    judge, attack, train, test, cfg, eyes, name, cache_dir=cache_dir, cache_key=key
                )
                row = res.to_dict()
                row.update({"threat": f"patch-{cfg.shape}", "chain_spec": str(chain), "steps": cfg.steps})
                rows.append(row)
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
) -> list[dict[str, Any]]:
    """Every (chain, ε, estimator) AdvGAN row with PGD beside it, as report dicts."""
    tick = progress or (lambda _msg: None)
    cfg = AdvGANConfig(epochs=epochs, seed=seed)
    cfg.validate()
    rows = []
    for name, chain in chains.items():
        for gradient, k in estimators(chain, eot):
            attack = DefendedClassifier(model, chain, gradient=gradient, eot_samples=k, seed=seed + 1)
            for e in eps:
                tick(f"{name}: advgan eps={e:g} {gradient}")
                judge = DefendedClassifier(model, chain, seed=seed + 2)
                key = {"model": model_ref, "chain": str(chain), "gradient": gradient, "eot": k}
                res = evaluate_advgan(judge, attack, train, test, e, cfg, name, pgd_steps, cache_dir, key)
                row = res.to_dict()
                row.update({"attack": "advgan", "chain_spec": str(chain)})
                rows.append(row)
    return rows


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def patch_markdown(rows: list[dict[str, Any]]) -> str:
    """Markdown table of patch rows: success rate, CI, share of the image, mean steps."""
    if not rows:
        return ""
    lines = [
        "## Patch threats (no ε; not part of the L∞ worst case)",
        "",
        "| chain | threat | size | share | gradient | EOT | attacked | success | 95% CI | mean steps |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lo, hi = r["ci95"]
        size = "-" if r["size"] is None else f"{100 * r['size']:g}%"
        lines.append(
            f"| {r['chain']} | {r['threat']} | {size} | {100 * r['share']:.1f}% | {r['gradient']} | {r['eot']} | "
            f"{r['attacked']} | {_pct(r['success_rate'])} | [{100 * lo:.0f}, {100 * hi:.0f}] | {r['mean_steps']:.1f} |"
        )
    return "\n".join(lines)


def advgan_markdown(rows: list[dict[str, Any]]) -> str:
    """Markdown table of AdvGAN rows next to PGD: success rates and images per second."""
    if not rows:
        return ""
    lines = [
        "## AdvGAN next to PGD",
        "",
        "| chain | eps (levels) | gradient | EOT | attacked | AdvGAN success | AdvGAN img/s | PGD success | PGD img/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        pgd_speed = "-" if r["pgd_images_per_s"] is None else f"{r['pgd_images_per_s']:.0f}"
        lines.append(
            f"| {r['chain']} | {r['eps']:g} ({r['levels']}) | {r['gradient']} | {r['eot']} | {r['attacked']} | "
            f"{_pct(r['success_rate'])} | {r['images_per_s']:.0f} | {_pct(r['pgd_success_rate'])} | {pgd_speed} |"
        )
    return "\n".join(lines)
