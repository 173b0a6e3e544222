"""Models and data: built-in data sets and classifiers, safe model loaders, training.

>>> from fencebox.models import load_dataset, load_model
>>> x, y = load_dataset("builtin:mnist-test")          # uint8 (1000, 28, 28, 1), int64 (1000,)
>>> model = load_model("builtin:mnist", device="cpu")
>>> labels = model.predict(x[:8])
"""

from __future__ import annotations

from fencebox.models.arch import build_arch, list_architectures
from fencebox.models.base import Classifier, ModelCard
from fencebox.models.data import list_builtin_datasets, load_dataset
from fencebox.models.loaders import builtin_card, list_builtin_models, load_model
from fencebox.models.torch_model import TorchClassifier

__all__ = [
    "Classifier",
    "ModelCard",
    "TorchClassifier",
    "build_arch",
    "builtin_card",
    "list_architectures",
    "list_builtin_datasets",
    "list_builtin_models",
    "load_dataset",
    "load_model",
]
