"""Safe loading: files carrying pickled code are refused, and their payload never runs."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from fencebox.errors import ModelError
from fencebox.models import build_arch, load_model
from fencebox.models.safe_load import scan_pickle


class Payload:
    """Unpickling this object runs ``exec``, which creates ``marker``: the classic pickle exploit."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (exec, (f"open({str(self.marker)!r}, 'w').write('payload ran')",))


def test_payload_is_live(tmp_path: Path) -> None:
    """Positive control: the payload really runs under a plain unpickler, so the refusals below mean something."""
    marker = tmp_path / "control"
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists()


@pytest.fixture
def malicious_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    """A torch.save file whose state dict carries the payload, and the marker it would create."""
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pt"
    torch.save({"fc.weight": torch.zeros(2, 2), "evil": Payload(marker)}, path)
    return path, marker


@pytest.mark.parametrize(
    ("kind", "match"),
    [
        ("torchscript:{p}", "no TorchScript code"),
        ("state_dict:{p}?arch=mnist_cnn", "weights_only=True"),
        ("safetensors:{p}?arch=mnist_cnn", "not a valid safetensors"),
        ("onnx:{p}", "onnxruntime cannot load"),
    ],
)
def test_checkpoint_payload_refused(malicious_checkpoint: tuple[Path, Path], kind: str, match: str) -> None:
    path, marker = malicious_checkpoint
    with pytest.raises(ModelError, match=match):
        load_model(kind.format(p=path), device="cpu")
    assert not marker.exists()


def test_torchscript_archive_with_payload_refused(tmp_path: Path) -> None:
    """A genuine TorchScript archive whose constants pickle was swapped for the payload."""
    marker = tmp_path / "pwned"
    good = tmp_path / "good.pt"
    torch.jit.trace(build_arch("mnist_cnn", (28, 28, 1), 10).eval(), torch.rand(1, 1, 28, 28)).save(str(good))
    bad = tmp_path / "bad.pt"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("constants.pkl"):
                data = pickle.dumps(Payload(marker), protocol=2)
            dst.writestr(info, data)
    assert load_model(f"torchscript:{good}?shape=28x28x1", device="cpu").num_classes == 10
    with pytest.raises(ModelError, match=r"(__builtin__|builtins)\.exec"):
        load_model(f"torchscript:{bad}?shape=28x28x1", device="cpu")
    assert not marker.exists()


def test_plain_pickle_file_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(Payload(marker)))
    for ref in (f"torchscript:{path}", f"state_dict:{path}?arch=mnist_cnn"):
        with pytest.raises(ModelError):
            load_model(ref, device="cpu")
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_scanner_refuses_every_protocol(tmp_path: Path, protocol: int) -> None:
    with pytest.raises(ModelError, match="refused"):
        scan_pickle(pickle.dumps(Payload(tmp_path / "m"), protocol=protocol), "test")
    scan_pickle(pickle.dumps({"a": [1, 2.0, "x"]}, protocol=protocol), "test")  # plain data passes


@pytest.mark.parametrize("meta", ["[1, 2]", '"mnist_cnn"', "{}", "not json"])
def test_malformed_fencebox_metadata_is_a_model_error(tmp_path: Path, meta: str) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"fencebox": meta})
    with pytest.raises(ModelError, match="malformed 'fencebox' metadata"):  # a list once gave AttributeError
        load_model(f"safetensors:{path}?arch=mnist_cnn", device="cpu")


def test_non_integer_class_count_in_metadata_is_a_model_error(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"input_shape": "28,28,1", "num_classes": "ten"})
    with pytest.raises(ModelError, match="classes must be an integer, got 'ten' in the file's metadata"):
        load_model(f"safetensors:{path}?arch=mnist_cnn", device="cpu")  # once a bare ValueError
