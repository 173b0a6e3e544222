"""The core CLI: transforms and presets tables, and purify on files and folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from fencebox.cli import app

runner = CliRunner()


def test_transforms_table_lists_parameters() -> None:
    result = runner.invoke(app, ["transforms"])
    assert result.exit_code == 0, result.output
    assert "bit_depth" in result.output and "bits=5" in result.output
    assert "choice" in result.output


def test_presets_table_cites_papers() -> None:
    result = runner.invoke(app, ["presets"])
    assert result.exit_code == 0, result.output
    assert "fencebox-default" in result.output and "Xu" in result.output


def _write_images(folder: Path) -> None:
    rng = np.random.default_rng(0)
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(folder / "sub" / "b.jpg")
    Image.fromarray(rng.integers(0, 256, (16, 16, 4), dtype=np.uint8)).save(folder / "sub" / "c.png")
    (folder / "notes.txt").write_text("not an image")


def test_purify_folder_keeps_structure_and_is_seeded(tmp_path: Path) -> None:
    _write_images(tmp_path / "in")
    spec = "random_apply(p=0.5, transform=bit_depth(bits=1))"
    for out in ("o1", "o2"):
        result = runner.invoke(
            app, ["purify", str(tmp_path / "in"), "-c", spec, "-o", str(tmp_path / out), "--seed", "3"]
        )
        assert result.exit_code == 0, result.output
    files = sorted(p.relative_to(tmp_path / "o1").as_posix() for p in (tmp_path / "o1").rglob("*.png"))
    assert files == ["a.png", "sub/b.png", "sub/c.png"]
    for f in files:
        a = np.asarray(Image.open(tmp_path / "o1" / f))
        np.testing.assert_array_equal(a, np.asarray(Image.open(tmp_path / "o2" / f)))
    assert np.asarray(Image.open(tmp_path / "o1" / "a.png")).shape == (20, 30, 3)
    assert np.asarray(Image.open(tmp_path / "o1" / "sub" / "b.png")).shape == (16, 16)


def test_purify_reports_bad_spec_and_missing_input(tmp_path: Path) -> None:
    _write_images(tmp_path / "in")
    result = runner.invoke(
        app, ["purify", str(tmp_path / "in"), "-c", "bit_dept(bits=1)", "-o", str(tmp_path / "o")]
    )
    assert result.exit_code == 2
    assert "did you mean 'bit_depth'" in result.output
    result = runner.invoke(app, ["purify", str(tmp_path / "nope"), "-c", "none", "-o", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "no such file or folder" in result.output


def test_purify_skips_unreadable_files_and_says_so(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "in" / "ok.png")
    result = runner.invoke(app, ["purify", str(tmp_path / "in"), "-c", "none", "-o", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "purified 1 of 2" in result.output
    assert (tmp_path / "o" / "ok.png").exists()


def test_error_messages_keep_their_brackets(tmp_path: Path) -> None:
    """Ranges like [lo, hi] in an error must reach the user, not vanish as terminal markup."""
    _write_images(tmp_path / "in")
    result = runner.invoke(
        app, ["purify", str(tmp_path / "in"), "-c", "jpeg(quality=500)", "-o", str(tmp_path / "o")]
    )
    assert result.exit_code == 2
    assert "or a range [lo, hi]" in result.output
