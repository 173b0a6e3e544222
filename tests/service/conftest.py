"""Fixtures shared by the service tests: a real redis-server on loopback, and a real headless Chromium.

The browser tests use Debian's ``chromium`` driven by Playwright, with no browser download: the
system's Chromium (``FENCEBOX_CHROMIUM``, default ``/usr/bin/chromium``).  Without it the browser tests are skipped, and said so loudly at the end of the
run, never silently.  Screenshots go to ``FENCEBOX_SCREENSHOTS`` (``docs/img`` refreshes the README's
pictures) or to the test's temporary folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
_MISSING: list[str] = []


def chromium_path() -> str | None:
    """The Chromium executable the browser tests drive, or None when there is none."""
    wanted = os.environ.get("FENCEBOX_CHROMIUM", "/usr/bin/chromium")
    if os.access(wanted, os.X_OK):
        return wanted
    return shutil.which("chromium")


def _skip_loudly(reason: str) -> None:
    if reason not in _MISSING:
        _MISSING.append(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A fresh headless Chromium profile (new user-data-dir) for one test module."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _skip_loudly("the playwright package is missing: pip install -e '.[test]'")
    exe = chromium_path()
    if exe is None:
        _skip_loudly(
            "no Chromium found (FENCEBOX_CHROMIUM or /usr/bin/chromium): apt-get install -y chromium"
        )
    profile = tempfile.mkdtemp(prefix="fencebox-chromium-", dir=tmp_path_factory.getbasetemp())
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            profile,
            executable_path=exe,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1280, "height": 800},
        )
        try:
            yield ctx
        finally:
            ctx.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the browser tests save their screenshots."""
    wanted = os.environ.get("FENCEBOX_SCREENSHOTS")
    folder = Path(wanted) if wanted else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say loudly, at the end of the run, that the browser tests did not run."""
    for reason in _MISSING:
        terminalreporter.write_sep("!", "BROWSER TESTS SKIPPED", red=True, bold=True)
        terminalreporter.write_line(f"The /ui browser tests did not run: {reason}", red=True, bold=True)
