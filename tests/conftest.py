"""Test-wide settings: a deterministic hypothesis profile on CI, and one torch thread per test process;
the ``one_torch_thread`` fixture for modules that want a single intra-op thread per test."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread: faster for small models on a shared machine, and restored afterwards."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def loopback_only() -> bool:
    """Whether this process sees no network interface but loopback (inside ``unshare -n``)."""
    return {name for _, name in socket.if_nameindex()} <= {"lo"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the ``ray`` tests, loudly, outside a loopback-only network namespace: Ray would bind to
    the machine's address.  ``scripts/run_ray_tests.sh`` (``make test`` as root) runs them inside one."""
    if loopback_only():
        return
    skip = pytest.mark.skip(
        reason="Ray tests run only in a loopback-only network namespace: run scripts/run_ray_tests.sh as root"
    )
    for item in items:
        if item.get_closest_marker("ray") is not None:
            item.add_marker(skip)
