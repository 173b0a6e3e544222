"""Shared pieces of the service tests (no tests here): the app in-process (a real ASGI client, lifespan
included), the attack corpus of scripts/make_attack_corpus.py, and fuzz seeds (images, V2 messages)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import io
import json
import sys
from collections.abc import AsyncIterator, Iterator
from types import ModuleType
from typing import Any

import httpx
import numpy as np
from fastapi import FastAPI
from PIL import Image

import fencebox
from fencebox.models.base import Classifier
from fencebox.service import create_app
from fencebox.service.settings import RouteConfig, Settings
from tests.images import digit, encode_pil
from tests.service.servers import ROOT, TINY_REF, KServeProcess

try:
    import sniffio  # noqa: F401
except ImportError:  # httpx's ASGITransport imports it per request: fail fast instead of a path search
    sys.modules["sniffio"] = None  # type: ignore[assignment]


def load_corpus_module() -> ModuleType:
    """scripts/make_attack_corpus.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        "make_attack_corpus", ROOT / "scripts" / "make_attack_corpus.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def route(**fields: Any) -> RouteConfig:
    """A route 'tiny' serving the test TinyNet behind bit_depth(bits=5); ``fields`` override."""
    base: dict[str, Any] = {
        "name": "tiny",
        "backend": {"kind": "local", "model": TINY_REF},
        "chain": "bit_depth(bits=5)",
    }
    base.update(fields)
    return RouteConfig(**base)


@contextlib.asynccontextmanager
async def in_process(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app with its lifespan running, and an httpx client speaking ASGI to it (no socket)."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://fencebox", timeout=60) as c:
            yield app, c


async def asgi_request(
    app: FastAPI, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request straight through the ASGI interface -> (status, headers, body).

    The same protocol a server speaks to the app, without a client library's per-request cost (the
    fuzz suite sends tens of thousands); the body arrives in 64 KiB chunks as from a socket.
    """
    raw_path, _, query = path.partition("?")
    hdrs = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    hdrs.append((b"content-length", str(len(body)).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": raw_path,
        "raw_path": raw_path.encode("latin-1"),
        "query_string": query.encode("latin-1"),
        "root_path": "",
        "headers": hdrs,
        "client": ("127.0.0.1", 50000),
        "server": ("fencebox", 80),
    }
    chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)] or [b""]
    sent = 0
    out: dict[str, Any] = {"status": 0, "headers": {}, "body": []}

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent < len(chunks):
            sent += 1
            return {"type": "http.request", "body": chunks[sent - 1], "more_body": sent < len(chunks)}
        await asyncio.sleep(3600)  # nothing more: as a client that keeps the connection open
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
            out["headers"] = {k.decode(): v.decode() for k, v in message.get("headers", [])}
        elif message["type"] == "http.response.body":
            out["body"].append(message.get("body", b""))

    try:
        await app(scope, receive, send)
    except Exception:  # the server would answer 500 (already sent by ServerErrorMiddleware if started)
        if not out["status"]:
            out["status"] = 500
    return int(out["status"]), out["headers"], b"".join(out["body"])


def image_seeds() -> dict[str, bytes]:
    """Real encoded images of every accepted format and the awkward modes (fuzz seeds)."""
    gray = digit(1)
    rgb = np.stack([digit(2), digit(3), digit(4)], axis=-1)
    rgba = np.dstack([rgb, digit(5)])
    pal = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.info["transparency"] = 0
    frames = [Image.fromarray(digit(i)).convert("P") for i in range(3)]
    yy, xx = np.mgrid[:300, :280]
    large = np.dstack([xx % 256, yy % 256, (xx + yy) % 256, (xx * 3) % 256]).astype(np.uint8)
    return {
        "png_rgba_large": encode_pil(Image.fromarray(large), "PNG"),  # reduced in strips for the model
        "jpeg_large": encode_pil(Image.fromarray(large[:, :, :3]), "JPEG", quality=60),  # DCT-scaled
        "png_gray": encode_pil(Image.fromarray(gray), "PNG"),
        "png_rgba": encode_pil(Image.fromarray(rgba), "PNG"),
        "png_palette_transparent": encode_pil(pal, "PNG", transparency=0),
        "png_16bit": encode_pil(Image.fromarray(gray.astype(np.uint16) * 257), "PNG"),
        "png_interlaced": encode_pil(Image.fromarray(rgb), "PNG", optimize=False),
        "jpeg_gray": encode_pil(Image.fromarray(gray), "JPEG", quality=80),
        "jpeg_rgb_progressive": encode_pil(Image.fromarray(rgb), "JPEG", quality=70, progressive=True),
        "jpeg_cmyk": encode_pil(Image.fromarray(rgb).convert("CMYK"), "JPEG"),
        "gif_animated": encode_pil(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "tiff_multipage": encode_pil(
            Image.fromarray(gray), "TIFF", save_all=True, append_images=[Image.fromarray(rgb)]
        ),
        "tiff_lzw": encode_pil(Image.fromarray(rgb), "TIFF", compression="tiff_lzw"),
        "webp": encode_pil(Image.fromarray(rgb), "WEBP", quality=80),
        "webp_lossless_rgba": encode_pil(Image.fromarray(rgba), "WEBP", lossless=True),
        "bmp": encode_pil(Image.fromarray(rgb), "BMP"),
        "bmp_1bit": encode_pil(Image.fromarray(gray > 128), "BMP"),
    }


def v2_seeds(n: int = 2) -> dict[str, tuple[bytes, dict[str, str]]]:
    """Valid V2 requests for the tiny route: JSON UINT8, JSON FP32, binary UINT8 (body, headers)."""
    x = np.stack([digit(i) for i in range(n)])[..., None]
    shape = [n, 28, 28, 1]
    as_json = {"inputs": [{"name": "input", "datatype": "UINT8", "shape": shape, "data": x.ravel().tolist()}]}
    fp32 = {
        "id": "r1",
        "inputs": [
            {
                "name": "input",
                "datatype": "FP32",
                "shape": shape,
                "data": (x.ravel() / 255.0).round(3).tolist(),
            }
        ],
        "outputs": [{"name": "label", "parameters": {"binary_data": True}}],
    }
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "UINT8",
                    "shape": shape,
                    "parameters": {"binary_data_size": x.size},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    js = {"content-type": "application/json"}
    return {
        "json_uint8": (json.dumps(as_json).encode(), js),
        "json_fp32": (json.dumps(fp32).encode(), js),
        "binary_uint8": (
            header + x.tobytes(),
            {"content-type": "application/octet-stream", "inference-header-content-length": str(len(header))},
        ),
    }


def png_bytes(img: Image.Image) -> bytes:
    """PNG bytes of a PIL image."""
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def mnist_kserve(grpc: bool = False) -> Iterator[KServeProcess]:
    """The body of a module fixture: one KServe server serving builtin:mnist as V2 model 'mnist' (with
    ``grpc``, over gRPC too), not started: the first test starts it (after seeing it down)."""
    k = KServeProcess(name="mnist", ref="builtin:mnist", grpc=grpc)
    yield k
    k.stop()


def upstream_route(url: str, model: str = "mnist", **backend: Any) -> dict[str, Any]:
    """Route 'up' forwarding 28 x 28 x 1 images to ``model`` at ``url``; ``backend`` adds backend fields."""
    return {
        "name": "up",
        "backend": {
            "kind": "upstream",
            "url": url,
            "upstream_model": model,
            "input_shape": [28, 28, 1],
            **backend,
        },
    }


@functools.cache
def _mnist() -> Classifier:
    from fencebox.models import load_model

    return load_model("builtin:mnist")


def mnist_expected(img: np.ndarray) -> int:
    """The label builtin:mnist gives one 28 x 28 digit behind bit_depth(bits=5), computed locally."""
    return int(_mnist().predict(fencebox.load_chain("bit_depth(bits=5)")(img[None, :, :, None], rng=0))[0])
