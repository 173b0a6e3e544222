"""Data sets: built-in shapes, dtypes and stable splits; folder and npz loaders and their errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fencebox.errors import DataError
from fencebox.models import load_dataset
from fencebox.models.data import stratified_split

# sha256 of x.tobytes() + y.tobytes(): changes only if the data or the split changes, which must never happen.
SPLIT_SHA256 = {
    "builtin:mnist-test": "c8f11f77792e78b19b17a27f553b92e43b31798629dc1809455fcb2f37ee7ce8",
    "builtin:faces-test": "0697bd1393cfc94e2496e7d0975130691ed4440dc952a9b49355df6a7b57dabb",
}


@pytest.mark.parametrize(
    ("ref", "shape", "per_class"),
    [
        ("builtin:mnist-train", (4000, 28, 28, 1), 400),
        ("builtin:mnist-test", (1000, 28, 28, 1), 100),
        ("builtin:faces-train", (150, 25, 25, 1), 75),
        ("builtin:faces-test", (50, 25, 25, 1), 25),
    ],
)
def test_builtin_labelled_sets(ref: str, shape: tuple[int, ...], per_class: int) -> None:
    x, y = load_dataset(ref)
    assert x.shape == shape and x.dtype == np.uint8 and x.flags.c_contiguous
    assert y.shape == (shape[0],) and y.dtype == np.int64
    assert set(np.bincount(y).tolist()) == {per_class}  # stratified: every class equally represented
    assert x.max() > 200 and x.min() == 0  # real 0-255 images, not [0, 1] floats cast to uint8


@pytest.mark.parametrize(
    ("ref", "n", "classes"), [("builtin:mnist-test", 100, 10), ("builtin:faces-test", 10, 2)]
)
def test_first_n_test_examples_cover_every_class(ref: str, n: int, classes: int) -> None:
    """`fencebox evaluate -n N` takes the first N test examples: they must not all be one class."""
    _, y = load_dataset(ref)
    counts = np.bincount(y[:n], minlength=classes)
    assert (counts > 0).all() and counts.max() <= 0.7 * n, counts


@pytest.mark.parametrize("ref", sorted(SPLIT_SHA256))
def test_split_is_stable(ref: str) -> None:
    x, y = load_dataset(ref)
    assert hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest() == SPLIT_SHA256[ref]


def test_train_and_test_are_disjoint_and_cover_the_data() -> None:
    y = np.repeat(np.arange(10), 500)
    train, test = stratified_split(y, 0.2)
    assert len(np.intersect1d(train, test)) == 0
    assert len(train) + len(test) == len(y)
    again = stratified_split(y, 0.2)
    assert np.array_equal(test, again[1])
    assert not np.array_equal(test, stratified_split(y, 0.2, seed=1)[1])


def test_photos() -> None:
    x, y = load_dataset("builtin:photos")
    assert x.ndim == 4 and x.shape[1:] == (224, 224, 3) and x.dtype == np.uint8 and len(x) >= 8
    assert (y == -1).all() and y.dtype == np.int64
    assert float(x.std(axis=(1, 2, 3)).min()) > 10  # every crop has real content


def _write_folder(root: Path, sizes: dict[str, list[tuple[int, int]]], mode: str = "L") -> None:
    rng = np.random.default_rng(0)
    for cls, shapes in sizes.items():
        (root / cls).mkdir(parents=True)
        for i, (h, w) in enumerate(shapes):
            arr = rng.integers(0, 256, (h, w, 3) if mode == "RGB" else (h, w), dtype=np.uint8)
            Image.fromarray(arr, mode=mode).save(root / cls / f"{i}.png")


def test_folder_loader(tmp_path: Path) -> None:
    _write_folder(tmp_path, {"cat": [(9, 7)] * 2, "dog": [(9, 7)] * 3})
    (tmp_path / "notes.txt").write_text("ignored")
    x, y = load_dataset(f"folder:{tmp_path}")
    assert x.shape == (5, 9, 7, 1) and x.dtype == np.uint8
    assert y.tolist() == [0, 0, 1, 1, 1]
    reread = np.asarray(Image.open(tmp_path / "dog" / "0.png"))
    assert np.array_equal(x[2, ..., 0], reread)


def test_folder_mixed_grey_and_colour_becomes_rgb(tmp_path: Path) -> None:
    _write_folder(tmp_path / "a", {"grey": [(6, 6)]}, mode="L")
    _write_folder(tmp_path / "b", {"rgb": [(6, 6)]}, mode="RGB")
    (tmp_path / "a" / "grey").rename(tmp_path / "grey")
    (tmp_path / "b" / "rgb").rename(tmp_path / "rgb")
    (tmp_path / "a").rmdir()
    (tmp_path / "b").rmdir()
    x, y = load_dataset(f"folder:{tmp_path}")
    assert x.shape == (2, 6, 6, 3) and y.tolist() == [0, 1]
    assert np.array_equal(x[0, ..., 0], x[0, ..., 2])


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such directory"):
        load_dataset(f"folder:{tmp_path / 'missing'}")
    with pytest.raises(DataError, match="one sub-folder per class"):
        load_dataset(f"folder:{tmp_path}")
    _write_folder(tmp_path / "sizes", {"a": [(8, 8)], "b": [(8, 9)]})
    with pytest.raises(DataError, match="same size"):
        load_dataset(f"folder:{tmp_path / 'sizes'}")
    bad = tmp_path / "bad" / "a"
    bad.mkdir(parents=True)
    (bad / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="cannot read image"):
        load_dataset(f"folder:{tmp_path / 'bad'}")


def test_npz_loader(tmp_path: Path) -> None:
    x = np.arange(2 * 4 * 5, dtype=np.uint8).reshape(2, 4, 5)
    np.savez(tmp_path / "d.npz", x=x, y=np.array([3, 1], dtype=np.int32))
    lx, ly = load_dataset(f"npz:{tmp_path / 'd.npz'}")
    assert lx.shape == (2, 4, 5, 1) and np.array_equal(lx[..., 0], x)
    assert ly.dtype == np.int64 and ly.tolist() == [3, 1]


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"x": np.zeros((2, 4, 4), np.uint8)}, "missing"),
        ({"x": np.zeros((2, 4, 4), np.float32), "y": np.zeros(2, np.int64)}, "uint8"),
        ({"x": np.zeros((2, 4, 4, 2), np.uint8), "y": np.zeros(2, np.int64)}, "C in 1 or 3"),
        ({"x": np.zeros((2, 4, 4), np.uint8), "y": np.zeros(3, np.int64)}, "'y' must be"),
        ({"x": np.zeros((2, 4, 4), np.uint8), "y": np.array([object(), 1], dtype=object)}, "unpickling"),
    ],
)
def test_npz_errors(tmp_path: Path, arrays: dict[str, np.ndarray], match: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    with pytest.raises(DataError, match=match):
        load_dataset(f"npz:{path}")


@pytest.mark.parametrize(
    ("ref", "match"),
    [
        ("mnist", "looks like"),
        ("builtin:", "names no data set"),
        ("builtin:cifar", "unknown built-in"),
        ("s3:bucket/x", "unknown data set kind"),
        ("npz:/nonexistent/file.npz", "no such file"),
    ],
)
def test_bad_refs(ref: str, match: str) -> None:
    with pytest.raises(DataError, match=match):
        load_dataset(ref)


def test_npz_not_a_zip(tmp_path: Path) -> None:
    path = tmp_path / "junk.npz"
    path.write_bytes(b"not an npz at all")
    with pytest.raises(DataError):
        load_dataset(f"npz:{path}")
