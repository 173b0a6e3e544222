"""The report files ``/ui/reports`` may open by name: only names inside the configured ``reports_dir``.

A name is either a sub-folder holding ``report.json`` (``reports/mnist/report.json`` is ``mnist``, what
``fencebox evaluate --out reports/mnist`` writes) or a ``.json`` file directly in the folder
(``ci.json``).  Names are matched against what the folder lists, never joined onto a path as given,
so ``..``, absolute paths, separators and symbolic links that leave the folder cannot reach a file.

Saved adversarial examples (``fencebox evaluate --save-adversarials``) sit next to a report as
``adversarials.npz`` (uint8 images, no pickles) and reach the page in the JSON shape of
:func:`examples_json` (documented in docs/ui.md); a report without them has an empty list.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from fencebox import image
from fencebox.errors import DataError
from fencebox.service.stages import parse_spec

REPORT_FILE = "report.json"
EXAMPLES_FILE = "adversarials.npz"
MAX_REPORT_BYTES = 64 * 1024 * 1024
"""Largest report.json served (the committed MNIST reports are about 1 MB)."""
MAX_EXAMPLES = 48
"""Most saved examples sent to the page at once (each is three small PNGs)."""
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*(?:\.[A-Za-z0-9_\-]+)*$")
"""A report name: letters, digits, '_', '-' and single dots between them (no '..', no separators)."""
EXAMPLES_SCHEMA = "fencebox.ui.examples/1"


class ReportNotFound(DataError):
    """No report by that name in the reports folder (or no folder configured)."""


class ReportStore:
    """The reports under one folder, looked up by name only."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder.resolve() if folder is not None else None

    def _inside(self, path: Path) -> bool:
        assert self.folder is not None
        try:
            return path.resolve().is_relative_to(self.folder) and path.resolve().is_file()
        except OSError:
            return False

    def names(self) -> list[str]:
        """Every report name the folder holds, sorted."""
        if self.folder is None or not self.folder.is_dir():
            return []
        found: list[str] = []
        for entry in sorted(self.folder.iterdir()):
            if not NAME.match(entry.name):
                continue
            report = entry / REPORT_FILE if entry.is_dir() else entry
            if (entry.is_dir() or entry.suffix == ".json") and self._inside(report):
                found.append(entry.name)
        return found

    def path(self, name: str) -> Path:
        """The report file called ``name``; ReportNotFound for any name the folder does not list."""
        if self.folder is None:
            raise ReportNotFound("no reports folder is configured (set reports_dir in the service config)")
        if not NAME.match(name) or name not in self.names():
            raise ReportNotFound(
                f"no report named {name!r}; open one of: {', '.join(self.names()) or 'none'}"
            )
        entry = self.folder / name
        return entry / REPORT_FILE if entry.is_dir() else entry

    def load(self, name: str) -> bytes:
        """The report's JSON text, checked to be a FenceBox report and not oversized."""
        path = self.path(name)
        size = path.stat().st_size
        if size > MAX_REPORT_BYTES:
            raise DataError(f"report {name!r} is {size} bytes, more than the {MAX_REPORT_BYTES} served")
        data = path.read_bytes()
        try:
            doc = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"report {name!r} is not valid JSON: {exc}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("results"), list):
            raise DataError(f"report {name!r} is not a FenceBox report (no 'results' list)")
        return data

    def examples(self, name: str) -> dict[str, Any]:
        """The report's saved adversarial examples in the page's JSON shape (empty when none were saved).

        Two layouts: ``adversarials.npz`` beside the report (:func:`examples_json`), or the harness's
        own, one npz per result row named in the row's ``verdict.adversarials.file``
        (:func:`harness_examples`).
        """
        report = self.path(name)
        npz = report.parent / EXAMPLES_FILE if report.name == REPORT_FILE else None
        if npz is not None and self._inside(npz):
            return examples_json(npz)
        doc = json.loads(self.load(name))
        files = [
            (row, report.parent / str(row["verdict"]["adversarials"].get("file", "")))
            for row in doc["results"]
            if isinstance(row.get("verdict"), dict) and isinstance(row["verdict"].get("adversarials"), dict)
        ]
        files = [(row, path) for row, path in files if self._inside(path) and path.suffix == ".npz"]
        if not files:
            return {"schema": EXAMPLES_SCHEMA, "examples": [], "source": None}
        return harness_examples(doc, files)


def _png(img: np.ndarray) -> str:
    """A uint8 (H, W) or (H, W, C) image as base64 PNG text."""
    arr = img[:, :, None] if img.ndim == 2 else img
    return base64.b64encode(image.encode(np.ascontiguousarray(arr, dtype=np.uint8), "png")[0]).decode()


def _column(data: Any, key: str, n: int) -> list[Any] | None:
    """A per-example column of the npz as a Python list (None when absent or of the wrong length)."""
    if key not in data.files:
        return None
    col = np.asarray(data[key])
    if col.shape[:1] != (n,):
        return None
    return [v.item() if hasattr(v, "item") else v for v in col]


def examples_json(npz: Path, limit: int = MAX_EXAMPLES) -> dict[str, Any]:
    """Convert a saved-adversarials npz to the page's shape.

    The npz holds ``clean`` and ``adversarial`` (N, H, W[, C]) uint8 and optionally ``purified`` (the
    adversarial after the chain), ``index``, ``label``, ``pred_clean``, ``pred_adversarial``,
    ``pred_purified``, ``chain``, ``threat`` and ``eps`` (one value per example).  The answer::

        {"schema": "fencebox.ui.examples/1", "source": "adversarials.npz", "total": N,
         "examples": [{"index", "label", "chain", "threat", "eps",
                       "clean": {"image": <base64 PNG>, "prediction": int | null},
                       "adversarial": {...}, "purified": {...} | null}, ...]}
    """
    try:
        with np.load(npz, allow_pickle=False) as data:
            if "clean" not in data.files or "adversarial" not in data.files:
                raise DataError(f"{npz.name} has no 'clean' and 'adversarial' arrays")
            clean, adv = np.asarray(data["clean"]), np.asarray(data["adversarial"])
            if clean.shape != adv.shape or clean.dtype != np.uint8 or adv.dtype != np.uint8:
                raise DataError(f"{npz.name}: 'clean' and 'adversarial' must be uint8 arrays of one shape")
            n = clean.shape[0]
            purified = np.asarray(data["purified"]) if "purified" in data.files else None
            if purified is not None and (purified.shape[0] != n or purified.dtype != np.uint8):
                purified = None
            cols = {
                k: _column(data, k, n)
                for k in (
                    "index",
                    "label",
                    "pred_clean",
                    "pred_adversarial",
                    "pred_purified",
                    "chain",
                    "threat",
                    "eps",
                )
            }
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {npz.name}: {exc}") from None

    def col(key: str, i: int) -> Any:
        values = cols[key]
        return None if values is None else values[i]

    out = []
    for i in range(min(n, limit)):
        out.append(
            {
                "index": col("index", i) if cols["index"] is not None else i,
                "label": col("label", i),
                "chain": col("chain", i),
                "threat": col("threat", i),
                "eps": col("eps", i),
                "clean": {"image": _png(clean[i]), "prediction": col("pred_clean", i)},
                "adversarial": {"image": _png(adv[i]), "prediction": col("pred_adversarial", i)},
                "purified": None
                if purified is None
                else {"image": _png(purified[i]), "prediction": col("pred_purified", i)},
            }
        )
    return {"schema": EXAMPLES_SCHEMA, "source": npz.name, "total": int(n), "examples": out}


def _part(images: np.ndarray | None, preds: np.ndarray | None, j: int) -> dict[str, Any] | None:
    """One image of an example (base64 PNG) with its prediction, or None when it is not available."""
    if images is None:
        return None
    return {"image": _png(images[j]), "prediction": None if preds is None else int(preds[j])}


def _builtin(ref: Any) -> bool:
    return isinstance(ref, str) and ref.startswith("builtin:")


def harness_examples(
    doc: dict[str, Any], files: list[tuple[dict[str, Any], Path]], limit: int = MAX_EXAMPLES
) -> dict[str, Any]:
    """Examples from the harness's per-row npz files (``images`` uint8 NHWC, ``labels``, ``index``).

    Those files hold only the adversarials; the clean images, the chain's output and the
    predictions come from the report's model and data, and only when both are built-in (shipped
    with the package): a report file never makes the service load a model or data file it names.
    Broken examples (the purified adversarial misclassified) come first, a few per row.
    """
    from fencebox.models import load_dataset, load_model

    cfg = doc.get("config", {})
    model = load_model(cfg["model"]) if _builtin(cfg.get("model")) else None
    data = load_dataset(cfg["data"]) if _builtin(cfg.get("data")) and model is not None else None
    per_row = max(2, limit // max(1, len(files)))
    out: list[dict[str, Any]] = []
    total = 0
    for row, path in files:
        try:
            with np.load(path, allow_pickle=False) as f:
                adv = np.asarray(f["images"], dtype=np.uint8)
                labels = np.asarray(f["labels"]).astype(np.int64)
                index = np.asarray(f["index"]).astype(np.int64) if "index" in f.files else np.arange(len(adv))
        except (OSError, ValueError, KeyError) as exc:
            raise DataError(f"cannot read {path.name}: {exc}") from None
        total += len(adv)
        if len(out) >= limit or adv.ndim != 4 or len(adv) == 0:
            continue
        purified = pred_adv = pred_pur = clean = pred_clean = None
        if model is not None:
            chain = parse_spec(str(row.get("chain_spec") or "none"))
            purified = chain.run(adv, 0)
            pred_adv, pred_pur = model.predict(adv), model.predict(purified)
            if data is not None and int(index.max()) < len(data[0]):
                clean = data[0][index]
                pred_clean = model.predict(clean)
        order = np.argsort(pred_pur == labels, kind="stable") if pred_pur is not None else np.arange(len(adv))
        for j in order[: min(per_row, limit - len(out))]:
            out.append(
                {
                    "index": int(index[j]),
                    "label": int(labels[j]),
                    "chain": row.get("chain"),
                    "threat": row.get("threat"),
                    "eps": row.get("eps"),
                    "clean": _part(clean, pred_clean, int(j)),
                    "adversarial": _part(adv, pred_adv, int(j)),
                    "purified": _part(purified, pred_pur, int(j)),
                }
            )
    return {"schema": EXAMPLES_SCHEMA, "source": "verdict.adversarials", "total": total, "examples": out}
