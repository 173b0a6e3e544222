"""Benchmark: BPDA+EOT PGD gradient steps per second, FenceBox harness vs IBM ART 1.20.

FenceBox: ``DefendedClassifier(model, chain, gradient="bpda", eot_samples=EOT)`` on a batch of BATCH
images; one step = one forward (exact chain on BATCH x EOT images, then the model) and backward,
plus the signed update and projection.

ART, two nearest configurations, because ART 1.20's ``PyTorchClassifier`` refuses to chain more
than one NumPy preprocessor ("The current combination of preprocessing types is not supported"):

1. ART's ``JpegCompression(quality=75)``, ``FeatureSqueezing(bit_depth=5)`` and
   ``SpatialSmoothing(window_size=3)`` chained by hand, each with its own ``estimate_gradient``
   (BPDA), around ``PyTorchClassifier.loss_gradient``; the PGD update in NumPy.
2. ART's own ``ProjectedGradientDescent`` on a ``PyTorchClassifier`` with ``JpegCompression`` only.

ART's EoT preprocessors for PyTorch need torchvision (it cannot be installed beside our torch) and
ART has no random resize-and-pad, so EOT is emulated the nearest way ART allows: the batch is tiled
EOT times (BATCH x EOT images per step, the same work as EOT draws).  The FenceBox chain (JPEG, bit
depth, median, random resize-and-pad) does more work per image than either ART configuration.

Floor: the work no harness can avoid per step, timed bare: the chain's deterministic prefix once on
BATCH images, its random rest on BATCH x EOT (exact ``apply``), the surrogate where the gradient
mode uses it, and the model's forward and backward.  ``harness_vs_floor`` = harness steps/s divided by
floor steps/s (the harness's overhead budget: >= 0.85).

Usage: ``python benchmarks/bench_harness.py [--model builtin:mnist] [--chain fencebox-default]
[--batch 128] [--eot 10] [--steps 10] [--rounds 3] [--workers N] [--gradient bpda|surrogate]
[--device cpu|cuda] [--skip-art]``
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import torch

from fencebox.models.base import Classifier
from fencebox.transforms.base import Transform


def floor_steps_per_s(
    model: Classifier,
    chain: Transform,
    x: torch.Tensor,
    y: torch.Tensor,
    eot: int,
    steps: int,
    workers: int,
    gradient: str = "bpda",
) -> float:
    """Time the unavoidable work of ``steps`` EOT gradient steps, written bare (see the module docstring)."""
    from fencebox.harness.defended import split_chain
    from fencebox.torch_util import nchw_float_to_nhwc_uint8, nhwc_uint8_to_nchw_float
    from fencebox.transforms.base import apply_parallel

    prefix, rest = split_chain(chain)
    rng = np.random.default_rng(0)

    def stage(t: Transform, u8: np.ndarray, z: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
        params = t.sample(rng, u8.shape)
        out = apply_parallel(t, u8, params, workers)
        exact = nhwc_uint8_to_nchw_float(out, x.device)
        sur = t.surrogate(z, params) if gradient == "surrogate" else z
        return out, sur + (exact - sur).detach()

    def step() -> None:
        u8 = nchw_float_to_nhwc_uint8(x)
        z = nhwc_uint8_to_nchw_float(u8, x.device).requires_grad_(True)
        k = 1
        if prefix is not None:
            u8, z = stage(prefix, u8, z)
        if rest is not None:
            k = eot
            _, z = stage(rest, np.tile(u8, (eot, 1, 1, 1)), z.repeat(eot, 1, 1, 1))
        torch.nn.functional.cross_entropy(model.logits(z), y.repeat(k)).backward()

    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - t0)


def fencebox_steps_per_s(
    model: Classifier,
    chain: Transform,
    x: torch.Tensor,
    y: torch.Tensor,
    eot: int,
    steps: int,
    workers: int,
    gradient: str = "bpda",
) -> float:
    """Time ``steps`` EOT PGD steps through the FenceBox harness (after one warm-up step)."""
    from fencebox.attacks.geometry import project
    from fencebox.attacks.gradient import ce_loss, loss_and_grad
    from fencebox.harness import DefendedClassifier

    defended = DefendedClassifier(model, chain, gradient=gradient, eot_samples=eot, seed=0, workers=workers)
    eps, alpha = 0.3, 0.01
    adv = x.clone()
    loss_and_grad(defended, adv, y, ce_loss)  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        _, _, g = loss_and_grad(defended, adv, y, ce_loss)
        adv = project(adv + alpha * g.sign(), x, eps, "linf")
    return steps / (time.perf_counter() - t0)


def _art_defences() -> list[Any]:
    """ART's three preprocessors matching the JPEG, bit-depth and median steps of fencebox-default."""
    from art.defences.preprocessor import FeatureSqueezing, JpegCompression, SpatialSmoothing

    return [
        JpegCompression(clip_values=(0.0, 1.0), quality=75, channels_first=True, apply_predict=True),
        FeatureSqueezing(clip_values=(0.0, 1.0), bit_depth=5, apply_predict=True),
        SpatialSmoothing(window_size=3, channels_first=True, apply_predict=True),
    ]


def _art_classifier(
    module: torch.nn.Module, shape: tuple[int, ...], classes: int, defences: list[Any]
) -> Any:
    """An ART PyTorchClassifier on the same torch module."""
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(
        model=module,
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=shape,
        nb_classes=classes,
        clip_values=(0.0, 1.0),
        preprocessing_defences=defences or None,
        device_type="gpu" if next(module.parameters()).is_cuda else "cpu",
    )


def art_chain_steps_per_s(
    module: torch.nn.Module, x: np.ndarray, y: np.ndarray, eot: int, steps: int, classes: int
) -> float:
    """ART components, all three preprocessors chained by hand (ART's classifier refuses to chain them).

    Per step: each preprocessor's ``__call__`` in order, ``PyTorchClassifier.loss_gradient`` of the bare
    model on the purified batch, each preprocessor's ``estimate_gradient`` (BPDA) in reverse, then the
    signed update and projection; the batch is tiled ``eot`` times and the gradient averaged back.
    """
    defences = _art_defences()
    clf = _art_classifier(module, x.shape[1:], classes, [])
    xt, yt = np.tile(x, (eot, 1, 1, 1)), np.eye(classes, dtype=np.float32)[np.tile(y, eot)]
    adv = x.copy()

    def step(adv: np.ndarray) -> np.ndarray:
        cur = np.tile(adv, (eot, 1, 1, 1))
        stages = [cur]
        for d in defences:
            cur = d(cur)[0].astype(np.float32)
            stages.append(cur)
        g = clf.loss_gradient(cur, yt)
        for d, inp in zip(reversed(defences), reversed(stages[:-1]), strict=True):
            g = d.estimate_gradient(inp, g)
        g = g.reshape(eot, *x.shape).mean(0)
        return np.clip(np.clip(adv + 0.01 * np.sign(g), x - 0.3, x + 0.3), 0.0, 1.0)

    del xt
    adv = step(adv)  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        adv = step(adv)
    return steps / (time.perf_counter() - t0)


def art_pgd_jpeg_steps_per_s(
    module: torch.nn.Module, x: np.ndarray, y: np.ndarray, eot: int, steps: int, classes: int
) -> float:
    """ART's own ProjectedGradientDescent with the one numpy preprocessor it accepts (JpegCompression)."""
    from art.attacks.evasion import ProjectedGradientDescent

    clf = _art_classifier(module, x.shape[1:], classes, _art_defences()[:1])
    xt, yt = np.tile(x, (eot, 1, 1, 1)), np.eye(classes, dtype=np.float32)[np.tile(y, eot)]

    def run(n: int) -> None:
        ProjectedGradientDescent(
            clf,
            norm=np.inf,
            eps=0.3,
            eps_step=0.01,
            max_iter=n,
            batch_size=len(xt),
            num_random_init=0,
            verbose=False,
        ).generate(xt, yt)

    run(1)  # warm-up
    t0 = time.perf_counter()
    run(steps)
    return steps / (time.perf_counter() - t0)


def purification_seconds(
    chain: Transform, x: torch.Tensor, eot: int, workers: int, repeats: int = 3
) -> tuple[float, float]:
    """Seconds per step spent purifying (forward and backward pass) alone: FenceBox chain vs ART's three.

    FenceBox: quantise, the chain's exact ``apply`` on BATCH x EOT images across ``workers`` threads
    (the BPDA backward is the identity, free).  ART: the three preprocessors' ``__call__`` and
    ``estimate_gradient`` on the same BATCH x EOT images.
    """
    from fencebox.torch_util import nchw_float_to_nhwc_uint8, nhwc_uint8_to_nchw_float

    u8 = np.tile(nchw_float_to_nhwc_uint8(x), (eot, 1, 1, 1))
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for _ in range(repeats):
        nhwc_uint8_to_nchw_float(chain.run(u8, rng, workers=workers))
    ours = (time.perf_counter() - t0) / repeats
    defences = _art_defences()
    xt = np.tile(x.cpu().numpy(), (eot, 1, 1, 1))
    t0 = time.perf_counter()
    for _ in range(repeats):
        cur, stages = xt, [xt]
        for d in defences:
            cur = d(cur)[0].astype(np.float32)
            stages.append(cur)
        g = np.ones_like(cur)
        for d, inp in zip(reversed(defences), reversed(stages[:-1]), strict=True):
            g = d.estimate_gradient(inp, g)
    art = (time.perf_counter() - t0) / repeats
    return ours, art


def main() -> None:
    """Run both sides and print one JSON line with the ratio."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="builtin:mnist")
    p.add_argument("--data", default="builtin:mnist-test")
    p.add_argument("--chain", default="fencebox-default")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--eot", type=int, default=10)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--workers", type=int, default=0, help="chain threads (0: all cores)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--gradient", default="bpda", choices=["bpda", "surrogate"])
    p.add_argument("--rounds", type=int, default=3, help="alternating floor/harness rounds (medians)")
    p.add_argument("--skip-art", action="store_true")
    a = p.parse_args()

    from fencebox.models import load_dataset, load_model
    from fencebox.spec import load_chain
    from fencebox.torch_util import nhwc_uint8_to_nchw_float
    from fencebox.transforms.base import default_workers

    model = load_model(a.model, device=a.device)
    images, labels = load_dataset(a.data)
    images, labels = images[: a.batch], labels[: a.batch]
    x = nhwc_uint8_to_nchw_float(images, model.device)
    y = torch.as_tensor(labels, device=model.device)
    workers = a.workers or default_workers()
    chain = load_chain(a.chain)
    floors, fbs = [], []
    for _ in range(a.rounds):  # alternate, so load changes on a shared machine hit both sides alike
        floors.append(floor_steps_per_s(model, chain, x, y, a.eot, a.steps, workers, a.gradient))
        fbs.append(fencebox_steps_per_s(model, chain, x, y, a.eot, a.steps, workers, a.gradient))
    floor, fb = float(np.median(floors)), float(np.median(fbs))
    result = {
        "model": a.model,
        "chain": a.chain,
        "batch": a.batch,
        "eot": a.eot,
        "device": a.device,
        "torch_threads": torch.get_num_threads(),
        "chain_workers": workers,
        "gradient": a.gradient,
        "fencebox_steps_per_s": round(fb, 3),
        "floor_steps_per_s": round(floor, 3),
        "harness_vs_floor": round(fb / floor, 3),
        "rounds": {"floor": [round(v, 3) for v in floors], "fencebox": [round(v, 3) for v in fbs]},
    }
    if not a.skip_art:
        ours_s, art_s = purification_seconds(chain, x, a.eot, workers)
        result["purification_only_s_per_step"] = {"fencebox": round(ours_s, 4), "art": round(art_s, 4)}
        result["ratio_purification_only"] = round(art_s / ours_s, 2)
        module = model.torch_module()
        if module is None:
            raise SystemExit("ART needs a torch module; this model has none")
        xn = x.cpu().numpy()
        art = art_chain_steps_per_s(module, xn, labels, a.eot, a.steps, model.num_classes)
        art_jpeg = art_pgd_jpeg_steps_per_s(module, xn, labels, a.eot, a.steps, model.num_classes)
        result["art_three_preprocessors_steps_per_s"] = round(art, 3)
        result["art_pgd_jpeg_only_steps_per_s"] = round(art_jpeg, 3)
        result["ratio_vs_art_three_preprocessors"] = round(fb / art, 2)
        result["ratio_vs_art_pgd_jpeg_only"] = round(fb / art_jpeg, 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
