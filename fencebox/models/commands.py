"""The ``fencebox train`` command: train a built-in recipe or an architecture on a data set, write weights + card."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from fencebox.cli_errors import exit_on_error
from fencebox.errors import ConfigError

console = Console()


def _config(model: str, data: str | None, overrides: dict[str, Any]) -> Any:
    """A TrainConfig from a recipe name (overridden by the options given) or an architecture name."""
    from fencebox.models.arch import ARCHITECTURES
    from fencebox.models.training import RECIPES, TrainConfig

    given = {k: v for k, v in overrides.items() if v is not None}
    if model in RECIPES:
        cfg = dataclasses.replace(RECIPES[model], **given)
        if data is not None and data != cfg.data:
            cfg = dataclasses.replace(cfg, data=data, test_data=given.get("test_data"))
        return cfg
    if model in ARCHITECTURES:
        if data is None:
            raise ConfigError(f"training architecture {model!r} needs --data (e.g. folder:PATH or npz:PATH)")
        return TrainConfig(name=given.pop("name", None) or model, arch=model, data=data, **given)
    raise ConfigError(
        f"unknown model {model!r}: give a built-in recipe ({', '.join(RECIPES)}) or an architecture "
        f"({', '.join(sorted(ARCHITECTURES))})"
    )


def train_command(
    model: str = typer.Argument(
        ..., help="Built-in recipe (mnist, mnist-adv, faces) or architecture (mnist_cnn, ...)."
    ),
    data: str | None = typer.Option(
        None, "--data", help="Training data: builtin:NAME, folder:PATH or npz:PATH."
    ),
    out: Path = typer.Option(
        ..., "--out", help="Folder for NAME.safetensors and NAME.json (the model card)."
    ),
    test_data: str | None = typer.Option(None, "--test-data", help="Held-out data for per-epoch accuracy."),
    adversarial: str | None = typer.Option(
        None, "--adversarial", help="'pgd': Madry L-inf PGD adversarial training."
    ),
    eps: float | None = typer.Option(None, "--eps", help="PGD radius in [0, 1] pixel units (e.g. 0.3)."),
    steps: int | None = typer.Option(None, "--steps", help="PGD steps per training example (e.g. 7)."),
    chain: str | None = typer.Option(
        None, "--chain", help="Purification chain applied to every training input."
    ),
    epochs: int | None = typer.Option(None, "--epochs", min=1),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1),
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate (Adam, one-cycle)."),
    seed: int | None = typer.Option(None, "--seed"),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Train on a seeded subset of N examples."),
    test_limit: int | None = typer.Option(
        None, "--test-limit", min=1, help="Evaluate on the first N test examples."
    ),
    name: str | None = typer.Option(
        None, "--name", help="Model name (file stem); default: the recipe or arch."
    ),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto."),
    threads: int = typer.Option(
        1, "--threads", min=1, help="torch CPU threads (1 is fastest on busy machines)."
    ),
) -> None:
    """Train a model (seeded, deterministic on CPU) and write safetensors weights plus a model card."""
    from fencebox.models.training import EpochMetrics, save_model, train

    overrides = {
        "test_data": test_data,
        "adversarial": adversarial,
        "eps": eps,
        "steps": steps,
        "chain": chain,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "limit": limit,
        "test_limit": test_limit,
        "name": name,
        "device": device,
        "threads": threads,
    }
    with exit_on_error():
        cfg = _config(model, data, overrides)
        cfg.validate()
    what = f"[bold]{cfg.name}[/] ({cfg.arch}) on {cfg.data}"
    if cfg.adversarial:
        what += f", PGD eps={cfg.eps:g} x{cfg.steps}"
    if cfg.chain:
        what += f", chain {cfg.chain}"
    console.print(f"training {what}, {cfg.epochs} epochs, seed {cfg.seed}, device {cfg.device}")
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("batches", total=None)

        def on_batch(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        def on_epoch(m: EpochMetrics) -> None:
            test = f"  test acc {m.test_acc:.4f}" if m.test_acc is not None else ""
            eps_text = f"  eps {m.eps:.3f}" if cfg.adversarial else ""
            progress.console.print(
                f"epoch {m.epoch:3d}/{cfg.epochs}  loss {m.loss:.4f}  train acc {m.train_acc:.4f}{test}"
                f"{eps_text}  {m.seconds:.1f} s"
            )

        with exit_on_error():
            result = train(cfg, on_epoch=on_epoch, on_batch=on_batch)
    path = save_model(result.module, result.card, out, cfg.name)
    scores = ", ".join(f"{k} {v:.4f}" for k, v in result.card.accuracy.items()) or "no test data"
    console.print(f"[green]done[/] in {result.seconds:.0f} s: {scores}")
    console.print(f"wrote {path} ({path.stat().st_size} bytes) and {path.with_suffix('.json')}")


def register(app: typer.Typer) -> None:
    """Add ``train`` to the ``fencebox`` command line."""
    app.command("train")(train_command)
