"""Fixtures shared by the service tests: a real redis-server on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.service.redis_server import RedisServer


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server (no persistence) for the test module."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.close()
