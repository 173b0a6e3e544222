"""Core CLI commands: list transforms and presets, and purify image files and folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from fencebox.cli_errors import err_console, exit_on_error
from fencebox.errors import ConfigError, FenceboxError

console = Console()

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}


def transforms_command() -> None:
    """List every available transform with its parameters, ranges and defaults."""
    from fencebox.registry import all_transforms

    table = Table(title="FenceBox transforms", show_lines=True)
    table.add_column("name", style="bold cyan")
    table.add_column("what it does")
    table.add_column("parameters (default; accepted)")
    table.add_column("random", justify="center")
    table.add_column("gradient", justify="center")
    for name, cls in all_transforms().items():
        params = "\n".join(
            f"{p.name}={'required' if p.required else p.default!r}; {p.describe_range()}" for p in cls.params
        )
        gradient = getattr(cls, "surrogate_kind", "identity")
        table.add_row(name, cls.describe(), params or "-", "yes" if cls.randomized else "no", gradient)
    console.print(table)


def presets_command() -> None:
    """List the shipped presets with their chains and the papers they come from."""
    from fencebox.presets import list_presets, preset_info

    table = Table(title="FenceBox presets", show_lines=True)
    table.add_column("name", style="bold cyan")
    table.add_column("chain")
    table.add_column("description / reference")
    for name in list_presets():
        info = preset_info(name)
        table.add_row(name, str(info["chain"]), f"{info['description']}\n[dim]{info['reference']}[/]")
    console.print(table)


def _collect(inputs: list[Path]) -> list[tuple[Path, Path]]:
    """(file, path relative to its input root) for every image file named or found under a folder."""
    found: list[tuple[Path, Path]] = []
    for item in inputs:
        if item.is_dir():
            for f in sorted(item.rglob("*")):
                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                    found.append((f, f.relative_to(item)))
        elif item.is_file():
            found.append((item, Path(item.name)))
        else:
            raise ConfigError(f"no such file or folder: {item}")
    if not found:
        raise ConfigError("no image files found in the inputs")
    return found


def _read_image(path: Path) -> np.ndarray:
    """Decode a local file with the service's safe decoder (same modes, rotation and limits)."""
    from fencebox.image import ImageLimits, decode

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FenceboxError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        arr = decode(data, ImageLimits(max_bytes=max(len(data), 1), max_pixels=20000 * 20000, max_side=65500))
    except FenceboxError as exc:
        raise FenceboxError(f"{path}: {exc}") from None
    return arr if arr.ndim == 3 else arr[..., None]


def purify_command(
    inputs: list[Path] = typer.Argument(..., help="Image files and/or folders (searched recursively)."),
    chain: str = typer.Option(
        "fencebox-default", "--chain", "-c", help="Preset name, compact spec or spec file."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (created); folder structure is kept."),
    seed: int | None = typer.Option(None, "--seed", help="Seed for random transforms (reproducible output)."),
    fmt: str = typer.Option(
        "png", "--format", help="Output format: png (lossless) or the input's own suffix."
    ),
) -> None:
    """Purify image files and folders through a chain, writing the results to OUT."""
    from PIL import Image

    from fencebox.spec import load_chain

    with exit_on_error():
        c = load_chain(chain)
        if fmt not in ("png", "same"):
            raise ConfigError("--format must be 'png' or 'same'")
        files = _collect(inputs)
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    with Progress(
        TextColumn("[bold]purifying[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
    ) as progress:
        task = progress.add_task("purify", total=len(files))
        for src, rel in files:
            try:
                img = _read_image(src)
                res = c.run(img[None], rng)[0]
                dest = out / rel
                if fmt == "png":
                    dest = dest.with_suffix(".png")
                dest.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(res[..., 0] if res.shape[-1] == 1 else res).save(dest)
            except FenceboxError as exc:
                failures.append(str(exc))
            progress.advance(task)
    done = len(files) - len(failures)
    console.print(f"purified {done} of {len(files)} images with [cyan]{c}[/] -> {out}")
    for f in failures:
        err_console.print(f"[yellow]skipped:[/] {escape(f)}")
    if failures:
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    """Add the core commands to the ``fencebox`` app."""
    app.command("transforms")(transforms_command)
    app.command("presets")(presets_command)
    app.command("purify")(purify_command)
