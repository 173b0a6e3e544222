"""The documentation's code blocks run: README.md and docs/*.md say nothing the code does not do.

Every fenced code block in README.md and docs/*.md carries a mark on the line right before its fence:

- ``<!-- runnable -->``: this test runs it, by its language:
  ``python``: in a fresh interpreter, in a temporary folder holding a copy of ``examples/``;
  a block starting with ``>>>`` (doctest style): each statement runs, with ``fencebox`` and ``np``
  imported, and its output (or, for an exception, ``Name: message``) must equal the lines below it;
  ``bash``: in ``bash -euo pipefail``, in the same kind of folder, with ``fencebox`` on the PATH and
  ``curl`` failing on HTTP errors; ``127.0.0.1:8000`` and ``localhost:8000`` are replaced by the
  address of one real ``fencebox serve`` (no config: ``builtin:mnist`` behind ``fencebox-default``)
  that this module starts on a free loopback port, so the docs keep the address users type;
  ``yaml``: loaded as a configuration file by ``fencebox.service.settings.load_settings`` (what
  ``fencebox serve --config`` uses); ``toml``: parsed.
- ``<!-- not run: REASON -->``: not run, and the reason says why (a server that never returns, minutes
  of work, a cluster, a shape with placeholders...).

A block with neither mark fails ``test_every_block_is_marked``.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

import fencebox
from fencebox.service.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
MARK = re.compile(r"^\s*<!--\s*(?:(?P<runnable>runnable)|not run:\s*(?P<reason>\S.*?))\s*-->\s*$")
DOC_ADDRESS = re.compile(r"(?:127\.0\.0\.1|localhost):8000\b")
BLOCK_TIMEOUT_S = 240  # one block (an evaluation included) on a loaded 2-core machine; normally seconds
CURL_PRELUDE = 'curl() { command curl --fail-with-body "$@"; }\n'


@dataclass(frozen=True)
class Block:
    """One fenced code block: where it is, its language, its mark (None when unmarked) and its text."""

    path: Path
    line: int
    lang: str
    runnable: bool
    reason: str | None
    text: str

    @property
    def where(self) -> str:
        """``FILE:LINE`` of the opening fence, relative to the repository."""
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def marked(self) -> bool:
        """Whether the block says if it runs (and, if not, why)."""
        return self.runnable or bool(self.reason)


def parse_blocks(path: Path, text: str) -> list[Block]:
    """Every fenced block of a Markdown text, with the mark on the line right before its fence."""
    lines = text.splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        fence, indent = m["fence"], m["indent"]
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines):
            close = FENCE.match(lines[i])
            if (
                close
                and close["fence"][0] == fence[0]
                and len(close["fence"]) >= len(fence)
                and not close["info"].strip()
            ):
                break
            line = lines[i]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            i += 1
        i += 1
        mark = MARK.match(lines[start - 1]) if start > 0 else None
        found.append(
            Block(
                path=path,
                line=start + 1,
                lang=(m["info"].split() or [""])[0].lower(),
                runnable=bool(mark and mark["runnable"]),
                reason=mark["reason"] if mark else None,
                text="\n".join(body) + "\n",
            )
        )
    return found


def all_blocks() -> list[Block]:
    """The blocks of README.md and every docs/*.md, in reading order."""
    return [b for path in DOCS for b in parse_blocks(path, path.read_text(encoding="utf-8"))]


# Blocks that talk to the server run last, so the server starts while the others run.
RUNNABLE = sorted((b for b in all_blocks() if b.runnable), key=lambda b: bool(DOC_ADDRESS.search(b.text)))


def test_parser_sees_marks_and_unmarked_blocks() -> None:
    """The parser the checks below rely on: marks right before a fence count, anything else does not."""
    text = (
        "<!-- runnable -->\n```python\nx = 1\n```\n\n"
        "<!-- not run: needs a GPU -->\n```bash\nnvidia-smi\n```\n\n"
        "<!-- runnable -->\n\n```\nlate mark\n```\n"
        "<!-- not run: -->\n````md\n```\ninner\n```\n````\n"
    )
    got = parse_blocks(ROOT / "x.md", text)
    assert [(b.lang, b.runnable, b.reason, b.marked) for b in got] == [
        ("python", True, None, True),
        ("bash", False, "needs a GPU", True),
        ("", False, None, False),
        ("md", False, None, False),
    ]
    assert got[0].text == "x = 1\n" and got[3].text == "```\ninner\n```\n"


def test_every_block_is_marked() -> None:
    """A reader can tell which examples are checked: every block is runnable or says why it is not run."""
    blocks = all_blocks()
    assert blocks, "no code blocks found: is the parser broken?"
    unmarked = [f"{b.where} ({b.lang or 'no language'})" for b in blocks if not b.marked]
    assert not unmarked, (
        "code blocks without '<!-- runnable -->' or '<!-- not run: REASON -->' on the line before the fence: "
        + ", ".join(unmarked)
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A real ``fencebox serve`` with no config (what ``make serve`` runs), on a free loopback port."""

    proc: subprocess.Popen[bytes]
    address: str
    ready: bool = False

    def wait_ready(self) -> str:
        """Wait (generously: a torch import on a loaded machine) until the server is ready; its address."""
        deadline = time.monotonic() + 180
        while not self.ready:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                pytest.fail(f"fencebox serve exited with {self.proc.returncode}: {err[-2000:]}")
            with contextlib.suppress(httpx.TransportError):
                self.ready = httpx.get(f"http://{self.address}/v2/health/ready", timeout=2).status_code == 200
            if not self.ready:
                assert time.monotonic() < deadline, "fencebox serve not ready after 180 s"
                time.sleep(0.2)
        return self.address


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    """Started once for the module, before the first block needs it, so its start overlaps other blocks."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": _pythonpath()}
    cmd = [sys.executable, "-m", "fencebox.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield Server(proc, f"127.0.0.1:{port}")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _pythonpath() -> str:
    return os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A fresh folder holding a copy of the repository's ``examples/`` (the sample images the docs use),
    and a ``bin/fencebox`` that runs this interpreter's fencebox."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    bin_dir = tmp_path / ".bin"
    bin_dir.mkdir()
    exe = bin_dir / "fencebox"
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m fencebox.cli "$@"\n')
    exe.chmod(0o755)
    return tmp_path


def _env(workdir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": _pythonpath(),
        "PATH": os.pathsep.join([str(workdir / ".bin"), os.environ.get("PATH", "")]),
    }


def _run(cmd: list[str], block: Block, workdir: Path) -> None:
    proc = subprocess.run(
        cmd, cwd=workdir, env=_env(workdir), capture_output=True, timeout=BLOCK_TIMEOUT_S, check=False
    )
    assert proc.returncode == 0, (
        f"{block.where} failed ({proc.returncode}):\n{block.text}\n--- stdout\n"
        f"{proc.stdout.decode(errors='replace')[-3000:]}\n--- stderr\n{proc.stderr.decode(errors='replace')[-3000:]}"
    )


def _doctest(block: Block) -> None:
    """Run ``>>>`` statements in order; each one's printed output (or ``Name: message``) must match."""
    namespace: dict[str, object] = {"fencebox": fencebox, "np": np}
    examples: list[tuple[str, list[str]]] = []
    for line in block.text.splitlines():
        if line.startswith(">>> "):
            examples.append((line[4:], []))
        elif line.startswith("... ") and examples and not examples[-1][1]:
            examples[-1] = (examples[-1][0] + "\n" + line[4:], [])
        else:
            assert examples, f"{block.where}: output before the first '>>>'"
            examples[-1][1].append(line)
    for source, expected in examples:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            try:
                exec(compile(source + "\n", block.where, "single"), namespace)
            except Exception as e:  # the doc shows what the user sees: the exception's name and message
                print(f"{type(e).__name__}: {e}")
        got = [line.rstrip() for line in out.getvalue().rstrip("\n").splitlines()]
        want = [line.rstrip() for line in expected]
        while want and not want[-1]:
            want.pop()
        assert got == want, (
            f"{block.where}: >>> {source}\nexpected:\n" + "\n".join(want) + "\ngot:\n" + "\n".join(got)
        )


@pytest.mark.parametrize("block", RUNNABLE, ids=[b.where for b in RUNNABLE])
def test_runnable_block(block: Block, workdir: Path, server: Server) -> None:
    """Each block marked runnable does what it shows, as written (see the module docstring for how)."""
    if block.text.lstrip().startswith(">>>"):
        _doctest(block)
    elif block.lang == "python":
        script = workdir / "block.py"
        script.write_text(block.text)
        _run([sys.executable, str(script)], block, workdir)
    elif block.lang in ("bash", "sh", "shell"):
        text = block.text
        if re.search(r"\bcurl\b", text) and shutil.which("curl") is None:
            pytest.skip(f"{block.where}: curl is not installed, so its curl lines cannot be checked")
        if DOC_ADDRESS.search(text):
            text = DOC_ADDRESS.sub(server.wait_ready(), text)
        _run(["bash", "-euo", "pipefail", "-c", CURL_PRELUDE + text], block, workdir)
    elif block.lang == "yaml":
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", dir=workdir, delete=False) as f:
            f.write(block.text)
        load_settings(f.name)
    elif block.lang == "toml":
        tomllib.loads(block.text)
    else:
        pytest.fail(f"{block.where}: no runner for language {block.lang!r}: mark it '<!-- not run: why -->'")
