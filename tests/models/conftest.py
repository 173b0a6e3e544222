"""Fixtures shared by the tests of ``fencebox.models``: one torch thread per test (small models are
faster that way on a shared machine) and the first 200 built-in test digits."""

from __future__ import annotations

import numpy as np
import pytest

from fencebox.models import load_dataset


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread: None) -> None:
    """Every models test runs with one intra-op torch thread (restored afterwards)."""


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    """The first 200 images of ``builtin:mnist-test``, for round trips that compare predictions."""
    return load_dataset("builtin:mnist-test")[0][:200]
