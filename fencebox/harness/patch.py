"""Localized (patch) threats: a universal square patch (Brown et al. 2017) and eyeglass frames (Sharif et al. 2016).

Neither has an ε: inside its region the attacker may set any pixel value; outside, the image is untouched.

- ``square``: one patch, shared by every image, trained on the training split with EOT over its
  position, scale and a small rotation (Brown et al. 2017; Athalye et al. 2018).  On the test split
  each image gets a fresh placement from the same distribution, drawn by a generator the attacker never
  sees, and the deployed system judges it with a fresh chain draw.  Its size is a share of the image
  area (``size=0.05``: a square of 5 % of the pixels); the share actually covered is measured.
- ``glasses``: per image, the perturbation is confined to an eyeglass-frame mask (the shipped
  ``assets/glasses.png``, scaled so its lens centres sit on the data set's eye line,
  :data:`fencebox.models.data.EYE_LINES`), unbounded in value inside the mask (Sharif et al. 2016).
  On ``builtin:faces`` only faces are attacked: success means a face reads as "not a face".

Gradients come from any ``nn.Module`` (a :class:`~fencebox.harness.defended.DefendedClassifier` with
``gradient="bpda"`` or ``"surrogate"`` and any number of EOT samples, or the bare model); the
composite image is always quantised to uint8 and judged through the exact chain.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fencebox.errors import ConfigError
from fencebox.harness.cache import array_fingerprint, key_hash
from fencebox.harness.defended import DefendedClassifier
from fencebox.harness.fingerprint import judge_fingerprint
from fencebox.harness.judged import Judge, JudgedRow, VerdictConfig
from fencebox.models.data import EyeLine
from fencebox.torch_util import nchw_float_to_nhwc_uint8, nhwc_uint8_to_nchw_float

PATCH_SHAPES = ("square", "glasses")
GLASSES_ASSET = Path(__file__).parent / "assets" / "glasses.png"
GLASSES_LENS_CENTRES = (60.0, 180.0, 40.0)
"""Left and right lens centre x and their common y in the asset's pixels (see scripts/make_glasses_mask.py)."""
_SUPERSAMPLE = 8


@dataclass(frozen=True)
class PatchConfig:
    """How a patch attack is run: its shape, size, optimisation budget and placement distribution.

    ``size`` is the square patch's share of the image area (ignored by ``glasses``, whose share is set
    by the mask).  ``steps`` are signed-gradient steps of ``step_size`` (pixel units, values in [0, 1]);
    the square patch takes each step on a fresh batch of ``batch`` training images.  ``scale`` bounds the
    EOT scale of the patch side and ``rotation`` the EOT rotation in degrees (either way).
    """

    shape: str = "square"
    size: float = 0.05
    steps: int = 200
    step_size: float = 0.05
    batch: int = 32
    scale: tuple[float, float] = (0.9, 1.1)
    rotation: float = 15.0
    seed: int = 0

    def validate(self) -> None:
        """Raise ConfigError naming the first bad setting."""
        if self.shape not in PATCH_SHAPES:
            raise ConfigError(f"patch shape must be one of {', '.join(PATCH_SHAPES)}, got {self.shape!r}")
        if self.size > 1:
            raise ConfigError(
                f"a patch of {self.size:g} times the image area is larger than the image; "
                "--patch-size is a share of the image area in (0, 1]"
            )
        if not (0 < self.size <= 1) or not math.isfinite(self.size):
            raise ConfigError(f"patch size is a share of the image area in (0, 1], got {self.size}")
        if self.steps < 1 or self.batch < 1:
            raise ConfigError(f"patch steps and batch must be >= 1, got {self.steps} and {self.batch}")
        if not (self.step_size > 0) or not math.isfinite(self.step_size):
            raise ConfigError(f"patch step size must be a finite number > 0, got {self.step_size}")
        lo, hi = self.scale
        if not (0 < lo <= hi):
            raise ConfigError(f"patch scale range must satisfy 0 < low <= high, got {self.scale}")
        if not (0 <= self.rotation <= 90):
            raise ConfigError(f"patch rotation must be in [0, 90] degrees, got {self.rotation}")


@dataclass(kw_only=True)
class PatchResult(JudgedRow):
    """One patch threat on one chain, judged on selection + scoring draws; per example.

    ``success_rate`` is the mean fraction of scoring draws wrong over the attacked examples (``ci95``
    its Wilson interval); ``robust_accuracy`` the mean fraction correct over every targeted example
    (``strict_accuracy``: correct on every draw; ``robust_ci95``).  ``adversarials`` are the selected
    candidates (uint8, the targeted examples in order), not part of the JSON form.
    """

    chain: str
    shape: str
    size: float | None
    share: float
    gradient: str
    eot: int
    mean_steps: float
    seconds: float


# ----- geometry ------------------------------------------------------------------------------------


def square_side(size: float, height: int, width: int) -> int:
    """Side in pixels of a square covering ``size`` of an ``height`` x ``width`` image (at least 1).

    ConfigError when the square does not fit in the image.
    """
    side = max(1, round(math.sqrt(size * height * width)))
    if side > min(height, width):
        raise ConfigError(
            f"a square patch of {size:g} of the image area is {side}x{side} pixels, larger than the "
            f"{height}x{width} image; use a smaller --patch-size"
        )
    return side


@cache
def _glasses_drawing() -> np.ndarray:
    from PIL import Image

    with Image.open(GLASSES_ASSET) as im:
        return np.asarray(im.convert("L"), dtype=np.float32) / 255.0


def glasses_mask(eyes: EyeLine | None, height: int, width: int, threshold: float = 0.3) -> np.ndarray:
    """The eyeglass-frame mask for ``height`` x ``width`` images, lens centres on the eye line: bool (H, W).

    The shipped drawing is scaled so its lens centres land on ``eyes.left_x`` / ``eyes.right_x`` along
    ``eyes.row`` (scaled from the eye line's image size to this one), rendered at 8x and area-averaged;
    a pixel belongs to the frame when the frame covers at least ``threshold`` of it.
    """
    if eyes is None:
        raise ConfigError(
            "the glasses patch needs a face data set with a known eye line (builtin:faces-train/-test); "
            "this data set has none: use --patch-shape square"
        )
    sy, sx = height / eyes.height, width / eyes.width
    row, lx, rx = (eyes.row + 0.5) * sy, (eyes.left_x + 0.5) * sx, (eyes.right_x + 0.5) * sx
    drawing = _glasses_drawing()
    a_lx, a_rx, a_y = GLASSES_LENS_CENTRES
    scale = (rx - lx) / (a_rx - a_lx)  # image pixels per drawing pixel
    ss = _SUPERSAMPLE
    dh, dw = drawing.shape
    tw, th = max(1, round(dw * scale * ss)), max(1, round(dh * scale * ss))
    import cv2

    big = cv2.resize(drawing, (tw, th), interpolation=cv2.INTER_AREA)
    canvas = np.zeros((height * ss, width * ss), np.float32)
    top, left = round((row - a_y * scale) * ss), round((lx - a_lx * scale) * ss)
    y0, x0 = max(0, top), max(0, left)
    y1, x1 = min(canvas.shape[0], top + th), min(canvas.shape[1], left + tw)
    if y1 > y0 and x1 > x0:
        canvas[y0:y1, x0:x1] = big[y0 - top : y1 - top, x0 - left : x1 - left]
    cover = canvas.reshape(height, ss, width, ss).mean(axis=(1, 3))
    return np.asarray(cover >= threshold)


def _place(
    patch: torch.Tensor, n: int, height: int, width: int, params: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp a (C, s, s) patch into ``n`` images of (H, W): (patch layer, coverage mask), differentiable."""
    c = patch.shape[0]
    side = params["side"]  # (n,) side in image pixels
    ang = params["angle"]  # (n,) radians
    cx, cy = params["cx"], params["cy"]
    cos, sin = torch.cos(ang), torch.sin(ang)
    # output normalised (u, v) -> image pixels p = D (u, v) + t0 -> patch normalised a = R(-ang) (p - c) / (side / 2)
    half = side / 2.0
    m00, m01, m10, m11 = cos / half, sin / half, -sin / half, cos / half
    dx, dy = (width / 2.0), (height / 2.0)
    tx, ty = (width - 1) / 2.0 - cx, (height - 1) / 2.0 - cy
    theta = torch.stack(
        [
            torch.stack([m00 * dx, m01 * dy, m00 * tx + m01 * ty], 1),
            torch.stack([m10 * dx, m11 * dy, m10 * tx + m11 * ty], 1),
        ],
        1,
    ).to(patch.dtype)
    grid = F.affine_grid(theta, [n, c, height, width], align_corners=False)
    layer = F.grid_sample(patch.expand(n, -1, -1, -1), grid, mode="bilinear", align_corners=False)
    ones = torch.ones(n, 1, patch.shape[1], patch.shape[2], dtype=patch.dtype)
    mask = F.grid_sample(ones, grid, mode="bilinear", align_corners=False)
    return layer, mask


def sample_placements(
    n: int, side: int, height: int, width: int, cfg: PatchConfig, gen: torch.Generator
) -> dict[str, torch.Tensor]:
    """Random placements (EOT): side scaled within ``cfg.scale`` (never past the image), rotation, centre."""
    lo, hi = cfg.scale
    limit = min(height, width) / side
    u = torch.rand(n, 4, generator=gen, dtype=torch.float64)
    s = side * (min(lo, limit) + u[:, 0] * (min(hi, limit) - min(lo, limit)))
    ang = (u[:, 1] * 2 - 1) * math.radians(cfg.rotation)
    cx = s / 2 - 0.5 + u[:, 2] * (width - s)
    cy = s / 2 - 0.5 + u[:, 3] * (height - s)
    return {"side": s.float(), "angle": ang.float(), "cx": cx.float(), "cy": cy.float()}


def apply_square(x: torch.Tensor, patch: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Paste ``patch`` (C, s, s) into float NCHW ``x`` at ``params`` (soft edges from the bilinear warp)."""
    layer, mask = _place(patch, x.shape[0], x.shape[2], x.shape[3], params)
    return x * (1.0 - mask) + layer


def apply_mask(x: torch.Tensor, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Replace the pixels of ``x`` under the bool/0-1 ``mask`` (H, W) by ``values`` (same shape as ``x``)."""
    m = mask.to(x.dtype)[None, None]
    return x * (1.0 - m) + values * m


# ----- the attacks ---------------------------------------------------------------------------------


def _loss(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, kappa: float = 5.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per example the margin loss ``max_{j != y} z_j - z_y``, capped at ``kappa`` (CW), and the logits.

    Not cross-entropy: on a confident model (builtin:faces' faces sit 10-18 logits from the boundary)
    float32 softmax rounds the true class to probability 1, so CE's gradient through the true logit is
    exactly zero and only the other logits' vanishing terms steer the attack.
    """
    logits = model(x)
    true = logits.gather(1, y[:, None])[:, 0]
    other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), -torch.inf).amax(1)
    return (other - true).clamp(max=kappa), logits.detach()


def train_square_patch(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    cfg: PatchConfig,
) -> torch.Tensor:
    """Brown et al.'s universal patch: maximise the mean loss over training images and random placements.

    Signed-gradient ascent, one batch of ``cfg.batch`` training images and fresh placements per step,
    values clipped to [0, 1]; returns the (C, s, s) patch.
    """
    cfg.validate()
    n, h, w, c = images.shape
    side = square_side(cfg.size, h, w)
    gen = torch.Generator().manual_seed(cfg.seed)
    patch = torch.rand(c, side, side, generator=gen)
    x_all = nhwc_uint8_to_nchw_float(images)
    y_all = torch.as_tensor(labels, dtype=torch.long)
    for _ in range(cfg.steps):
        idx = torch.randint(0, n, (min(cfg.batch, n),), generator=gen)
        params = sample_placements(idx.numel(), side, h, w, cfg, gen)
        p = patch.clone().requires_grad_(True)
        with torch.enable_grad():
            loss, _ = _loss(model, apply_square(x_all[idx], p, params), y_all[idx])
            (g,) = torch.autograd.grad(loss.mean(), p)
        patch = (patch + cfg.step_size * g.sign()).clamp(0.0, 1.0)
    return patch.detach()


def attack_glasses(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    mask: np.ndarray,
    cfg: PatchConfig,
    early_stop: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Sharif et al.'s eyeglass attack, per image: any values inside ``mask``, signed-gradient ascent.

    The frame starts as the image's own pixels, so the highest-loss iterate is never worse than none.

    Returns the uint8 adversarial images and the steps each example took: with ``early_stop``
    (deterministic models) an example stops at the first step the attacked model misclassifies it;
    otherwise (random chains) every example runs every step and keeps its highest-loss iterate.
    """
    cfg.validate()
    x = nhwc_uint8_to_nchw_float(images)
    y = torch.as_tensor(labels, dtype=torch.long)
    m = torch.as_tensor(mask)
    values = x.clone()  # start from the clean image: the kept iterate is never worse than no glasses
    best = values.clone()
    best_loss = torch.full((len(x),), -math.inf)
    done = torch.zeros(len(x), dtype=torch.bool)
    steps = torch.zeros(len(x), dtype=torch.long)
    for step in range(cfg.steps + 1):
        live = (~done).nonzero().flatten()
        if live.numel() == 0:
            break
        v = values[live].clone().requires_grad_(True)
        with torch.enable_grad():
            loss, logits = _loss(model, apply_mask(x[live], v, m), y[live])
            (g,) = torch.autograd.grad(loss.sum(), v)
        loss = loss.detach()
        better = loss > best_loss[live]
        best[live[better]] = values[live[better]]
        best_loss[live[better]] = loss[better]
        if early_stop:
            fooled = logits.argmax(1) != y[live]
            best[live[fooled]] = values[live[fooled]]
            done[live[fooled]] = True
            g, live = g[~fooled], live[~fooled]
        if step == cfg.steps:
            break
        steps[live] += 1
        values[live] = (values[live] + cfg.step_size * g.sign()).clamp(0.0, 1.0)
    adv = apply_mask(x, best, m)
    return nchw_float_to_nhwc_uint8(adv), steps.numpy()


# ----- evaluation ----------------------------------------------------------------------------------


def _fit_labels(labels: np.ndarray, eyes: EyeLine | None) -> np.ndarray:
    """Which examples a patch threat attacks: on a face data set only faces (evasion), else all."""
    if eyes is None:
        return np.ones(len(labels), dtype=bool)
    return np.asarray(labels == eyes.face_label)


def _patch_cache_path(cache_dir: Path | None, key: dict[str, Any]) -> Path | None:
    return None if cache_dir is None else cache_dir / f"patch-{key_hash(key)}.safetensors"


def load_or_train_square_patch(
    attack: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    cfg: PatchConfig,
    key: dict[str, Any],
    cache_dir: Path | None = None,
) -> torch.Tensor:
    """:func:`train_square_patch`, cached as safetensors under ``cache_dir`` by ``key`` + config + data."""
    from safetensors.torch import load_file, save_file

    full = {**key, "patch": asdict(cfg), "train": array_fingerprint(images, labels)}
    path = _patch_cache_path(cache_dir, full)
    if path is not None and path.exists():
        return load_file(str(path))["patch"]
    patch = train_square_patch(attack, images, labels, cfg)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"patch": patch.contiguous()}, str(path))
    return patch


def evaluate_patch(
    judge: DefendedClassifier,
    attack: nn.Module,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    cfg: PatchConfig,
    eyes: EyeLine | None = None,
    chain_name: str = "chain",
    cache_dir: Path | None = None,
    cache_key: dict[str, Any] | None = None,
    examples: int = 0,
    verdict: VerdictConfig | None = None,
) -> tuple[PatchResult, dict[str, np.ndarray]]:
    """Run one patch threat: craft with ``attack``'s gradients, judge like every other threat.

    ``judge`` is the deployed system (its model and exact chain); the verdict ranks the clean image and
    the candidate on selection draws and scores the worse on fresh scoring draws (``verdict``, default
    10 and 20 draws; one for a deterministic chain).  Only the test examples the threat targets (faces
    on a face data set) count; those some selection draw gets right are attacked.  Returns the result
    and, when ``examples`` > 0, that many example images: ``clean``, ``adversarial`` and ``purified``
    (the adversarial image after one draw of the chain), uint8 NHWC.
    """
    cfg.validate()
    t0 = time.perf_counter()
    x_all, y_all = test
    _, h, w, _ = x_all.shape
    target = _fit_labels(y_all, eyes)
    x_te, y_te = x_all[target], y_all[target]
    group = f"patch-{cfg.shape}" + (f"-{cfg.size:g}" if cfg.shape == "square" else "")
    verdicts = Judge(judge.model, judge.chain, verdict or VerdictConfig(), group)
    idx = np.flatnonzero(verdicts.attackable(x_te, y_te))
    randomized = bool(getattr(judge.chain, "randomized", False))
    gradient = str(getattr(attack, "gradient", "none"))
    eot = int(getattr(attack, "eot_samples", 1))
    adv = x_te.copy()
    steps = np.zeros(len(x_te), dtype=np.int64)
    share: float
    if cfg.shape == "square":
        side = square_side(cfg.size, h, w)
        x_tr, y_tr = train
        keep = _fit_labels(y_tr, eyes)
        key = {**(cache_key or {}), **judge_fingerprint(judge)}
        patch = load_or_train_square_patch(attack, x_tr[keep], y_tr[keep], cfg, key, cache_dir=cache_dir)
        gen = torch.Generator().manual_seed(cfg.seed + 1_000_003)  # the judge's placements: unseen
        params = sample_placements(len(x_te), side, h, w, cfg, gen)
        with torch.no_grad():
            composite = apply_square(nhwc_uint8_to_nchw_float(x_te), patch, params)
            _, cover = _place(patch, len(x_te), h, w, params)
        adv[idx] = nchw_float_to_nhwc_uint8(composite)[idx]
        share = float(cover.mean())
        steps[idx] = cfg.steps
    else:
        mask = glasses_mask(eyes, h, w)
        share = float(mask.mean())
        if idx.size:
            adv_i, steps_i = attack_glasses(
                attack, x_te[idx], y_te[idx], mask, cfg, early_stop=not randomized
            )
            adv[idx], steps[idx] = adv_i, steps_i
    judged = verdicts(x_te, y_te, [adv])
    stats = judged.summary()
    result = PatchResult(
        chain=chain_name,
        shape=cfg.shape,
        size=cfg.size if cfg.shape == "square" else None,
        share=round(share, 4),
        gradient=gradient,
        eot=eot,
        mean_steps=float(steps[idx].mean()) if idx.size else 0.0,
        seconds=time.perf_counter() - t0,
        verdict=judged.verdict,
        per_example={
            "index": np.flatnonzero(target).tolist(),
            **judged.per_example(),
            "steps": steps.tolist(),
        },
        adversarials=judged.images,
        labels=y_te,
        **stats,
    )
    shown: dict[str, np.ndarray] = {}
    if examples > 0:
        pick = idx[:examples]
        shown = {
            "clean": x_te[pick],
            "adversarial": judged.images[pick],
            "purified": judge.purify(judged.images[pick]),
        }
    return result, shown
