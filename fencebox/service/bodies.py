"""Reading request bodies within limits: raw image bodies, multipart uploads, the size cap (413)."""

from __future__ import annotations

from typing import Any

from starlette.datastructures import UploadFile
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


async def read_image_bytes(request: Request, max_bytes: int) -> bytes:
    """The encoded image from a raw body (image/*, application/octet-stream) or a multipart upload."""
    ctype = _media_type(request)
    if ctype == "multipart/form-data":
        await read_body(request, max_bytes)
        try:
            form = await request.form(max_files=1, max_fields=8, max_part_size=max_bytes)
        except Exception as exc:
            raise BadRequest(f"the multipart body cannot be parsed: {getattr(exc, 'detail', exc)}") from None
        files = [v for v in form.values() if isinstance(v, UploadFile)]
        if not files:
            raise BadRequest(
                "the multipart body has no file part; send the image in a file field named 'file'"
            )
        upload = form.get("file")
        chosen = upload if isinstance(upload, UploadFile) else files[0]
        data = await chosen.read()
        await form.close()
        return data
    if ctype in ("", "application/octet-stream") or ctype.startswith("image/"):
        return await read_body(request, max_bytes)
    raise UnsupportedMediaType(
        f"content type {ctype!r} is not accepted; send the image as the raw body ({', '.join(IMAGE_TYPES)} "
        "or application/octet-stream) or as multipart/form-data"
    )
