"""FenceBox: input purification in front of image classifiers.

>>> import fencebox, numpy as np
>>> chain = fencebox.load_chain("jpeg(quality=75) | bit_depth(bits=5) | median(size=3)")
>>> out = chain(np.zeros((2, 32, 32, 3), np.uint8), rng=0)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fencebox.errors import DataError, FenceboxError, InputError, ModelError, SpecError
from fencebox.presets import list_presets, preset_info
from fencebox.registry import list_transforms
from fencebox.spec import load_chain
from fencebox.transforms.base import Param, Transform
from fencebox.transforms.chain import Chain, Choice, RandomApply, RandomOrder

if TYPE_CHECKING:
    import numpy as np

__version__ = "0.1.0"


def purify(
    images: Any,
    chain: str | Transform = "fencebox-default",
    rng: np.random.Generator | int | None = None,
    workers: int = 1,
) -> Any:
    """Purify images through a chain (a preset name, spec or Transform) in one call.

    Returns the same kind of object as ``images`` (NumPy batch or image, PIL image, torch tensor).
    """
    return load_chain(chain)(images, rng=rng, workers=workers)


__all__ = [
    "Chain",
    "Choice",
    "DataError",
    "FenceboxError",
    "InputError",
    "ModelError",
    "Param",
    "RandomApply",
    "RandomOrder",
    "SpecError",
    "Transform",
    "__version__",
    "list_presets",
    "list_transforms",
    "load_chain",
    "preset_info",
    "purify",
]
