"""Write the attack corpus of issue 11: one file per attack class the service must survive (4xx, never 5xx).

    python scripts/make_attack_corpus.py OUT_DIR

Each entry is (endpoint, body, headers): the body as the attacker sends it and where to send it.
``corpus()`` is imported by tests/service (seeds for the fuzz suite) and by the benchmarks.
Classes: event-loop bodies (huge nested V2 JSON), tiny-file-huge-cost images (all-zero 4096^2 RGBA
PNG, JPEG header claiming 4000x4000, many-frame GIF, 12 Mpx photo), bombs over Pillow's own limit,
multi-frame GIF/TIFF with a corrupt later frame, V2 shapes with overflowing dimensions, unbounded
chain overrides, tiny images (1x1, 2x2), truncated images.
"""

from __future__ import annotations

import io
import json
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

Entry = tuple[str, bytes, dict[str, str]]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def png_claiming(width: int, height: int, color_type: int = 0) -> bytes:
    """A tiny PNG whose header claims width x height (8-bit, gray or RGBA), with almost no data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + _png_chunk(b"IEND", b"")
    )


def zero_rgba_png(side: int = 4096) -> bytes:
    """An all-zero RGBA PNG of side x side: ~65 KB on the wire, 64 MB decoded (issue 11, class 2)."""
    row = b"\x00" + b"\x00" * (4 * side)
    comp = zlib.compressobj(9)
    data = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", data)
        + _png_chunk(b"IEND", b"")
    )


def encode(img: Image.Image, fmt: str, **save: object) -> bytes:
    """Encode a PIL image with Pillow."""
    buf = io.BytesIO()
    img.save(buf, fmt, **save)
    return buf.getvalue()


def photo(width: int = 4000, height: int = 3000, seed: int = 0) -> np.ndarray:
    """A smooth-with-noise RGB test photo (uint8 HxWx3), cheap to make at 12 Mpx."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 50 + 1, width // 50 + 1, 3), dtype=np.uint8)
    big = np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR))
    return np.clip(big.astype(np.int16) + rng.integers(-8, 9, big.shape, dtype=np.int16), 0, 255).astype(
        np.uint8
    )


def jpeg_header_claiming(width: int = 4000, height: int = 3000) -> bytes:
    """A ~3 KB JPEG cut short: a header claiming width x height and almost no scan data."""
    full = encode(Image.new("RGB", (width, height), (90, 140, 200)), "JPEG", quality=90)
    return full[:3000]


def many_frame_gif(frames: int = 400_000) -> bytes:
    """A ~9 MB GIF of ``frames`` one-pixel frames (issue 11: counting 450,000 frames took 2-4 s)."""
    head = b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    loop = b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"
    frame = (
        b"\x21\xf9\x04\x00\x01\x00\x00\x00"
        + b"\x2c"
        + struct.pack("<HHHHB", 0, 0, 1, 1, 0)
        + b"\x02\x02\x44\x01\x00"
    )
    return head + loop + frame * frames + b"\x3b"


def corrupt_later_frame(fmt: str) -> bytes:
    """A two-frame GIF or TIFF whose second frame is cut and overwritten with garbage."""
    a = Image.fromarray(np.full((16, 16), 10, np.uint8)).convert("P" if fmt == "GIF" else "L")
    b = Image.fromarray(np.full((16, 16), 200, np.uint8)).convert("P" if fmt == "GIF" else "L")
    data = bytearray(encode(a, fmt, save_all=True, append_images=[b]))
    cut = len(data) * 3 // 4
    data[cut:] = b"\xff\x00\x13" * ((len(data) - cut) // 3 + 1)
    return bytes(data)


def v2_json(shape: list[int], data: object, datatype: str = "UINT8") -> bytes:
    """A V2 JSON request with one input (shape and data as given, unchecked)."""
    return json.dumps(
        {"inputs": [{"name": "input", "datatype": datatype, "shape": shape, "data": data}]}
    ).encode()


def nested_v2_body(megabytes: float = 10.0) -> bytes:
    """A ~10 MB V2 JSON body of nested ``[0]`` lists with a wrong shape (issue 11, class 1)."""
    count = int(megabytes * 1e6 / 4)
    return (
        b'{"inputs":[{"name":"input","datatype":"UINT8","shape":[1,28,28,1],"data":['
        + b",".join([b"[0]"] * count)
        + b"]}]}"
    )


def corpus(big: bool = True) -> dict[str, Entry]:
    """Every attack class, by name; ``big=False`` leaves out the multi-megabyte ones (for fast tests)."""
    png_ct = {"content-type": "image/png"}
    jpg_ct = {"content-type": "image/jpeg"}
    js = {"content-type": "application/json"}
    c: dict[str, Entry] = {
        "zero_rgba_4096.png-predict": ("/v1/predict", zero_rgba_png(), png_ct),
        "jpeg_header_4000x3000.jpg-predict": ("/v1/predict", jpeg_header_claiming(), jpg_ct),
        "bomb_30000x30000.png-predict": ("/v1/predict", png_claiming(30000, 30000), png_ct),
        "bomb_over_pillow_limit.png-predict": ("/v1/predict", png_claiming(20000, 10000), png_ct),
        "gif_corrupt_frame2.gif-predict": (
            "/v1/predict",
            corrupt_later_frame("GIF"),
            {"content-type": "image/gif"},
        ),
        "tiff_corrupt_frame2.tiff-predict": (
            "/v1/predict",
            corrupt_later_frame("TIFF"),
            {"content-type": "image/tiff"},
        ),
        "tiny_1x1.png-purify": ("/v1/purify", encode(Image.new("L", (1, 1)), "PNG"), png_ct),
        "tiny_1x1.png-predict": ("/v1/predict", encode(Image.new("L", (1, 1)), "PNG"), png_ct),
        "tiny_2x2.png-purify": ("/v1/purify", encode(Image.new("L", (2, 2)), "PNG"), png_ct),
        "v2_shape_zero_overflow.json": ("/v2/models/{model}/infer", v2_json([0, 10**30], []), js),
        "v2_shape_huge.json": ("/v2/models/{model}/infer", v2_json([10**6, 10**6, 10**6, 1], [0]), js),
        "v2_shape_negative.json": ("/v2/models/{model}/infer", v2_json([1, -28, 28, 1], [0]), js),
        "override_resize_pad_16384.txt": (
            "/v1/predict?chain=" + "resize_pad(min_scale=8,max_scale=8,out_size=16384)",
            encode(Image.new("L", (28, 28)), "PNG"),
            png_ct,
        ),
        "override_tv_min_100000.txt": (
            "/v1/predict?chain=" + "tv_min(iterations=100000)",
            encode(Image.new("L", (28, 28)), "PNG"),
            png_ct,
        ),
    }
    if big:
        c["photo_12mpx.jpg-predict"] = (
            "/v1/predict",
            encode(Image.fromarray(photo()), "JPEG", quality=90),
            jpg_ct,
        )
        c["gif_400000_frames.gif-predict"] = ("/v1/predict", many_frame_gif(), {"content-type": "image/gif"})
        c["v2_nested_10mb.json"] = ("/v2/models/{model}/infer", nested_v2_body(), js)
    return c


def main(argv: list[str]) -> int:
    """Write every corpus entry as a file, plus index.json (endpoint and headers per file)."""
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    index = {}
    for name, (endpoint, body, headers) in corpus().items():
        (out / name).write_bytes(body)
        index[name] = {"endpoint": endpoint, "headers": headers, "bytes": len(body)}
    (out / "index.json").write_text(json.dumps(index, indent=1))
    print(f"wrote {len(index)} files to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
