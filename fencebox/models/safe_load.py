"""Load model files without ever unpickling arbitrary objects.

- safetensors: a JSON header and raw tensors, nothing executable; the preferred format.
- PyTorch state dicts (``torch.save``): ``torch.load(weights_only=True)``, whose restricted unpickler refuses
  every global outside tensors and plain containers.
- TorchScript archives: a zip of TorchScript source (run by TorchScript's own interpreter, not by Python) and
  pickles of the module's attributes and constants.  Before ``torch.jit.load`` sees the file, every pickle in
  the archive is scanned with :mod:`pickletools` (which only parses) and each global it would import must be
  on :data:`TORCHSCRIPT_GLOBALS` (TorchScript classes, tensor rebuild helpers, storages, OrderedDict);
  anything else (``os.system``, ``builtins.exec``, any class of a Python package) is refused.
"""

from __future__ import annotations

import io
import json
import pickletools
import zipfile
from pathlib import Path

import torch

from fencebox.errors import ModelError

TORCHSCRIPT_GLOBALS: frozenset[str] = frozenset(
    {
        "collections OrderedDict",
        "torch._utils _rebuild_tensor",
        "torch._utils _rebuild_tensor_v2",
        "torch._utils _rebuild_parameter",
        "torch._utils _rebuild_qtensor",
        "torch.jit._pickle build_intlist",
        "torch.jit._pickle build_doublelist",
        "torch.jit._pickle build_boollist",
        "torch.jit._pickle build_tensorlist",
        "torch.jit._pickle build_tensor_from_id",
        "torch.jit._pickle restore_type_tag",
    }
)
"""``module name`` pairs a TorchScript pickle may reference (besides ``__torch__.*`` classes and storages)."""

_FORBIDDEN_OPS = frozenset({"INST", "OBJ", "STACK_GLOBAL", "EXT1", "EXT2", "EXT4"})
_MAX_PICKLE_BYTES = 256 * 1024 * 1024


def _global_allowed(ref: str) -> bool:
    module, _, name = ref.partition(" ")
    if module == "__torch__" or module.startswith("__torch__."):
        return (
            True  # a TorchScript class: defined by the archive's TorchScript code, not imported from Python
        )
    if module == "torch" and name.endswith("Storage"):
        return True
    return ref in TORCHSCRIPT_GLOBALS


def scan_pickle(data: bytes, where: str) -> None:
    """Raise ModelError if the pickle ``data`` would import anything outside the TorchScript allow-list.

    Only parses (``pickletools.genops``); never executes the pickle.
    """
    try:
        for op, arg, _ in pickletools.genops(io.BytesIO(data)):
            if op.name in _FORBIDDEN_OPS:
                raise ModelError(
                    f"{where}: refused: the pickle uses opcode {op.name}, which TorchScript never writes and which "
                    "can import and call arbitrary Python code"
                )
            if op.name == "GLOBAL" and not _global_allowed(str(arg)):
                raise ModelError(
                    f"{where}: refused: the pickle references '{str(arg).replace(' ', '.')}', which is not a "
                    "TorchScript type or tensor helper; unpickling it could run arbitrary code. Export the "
                    "model with torch.jit.script/trace, or as safetensors"
                )
    except ModelError:
        raise
    except Exception as e:  # a malformed pickle: refuse rather than hand it to a real unpickler
        raise ModelError(f"{where}: refused: not a well-formed pickle ({e})") from e


def check_torchscript_archive(path: Path) -> None:
    """Raise ModelError unless ``path`` is a TorchScript zip archive whose pickles are all allow-listed."""
    if not path.is_file():
        raise ModelError(f"torchscript:{path}: no such file")
    if not zipfile.is_zipfile(path):
        raise ModelError(f"torchscript:{path}: not a TorchScript archive (a zip written by torch.jit.save)")
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        if not any("/code/" in n or n.startswith("code/") for n in names):
            raise ModelError(
                f"torchscript:{path}: refused: holds no TorchScript code (a torch.save checkpoint?); load a "
                "state dict with 'state_dict:PATH?arch=NAME' or, better, 'safetensors:PATH?arch=NAME'"
            )
        for info in z.infolist():
            if info.filename.endswith("pkl"):
                if info.file_size > _MAX_PICKLE_BYTES:
                    raise ModelError(f"torchscript:{path}: refused: {info.filename} is implausibly large")
                scan_pickle(z.read(info), f"torchscript:{path} ({info.filename})")


def load_torchscript(path: Path, device: torch.device) -> torch.nn.Module:
    """Check the archive (see :func:`check_torchscript_archive`), then ``torch.jit.load`` it onto ``device``."""
    check_torchscript_archive(path)
    try:
        return torch.jit.load(str(path), map_location=device)
    except Exception as e:
        raise ModelError(f"torchscript:{path}: torch.jit.load failed: {e}") from e


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """A ``torch.save``'d state dict, read with ``weights_only=True`` (tensors and plain containers only)."""
    if not path.is_file():
        raise ModelError(f"state_dict:{path}: no such file")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelError(
            f"state_dict:{path}: refused or unreadable: torch.load(weights_only=True) accepts only tensors and "
            f"plain containers ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from e
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"state_dict:{path}: expected a dict of tensor names to tensors")
    return obj


def load_safetensors_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and header metadata of a safetensors file; ModelError if it is not one."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise ModelError(f"safetensors:{path}: no such file")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelError(f"safetensors:{path}: not a valid safetensors file: {e}") from e
    return tensors, _fencebox_meta(meta, path)


def _fencebox_meta(meta: dict[str, str], path: Path) -> dict[str, str]:
    """Flatten the ``fencebox`` metadata entry (JSON: arch, input_shape, num_classes) written by save_model."""
    if "fencebox" not in meta:
        return meta
    try:
        info = json.loads(meta["fencebox"])
        if not isinstance(info, dict):
            raise TypeError(f"expected a JSON object, got {type(info).__name__}")
        return {
            "arch": str(info.get("arch", "")),
            "input_shape": ",".join(str(int(v)) for v in info["input_shape"]),
            "num_classes": str(int(info["num_classes"])),
        }
    except (ValueError, TypeError, KeyError) as e:
        raise ModelError(f"safetensors:{path}: malformed 'fencebox' metadata: {e}") from e
