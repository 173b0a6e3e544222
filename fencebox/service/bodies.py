"""Reading request bodies within limits: raw image bodies, multipart uploads, the size cap (413)."""

from __future__ import annotations

import asyncio
from typing import Any

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from fencebox.service.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/bmp", "image/tiff", "image/gif")

IMAGE_BODY_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "An encoded image (PNG, JPEG, WebP, BMP, TIFF, GIF) as the raw body, or a multipart "
        "form with the image in a file field named 'file'.",
        "content": {
            **{
                t: {"schema": {"type": "string", "format": "binary"}}
                for t in (*IMAGE_TYPES, "application/octet-stream")
            },
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
        },
    }
}


async def read_body(request: Request, max_bytes: int) -> bytes:
    """Read the whole body, refusing (413) as soon as it passes ``max_bytes``, before buffering more."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"the body is {declared} bytes; this route accepts at most {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"the body exceeds this route's limit of {max_bytes} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # let request.form() re-read what we already consumed
    return body


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def multipart_file(body: bytes, content_type: str, max_bytes: int) -> bytes:
    """The uploaded file of a multipart/form-data body (field ``file``, else the first file part).

    Plain bytes in, bytes out, so it runs in the worker pool: parsing a 10 MB form is O(body)
    work that must not hold the event loop.  At most 8 parts; raises BadRequest when the form is
    malformed or holds no file.
    """
    ctype, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise BadRequest("the multipart body has no boundary in its content type")
    parts: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    header_field: list[bytes] = []
    header_value: list[bytes] = []

    def on_part_begin() -> None:
        current.clear()
        current.update(headers={}, data=[])
        if len(parts) >= 8:
            raise BadRequest("the multipart body has more than 8 parts")

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_field.append(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.append(data[start:end])

    def on_header_end() -> None:
        current["headers"][b"".join(header_field).lower()] = b"".join(header_value)
        header_field.clear()
        header_value.clear()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        current["data"].append(data[start:end])

    def on_part_end() -> None:
        parts.append(dict(current))

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
        max_size=max_bytes,
    )
    try:
        parser.write(body)
        parser.finalize()
    except BadRequest:
        raise
    except Exception as exc:
        raise BadRequest(f"the multipart body cannot be parsed: {exc}") from None
    files = []
    for part in parts:
        _, disp = parse_options_header(part["headers"].get(b"content-disposition", b""))
        if b"filename" in disp:
            files.append((disp.get(b"name", b""), b"".join(part["data"])))
    if not files:
        raise BadRequest("the multipart body has no file part; send the image in a file field named 'file'")
    return next((data for name, data in files if name == b"file"), files[0][1])


def image_body_kind(request: Request) -> str:
    """``raw`` or ``multipart`` for an image endpoint's body; UnsupportedMediaType otherwise."""
    ctype = _media_type(request)
    if ctype == "multipart/form-data":
        return "multipart"
    if ctype in ("", "application/octet-stream") or ctype.startswith("image/"):
        return "raw"
    raise UnsupportedMediaType(
        f"content type {ctype!r} is not accepted; send the image as the raw body ({', '.join(IMAGE_TYPES)} "
        "or application/octet-stream) or as multipart/form-data"
    )


async def read_image_bytes(request: Request, max_bytes: int) -> bytes:
    """The encoded image from a raw body (image/*, application/octet-stream) or a multipart upload.

    The multipart form is parsed in a worker thread when the app has a runtime pool (the event loop
    only moves bytes), else inline.
    """
    kind = image_body_kind(request)
    body = await read_body(request, max_bytes)
    if kind == "raw":
        return body
    ctype = request.headers.get("content-type", "")
    pool = getattr(getattr(request.app.state, "runtime", None), "pool", None)
    if pool is None:
        return multipart_file(body, ctype, max_bytes)
    return await asyncio.get_running_loop().run_in_executor(pool, multipart_file, body, ctype, max_bytes)
