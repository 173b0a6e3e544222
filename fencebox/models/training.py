"""Seeded, deterministic training of FenceBox's small CNNs: plain, PGD-adversarial, and through a chain.

``train(config)`` returns the trained module, its model card and per-epoch metrics; ``save_model`` writes
``NAME.safetensors`` and ``NAME.json`` (the card).  The built-in models are :data:`RECIPES`; the
``fencebox train`` command and ``scripts/train_builtin.py`` both call :func:`train` with them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fencebox.attacks.gradient import pgd
from fencebox.errors import DataError, ModelError
from fencebox.models.arch import build_arch
from fencebox.models.augment import ChainLayer, random_hflip, random_shift
from fencebox.models.base import ModelCard
from fencebox.models.data import dataset_classes, load_dataset
from fencebox.models.torch_model import resolve_device
from fencebox.torch_util import nhwc_uint8_to_nchw_float


@dataclass
class TrainConfig:
    """Everything that determines a training run (recorded in the model card)."""

    name: str
    arch: str
    data: str
    test_data: str | None = None
    epochs: int = 10
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.0
    seed: int = 0
    shift: int = 0
    """Random translation of up to this many pixels per image (augmentation)."""
    hflip: bool = False
    adversarial: str | None = None
    """None, or "pgd": Madry et al.'s L-inf PGD adversarial training."""
    eps: float = 0.3
    steps: int = 7
    alpha: float | None = None
    """PGD step size; default 2.5 * eps / steps."""
    eps_warmup: int = 0
    """Epochs over which the training epsilon ramps linearly from 0 to ``eps`` (0: full eps at once)."""
    chain: str | None = None
    """A chain spec applied to every training input (exact forward, surrogate gradient)."""
    eval_steps: int = 40
    eval_alpha: float = 0.01
    limit: int | None = None
    """Train on a seeded subset of this many examples (quick runs, tests)."""
    test_limit: int | None = None
    """Evaluate on the first N test examples (quick runs, tests)."""
    device: str = "cpu"
    threads: int | None = None

    def validate(self) -> None:
        """Raise ModelError on an impossible setting, naming it and what is accepted."""
        if self.epochs < 1 or self.batch_size < 1:
            raise ModelError(f"epochs and batch size must be >= 1, got {self.epochs} and {self.batch_size}")
        if self.adversarial not in (None, "pgd"):
            raise ModelError(f"--adversarial must be 'pgd' (or absent), got {self.adversarial!r}")
        if self.adversarial and not (0 < self.eps <= 1 and self.steps >= 1):
            raise ModelError(f"PGD needs 0 < eps <= 1 and steps >= 1, got eps={self.eps}, steps={self.steps}")
        if self.lr <= 0:
            raise ModelError(f"the learning rate must be > 0, got {self.lr}")


RECIPES: dict[str, TrainConfig] = {
    "mnist": TrainConfig(
        name="mnist",
        arch="mnist_cnn",
        data="builtin:mnist-train",
        test_data="builtin:mnist-test",
        epochs=20,
        batch_size=64,
        lr=2e-3,
        shift=2,
        seed=1,
    ),
    "mnist-adv": TrainConfig(
        name="mnist-adv",
        arch="mnist_cnn",
        data="builtin:mnist-train",
        test_data="builtin:mnist-test",
        epochs=60,
        batch_size=64,
        lr=2e-3,
        shift=2,
        seed=1,
        adversarial="pgd",
        eps=0.3,
        steps=7,
        alpha=0.1,
        eps_warmup=10,
    ),
    "faces": TrainConfig(
        name="faces",
        arch="faces_cnn",
        data="builtin:faces-train",
        test_data="builtin:faces-test",
        epochs=60,
        batch_size=16,
        lr=2e-3,
        shift=2,
        hflip=True,
        seed=1,
    ),
}


@dataclass
class EpochMetrics:
    """One epoch's numbers, as shown in the progress table and stored in the card."""

    epoch: int
    loss: float
    train_acc: float
    test_acc: float | None
    eps: float
    seconds: float


@dataclass
class TrainResult:
    """A trained module, its card and its training history."""

    module: nn.Module
    card: ModelCard
    history: list[EpochMetrics] = field(default_factory=list)
    seconds: float = 0.0


@contextmanager
def deterministic(threads: int | None, device: torch.device | None = None) -> Iterator[None]:
    """Deterministic torch algorithms (and optionally a thread count) for the block, restored afterwards.

    On CPU every op used here has a deterministic kernel; on CUDA some (max-pool backward) do not, so there
    nondeterminism only warns.
    """
    old_det = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    old_threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True, warn_only=device is not None and device.type != "cpu")
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old_det, warn_only=old_warn)
        torch.set_num_threads(old_threads)


def _subset(x: np.ndarray, y: np.ndarray, limit: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if limit is None or limit >= len(x):
        return x, y
    idx = np.sort(np.random.default_rng(seed).permutation(len(x))[:limit])
    return x[idx], y[idx]


def _tensors(x: np.ndarray, y: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    xt = nhwc_uint8_to_nchw_float(x).contiguous()
    return xt.to(device), torch.from_numpy(y.astype(np.int64)).to(device)


LogitsFn = Callable[[torch.Tensor], torch.Tensor]


def adversarial(
    logits_fn: LogitsFn,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int,
    alpha: float | None,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Madry et al.'s L∞ PGD examples for training and its scores: the shared :func:`~fencebox.attacks.gradient.pgd`.

    Random start, every step run (no early stop), the highest-loss iterate kept; detached.
    """
    if eps <= 0 or steps < 1:
        return x.detach().clone()
    out = pgd(logits_fn, x.detach(), y, eps, "linf", steps, alpha, generator=generator, early_stop=False)
    return out.x_adv.detach()


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


def _epoch_eps(cfg: TrainConfig, progress: float) -> float:
    """Training epsilon after ``progress`` epochs (fractional): a linear warm-up, then ``cfg.eps``."""
    if cfg.eps_warmup <= 0:
        return cfg.eps
    return cfg.eps * min(1.0, progress / cfg.eps_warmup)


def train(
    cfg: TrainConfig,
    on_epoch: Callable[[EpochMetrics], None] | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Train ``cfg.arch`` on ``cfg.data``; seeded and deterministic on CPU.  Returns module, card and history.

    ``on_batch(done, total)`` and ``on_epoch(metrics)`` report progress (the CLI draws them with rich).
    """
    cfg.validate()
    device = resolve_device(cfg.device)
    x_np, y_np = load_dataset(cfg.data)
    if (y_np < 0).any():
        raise DataError(f"{cfg.data}: has unlabelled images (y = -1); training needs labels")
    classes = dataset_classes(cfg.data, y_np)
    x_np, y_np = _subset(x_np, y_np, cfg.limit, cfg.seed)
    num_classes = max(len(classes), int(y_np.max()) + 1)
    input_shape: tuple[int, int, int] = tuple(int(s) for s in x_np.shape[1:])  # type: ignore[assignment]
    test = None
    if cfg.test_data:
        xt_np, yt_np = load_dataset(cfg.test_data)
        if xt_np.shape[1:] != x_np.shape[1:]:
            raise DataError(
                f"{cfg.test_data}: images are {xt_np.shape[1:]} but training images are {x_np.shape[1:]}"
            )
        test = _tensors(xt_np[: cfg.test_limit], yt_np[: cfg.test_limit], device)

    with deterministic(cfg.threads, device):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            model = build_arch(cfg.arch, input_shape, num_classes).to(device)
        gen = torch.Generator().manual_seed(cfg.seed)
        chain_layer = None
        if cfg.chain:
            from fencebox.spec import load_chain

            chain_layer = ChainLayer(load_chain(cfg.chain), cfg.seed)

        def forward(z: torch.Tensor) -> torch.Tensor:
            return model(chain_layer(z) if chain_layer is not None else z)

        x, y = _tensors(x_np, y_np, device)
        n = len(x)
        batches = (n + cfg.batch_size - 1) // cfg.batch_size
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=cfg.lr, total_steps=cfg.epochs * batches, pct_start=0.15, anneal_strategy="cos"
        )
        history: list[EpochMetrics] = []
        start = time.perf_counter()
        for epoch in range(cfg.epochs):
            t0 = time.perf_counter()
            model.train()
            perm = torch.randperm(n, generator=gen).to(device)
            total_loss, correct, eps_now = 0.0, 0, 0.0
            for b in range(batches):
                idx = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]
                xb, yb = x[idx], y[idx]
                if cfg.shift:
                    xb = random_shift(xb, cfg.shift, gen)
                if cfg.hflip:
                    xb = random_hflip(xb, gen)
                if cfg.adversarial == "pgd":
                    eps_now = _epoch_eps(cfg, epoch + (b + 1) / batches)
                    alpha = None if cfg.alpha is None else cfg.alpha * eps_now / cfg.eps
                    xb = adversarial(forward, xb, yb, eps_now, cfg.steps, alpha, gen)
                out = forward(xb)
                loss = F.cross_entropy(out, yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total_loss += loss.item() * len(idx)
                correct += int((out.argmax(1) == yb).sum())
                if on_batch:
                    on_batch(epoch * batches + b + 1, cfg.epochs * batches)
            model.eval()
            test_acc = accuracy(forward, *test) if test is not None else None
            m = EpochMetrics(
                epoch + 1, total_loss / n, correct / n, test_acc, eps_now, time.perf_counter() - t0
            )
            history.append(m)
            if on_epoch:
                on_epoch(m)
        seconds = time.perf_counter() - start
        model.eval()
        scores = _final_scores(cfg, model, forward, test, gen)
    card = _card(cfg, input_shape, num_classes, classes, scores, history, seconds, len(x_np))
    return TrainResult(model.cpu(), card, history, seconds)


def _final_scores(
    cfg: TrainConfig,
    model: nn.Module,
    forward: Callable[[torch.Tensor], torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor] | None,
    gen: torch.Generator,
) -> dict[str, float]:
    if test is None:
        return {}
    scores = {"clean": round(accuracy(forward, *test), 4)}
    if cfg.chain:
        scores["clean_without_chain"] = round(accuracy(model, *test), 4)
    if cfg.adversarial == "pgd":
        key = f"pgd{cfg.eval_steps}_linf_eps{cfg.eps:g}"

        def attack(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
            return adversarial(forward, xb, yb, cfg.eps, cfg.eval_steps, cfg.eval_alpha, gen)

        scores[key] = round(accuracy(forward, *test, attack=attack), 4)
    return scores


def _card(
    cfg: TrainConfig,
    input_shape: tuple[int, int, int],
    num_classes: int,
    classes: list[str],
    scores: dict[str, float],
    history: list[EpochMetrics],
    seconds: float,
    n_train: int,
) -> ModelCard:
    how = (
        f"`fencebox train` {cfg.arch}: {cfg.epochs} epochs, Adam (one-cycle lr {cfg.lr:g}), batch {cfg.batch_size}, "
        f"seed {cfg.seed}"
    )
    if cfg.shift or cfg.hflip:
        how += f", augmentation: shift ±{cfg.shift}px" + (", horizontal flips" if cfg.hflip else "")
    if cfg.adversarial == "pgd":
        alpha = cfg.alpha if cfg.alpha is not None else 2.5 * cfg.eps / cfg.steps
        how += (
            f"; Madry PGD adversarial training, L-inf eps={cfg.eps:g}, {cfg.steps} steps of {alpha:g}, random start"
            + (f", eps warm-up over {cfg.eps_warmup} epochs" if cfg.eps_warmup else "")
        )
    if cfg.chain:
        how += f"; inputs purified by chain '{cfg.chain}' (exact forward, surrogate gradient)"
    evaluation = f"accuracy on {cfg.test_data}" + (f" (first {cfg.test_limit})" if cfg.test_limit else "")
    if cfg.adversarial == "pgd":
        evaluation += (
            f"; robust: PGD-{cfg.eval_steps} L-inf eps={cfg.eps:g}, step {cfg.eval_alpha:g}, one random start"
        )
    return ModelCard(
        name=cfg.name,
        input_shape=input_shape,
        num_classes=num_classes,
        class_names=classes[:num_classes] + [str(i) for i in range(len(classes), num_classes)],
        training_data=f"{cfg.data} ({n_train} images)",
        accuracy=scores,
        how_made=how,
        extra={
            "arch": cfg.arch,
            "evaluation": evaluation,
            "config": dataclasses.asdict(cfg),
            "train_seconds": round(seconds, 1),
            "torch": torch.__version__,
            "history": [dataclasses.asdict(h) for h in history],
        },
    )


def save_model(module: nn.Module, card: ModelCard, out_dir: str | Path, name: str | None = None) -> Path:
    """Write ``NAME.safetensors`` (float32 state dict + arch metadata) and ``NAME.json`` (card + sha256).

    Returns the path of the weights file.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = name or card.name
    weights = out / f"{stem}.safetensors"
    state = {k: v.detach().cpu().float().contiguous() for k, v in module.state_dict().items()}
    # One metadata key holding sorted JSON: safetensors stores metadata in a hash map, so several keys would
    # be written in a random order and identical weights would not give identical files.
    info = {
        "arch": str(card.extra.get("arch", "")),
        "input_shape": list(card.input_shape),
        "num_classes": card.num_classes,
    }
    meta = {"fencebox": json.dumps(info, sort_keys=True)}
    save_file(state, str(weights), metadata=meta)
    weights.chmod(0o644)
    card.extra["sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    card.extra["bytes"] = weights.stat().st_size
    (out / f"{stem}.json").write_text(json.dumps(card.to_dict(), indent=2, default=_json_default) + "\n")
    return weights


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
