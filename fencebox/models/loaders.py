"""``load_model(ref)``: built-in models and model files, loaded safely into a :class:`Classifier`.

References:

- ``builtin:mnist``, ``builtin:mnist-adv``, ``builtin:faces``: committed weights (``fencebox/models/weights``).
- ``safetensors:PATH[?arch=NAME][&shape=HxWxC][&classes=N]``: a state dict of a FenceBox architecture.
- ``state_dict:PATH?arch=NAME[...]``: the same from ``torch.save``, read with ``weights_only=True``.
- ``torchscript:PATH[?shape=HxWxC]``: a ``torch.jit.save`` archive, checked before loading (see safe_load).
- ``onnx:PATH[?shape=HxWxC]``: an ONNX model taking float NCHW in [0, 1], run by onnxruntime on the CPU.
- ``py:module:attr``: a Classifier instance, or a callable returning one, importable from Python code you
  trust (it runs on import): the way to serve or attack a model of your own class.

A model card JSON beside the file (same name, ``.json``) is used when present; query parameters override it.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import numpy as np
import torch

from fencebox.errors import ModelError
from fencebox.models.arch import build_arch, list_architectures
from fencebox.models.base import Classifier, ModelCard
from fencebox.models.safe_load import load_safetensors_file, load_state_dict_file, load_torchscript
from fencebox.models.torch_model import TorchClassifier, resolve_device

WEIGHTS_DIR = Path(__file__).parent / "weights"
BUILTIN_MODELS = ("mnist", "mnist-adv", "faces")
_QUERY_KEYS = {"arch", "shape", "classes", "name"}


def list_builtin_models() -> list[str]:
    """Names accepted after ``builtin:``."""
    return list(BUILTIN_MODELS)


def builtin_card(name: str) -> ModelCard:
    """The model card of a built-in model, without loading its weights."""
    if name not in BUILTIN_MODELS:
        raise ModelError(f"unknown built-in model 'builtin:{name}'; available: {', '.join(BUILTIN_MODELS)}")
    return _read_card(WEIGHTS_DIR / f"{name}.json", required=True)  # type: ignore[return-value]


def _read_card(path: Path, required: bool = False) -> ModelCard | None:
    if not path.is_file():
        if required:
            raise ModelError(f"model card {path} is missing (run scripts/train_builtin.py to regenerate it)")
        return None
    try:
        return ModelCard.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError, KeyError) as e:
        raise ModelError(f"model card {path} is not a valid card JSON: {e}") from e


def _split_ref(ref: str) -> tuple[str, Path, dict[str, str]]:
    kind, _, rest = ref.partition(":")
    path_part, sep, query = rest.rpartition("?") if "?" in rest else (rest, "", "")
    opts: dict[str, str] = {}
    if sep:
        parsed = parse_qs(query, keep_blank_values=True, strict_parsing=False)
        unknown = sorted(set(parsed) - _QUERY_KEYS)
        if unknown:
            raise ModelError(f"{ref}: unknown option(s) {unknown}; accepted: {sorted(_QUERY_KEYS)}")
        opts = {k: v[-1] for k, v in parsed.items()}
    if not path_part:
        raise ModelError(f"model reference {ref!r} names no file after '{kind}:'")
    return kind, Path(path_part).expanduser(), opts


def _parse_shape(text: str, ref: str) -> tuple[int, int, int]:
    try:
        h, w, c = (int(p) for p in text.lower().split("x"))
    except ValueError as e:
        raise ModelError(f"{ref}: shape must look like HxWxC, e.g. 28x28x1, got {text!r}") from e
    if min(h, w) < 1 or c not in (1, 3):
        raise ModelError(f"{ref}: shape needs positive H, W and C in 1 or 3, got {text!r}")
    return h, w, c


def _parse_classes(text: str, ref: str, where: str = "") -> int:
    """The number of classes written in an option or in file metadata; ModelError when not an integer."""
    try:
        return int(text)
    except ValueError as e:
        raise ModelError(f"{ref}: classes must be an integer, got {text!r}{where}") from e


def _resolve_card(
    ref: str,
    path: Path,
    opts: dict[str, str],
    meta: dict[str, str],
    infer_classes: Any = None,
) -> ModelCard:
    """Merge query options > card JSON beside the file > file metadata into a card; ModelError if incomplete."""
    card = _read_card(path.with_suffix(".json"))
    shape: tuple[int, int, int] | None = card.input_shape if card else None
    if meta.get("input_shape"):
        shape = shape or _parse_shape(meta["input_shape"].replace(",", "x"), ref)
    if "shape" in opts:
        shape = _parse_shape(opts["shape"], ref)
    if shape is None:
        raise ModelError(
            f"{ref}: input shape unknown: put a model card JSON beside the file or add ?shape=HxWxC"
        )
    classes = card.num_classes if card else None
    if card is None and meta.get("num_classes"):
        classes = _parse_classes(meta["num_classes"], ref, " in the file's metadata")
    if "classes" in opts:
        classes = _parse_classes(opts["classes"], ref)
    if classes is None and infer_classes is not None:
        classes = int(infer_classes(shape))
    if classes is None or classes < 2:
        raise ModelError(f"{ref}: number of classes unknown or < 2: add a card JSON or ?classes=N")
    if card is None or card.input_shape != shape or card.num_classes != classes:
        names = (
            card.class_names
            if card and len(card.class_names) == classes
            else [str(i) for i in range(classes)]
        )
        card = ModelCard(
            name=opts.get("name", path.stem),
            input_shape=shape,
            num_classes=classes,
            class_names=names,
            how_made=f"loaded from {ref} (no matching model card)",
        )
    elif "name" in opts:
        card.name = opts["name"]
    return card


def _arch_of(ref: str, opts: dict[str, str], meta: dict[str, str], card_path: Path) -> str:
    card = _read_card(card_path)
    arch = opts.get("arch") or meta.get("arch") or (str(card.extra.get("arch", "")) if card else "")
    if not arch:
        raise ModelError(
            f"{ref}: which architecture? add ?arch=NAME (available: {', '.join(list_architectures())})"
        )
    return arch


def _from_state_dict(
    ref: str,
    path: Path,
    opts: dict[str, str],
    state: dict[str, torch.Tensor],
    meta: dict[str, str],
    device: Any,
) -> TorchClassifier:
    arch = _arch_of(ref, opts, meta, path.with_suffix(".json"))
    last = [v for k, v in state.items() if k.endswith("weight") and v.ndim == 2]
    card = _resolve_card(
        ref, path, opts, meta, infer_classes=(lambda _s: last[-1].shape[0]) if last else None
    )
    card.extra.setdefault("arch", arch)
    module = build_arch(arch, card.input_shape, card.num_classes)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelError(
            f"{ref}: the weights do not fit architecture {arch!r} for {card.input_shape}: {e}"
        ) from e
    return TorchClassifier(module, card, device)


def _verify_sha(path: Path, card: ModelCard) -> None:
    expected = card.extra.get("sha256")
    if expected and hashlib.sha256(path.read_bytes()).hexdigest() != expected:
        raise ModelError(f"{path}: sha256 differs from its model card; the weights were changed or corrupted")


def _load_builtin(name: str, device: Any) -> TorchClassifier:
    card = builtin_card(name)
    path = WEIGHTS_DIR / f"{name}.safetensors"
    _verify_sha(path, card)
    state, _meta = load_safetensors_file(path)
    module = build_arch(str(card.extra["arch"]), card.input_shape, card.num_classes)
    module.load_state_dict(state, strict=True)
    return TorchClassifier(module, card, device)


def _load_torchscript(ref: str, path: Path, opts: dict[str, str], device: Any) -> TorchClassifier:
    dev = resolve_device(device)
    module = load_torchscript(path, dev)

    def infer(shape: tuple[int, int, int]) -> int:
        with torch.inference_mode():
            return int(module(torch.zeros(1, shape[2], shape[0], shape[1], device=dev)).shape[-1])

    return TorchClassifier(module, _resolve_card(ref, path, opts, {}, infer), dev)


def load_model(ref: str, device: str | torch.device | None = None) -> Classifier:
    """Load a model reference (see the module docstring) onto ``device`` (None: CUDA when present, else CPU).

    Never unpickles arbitrary objects; files that would need it are refused with a ModelError.
    """
    if not isinstance(ref, str) or ":" not in ref:
        raise ModelError(
            "a model reference looks like 'builtin:mnist', 'safetensors:PATH?arch=NAME', 'torchscript:PATH' or "
            f"'onnx:PATH', got {ref!r}"
        )
    kind = ref.partition(":")[0]
    if kind == "builtin":
        return _load_builtin(ref.partition(":")[2], device)
    if kind == "py":
        return _load_python(ref)
    if kind not in ("safetensors", "state_dict", "torchscript", "onnx"):
        raise ModelError(
            f"unknown model kind {kind!r} in {ref!r}; expected builtin, safetensors, state_dict, "
            "torchscript, onnx or py"
        )
    _, path, opts = _split_ref(ref)
    if kind == "safetensors":
        state, meta = load_safetensors_file(path)
        return _from_state_dict(ref, path, opts, state, meta, device)
    if kind == "state_dict":
        return _from_state_dict(ref, path, opts, load_state_dict_file(path), {}, device)
    if kind == "torchscript":
        return _load_torchscript(ref, path, opts, device)
    from fencebox.models.onnx_model import OnnxClassifier, open_session

    session = open_session(path)

    def infer(shape: tuple[int, int, int]) -> int:
        name = session.get_inputs()[0].name
        return int(
            session.run(None, {name: np.zeros((1, shape[2], shape[0], shape[1]), np.float32)})[0].shape[-1]
        )

    return OnnxClassifier(session, _resolve_card(ref, path, opts, _onnx_meta(session), infer))


def _load_python(ref: str) -> Classifier:
    """``py:module:attr``: import trusted code and take its Classifier (or call its factory)."""
    target = ref[3:]
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ModelError(f"a python model reference must be 'py:module:attr', got {ref!r}")
    try:
        obj: Any = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ModelError(f"cannot import {target!r}: {exc}") from None
    model = obj() if callable(obj) and not isinstance(obj, Classifier) else obj
    if not isinstance(model, Classifier):
        raise ModelError(f"{ref!r} did not give a fencebox Classifier but {type(model).__name__}")
    return model


def _onnx_meta(session: Any) -> dict[str, str]:
    """Input shape from a static ONNX NCHW input, when it has one."""
    dims = session.get_inputs()[0].shape
    if len(dims) == 4 and all(isinstance(d, int) for d in dims[1:]):
        return {"input_shape": f"{dims[2]},{dims[3]},{dims[1]}"}
    return {}
