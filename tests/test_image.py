"""Safe decoding: limits, bombs, corrupt input, and colour-mode normalisation to uint8 (H, W, C)."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from fencebox import image
from fencebox.errors import InputError
from fencebox.image import ImageLimits, ImageTooLarge, UnsupportedImage, decode, encode, probe, resize_to
from tests.images import encode_pil, png_claiming

RGB = (np.arange(12 * 16 * 3) * 7 % 256).astype(np.uint8).reshape(12, 16, 3)


def test_rgb_png_is_exact() -> None:
    out = decode(encode_pil(Image.fromarray(RGB), "PNG"))
    assert out.dtype == np.uint8 and out.shape == (12, 16, 3) and out.flags.c_contiguous
    assert np.array_equal(out, RGB)


def test_grayscale_stays_gray_or_is_expanded() -> None:
    gray = RGB[:, :, 0]
    data = encode_pil(Image.fromarray(gray), "PNG")
    assert decode(data).shape == (12, 16, 1)
    rgb = decode(data, channels=3)
    assert rgb.shape == (12, 16, 3) and all(np.array_equal(rgb[:, :, i], gray) for i in range(3))


def test_rgb_to_gray_uses_luma() -> None:
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 255
    out = decode(encode_pil(Image.fromarray(red), "PNG"), channels=1)
    assert out.shape == (4, 4, 1) and int(out[0, 0, 0]) == 76  # 0.299 * 255


def test_rgba_composited_on_background() -> None:
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red
    rgba[0, 1] = (255, 0, 0, 0)  # fully transparent
    rgba[1, 0] = (0, 0, 0, 128)  # half-transparent black
    data = encode_pil(Image.fromarray(rgba, "RGBA"), "PNG")
    white = decode(data)
    assert white.shape == (2, 2, 3)
    assert tuple(white[0, 0]) == (255, 0, 0) and tuple(white[0, 1]) == (255, 255, 255)
    assert abs(int(white[1, 0, 0]) - 127) <= 1
    black = decode(data, background=(0, 0, 0))
    assert tuple(black[0, 1]) == (0, 0, 0)


def test_gray_alpha_and_palette_with_transparency() -> None:
    la = Image.fromarray(np.stack([np.full((3, 3), 200, np.uint8), np.zeros((3, 3), np.uint8)], -1), "LA")
    assert np.all(decode(encode_pil(la, "PNG"), background=(10, 10, 10)) == 10)
    p = Image.new("P", (4, 4), 1)
    p.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    p.info["transparency"] = 0
    p.putpixel((0, 0), 0)
    out = decode(encode_pil(p, "PNG", transparency=0), background=(9, 9, 9))
    assert tuple(out[0, 0]) == (9, 9, 9) and tuple(out[1, 1]) == (0, 255, 0)


def test_palette_without_transparency_and_bilevel() -> None:
    pal = Image.fromarray(RGB).quantize(colors=16)
    assert decode(encode_pil(pal, "GIF")).shape == (12, 16, 3)
    bw = Image.fromarray((RGB[:, :, 0] > 128).astype(np.uint8) * 255).convert("1")
    out = decode(encode_pil(bw, "PNG"))
    assert out.shape == (12, 16, 1) and set(np.unique(out)) <= {0, 255}


def test_cmyk_jpeg_becomes_rgb() -> None:
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    out = decode(encode_pil(cmyk, "JPEG", quality=95))
    assert out.shape == (8, 8, 3)
    assert out[..., 0].mean() > 200 and out[..., 1].mean() < 60 and out[..., 2].mean() < 60


def test_16_bit_scaled_not_clipped() -> None:
    ramp = np.linspace(0, 65535, 64, dtype=np.uint16).reshape(8, 8)
    out = decode(encode_pil(Image.fromarray(ramp), "PNG"))
    assert out.shape == (8, 8, 1)
    assert int(out.min()) == 0 and int(out.max()) == 255
    assert np.array_equal(out[..., 0], np.rint(ramp / 257.0).astype(np.uint8))


def test_exif_orientation_applied() -> None:
    img = Image.fromarray(RGB)  # 16 wide, 12 high
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    out = decode(encode_pil(img, "JPEG", exif=exif, quality=95))
    assert out.shape == (16, 12, 3)


def test_animated_first_frame_or_refused() -> None:
    frames = [Image.new("L", (6, 6), v) for v in (10, 200, 90)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    data = buf.getvalue()
    assert probe(data).frames == 3
    out = decode(data)
    assert abs(int(out.mean()) - 10) <= 2
    with pytest.raises(UnsupportedImage, match="animated"):
        decode(data, ImageLimits(animated="refuse"))


def test_float_tiff_refused_clearly() -> None:
    f = Image.fromarray(np.ones((4, 4), np.float32))
    with pytest.raises(UnsupportedImage, match="floating-point"):
        decode(encode_pil(f, "TIFF"))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "TIFF"])
def test_supported_formats(fmt: str) -> None:
    out = decode(encode_pil(Image.fromarray(RGB), fmt))
    assert out.shape == (12, 16, 3)


def test_bomb_refused_before_decoding() -> None:
    data = png_claiming(30000, 30000)
    assert len(data) < 200
    t = time.perf_counter()
    with pytest.raises(ImageTooLarge, match=r"30000x30000|decompression bomb"):
        decode(data)
    with pytest.raises(ImageTooLarge, match="before decoding"):
        decode(png_claiming(5000, 5000))  # under PIL's own guard, over ours
    assert time.perf_counter() - t < 0.5
    with pytest.raises(ImageTooLarge, match="per side"):
        decode(png_claiming(20000, 1), ImageLimits(max_side=10000))


def test_limits_on_bytes() -> None:
    data = encode_pil(Image.fromarray(RGB), "PNG")
    with pytest.raises(ImageTooLarge, match="bytes"):
        decode(data, ImageLimits(max_bytes=len(data) - 1))


@pytest.mark.parametrize(
    ("data", "error", "words"),
    [
        (b"", InputError, "empty"),
        (b"hello, world" * 10, InputError, "not a recognisable image"),
        (encode_pil(Image.fromarray(RGB), "PNG")[:80], InputError, "truncated or corrupt"),
        (encode_pil(Image.fromarray(RGB), "JPEG")[:200], InputError, "truncated or corrupt"),
        (encode_pil(Image.new("RGB", (8, 8)), "ICO"), UnsupportedImage, "ICO is not supported"),
        (encode_pil(Image.new("RGB", (8, 8)), "PPM"), UnsupportedImage, "is not supported"),
    ],
)
def test_bad_bytes(data: bytes, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words):
        decode(data)


def test_unsupported_is_not_a_plain_bad_request() -> None:
    assert issubclass(UnsupportedImage, InputError) and issubclass(ImageTooLarge, InputError)
    with pytest.raises(InputError) as err:
        decode(b"garbage bytes here")
    assert not isinstance(err.value, UnsupportedImage | ImageTooLarge)


@pytest.mark.parametrize("fmt", ["png", "bmp", "tiff", "webp", "jpeg"])
def test_encode_round_trip(fmt: str) -> None:
    data, media = encode(RGB, fmt)
    assert media.startswith("image/")
    back = decode(data)
    if fmt in ("png", "bmp", "tiff"):
        assert np.array_equal(back, RGB)
    else:
        assert back.shape == RGB.shape
    gray, _ = encode(RGB[:, :, :1].copy(), fmt)
    assert decode(gray).shape[:2] == (12, 16)


def test_encode_refuses_bad_input() -> None:
    with pytest.raises(UnsupportedImage):
        encode(RGB, "gif")
    with pytest.raises(InputError):
        encode(RGB.astype(np.float32), "png")


def test_resize_to() -> None:
    assert resize_to(RGB, 12, 16) is RGB
    small = resize_to(RGB, 6, 8)
    assert small.shape == (6, 8, 3)
    assert resize_to(RGB[:, :, :1].copy(), 24, 32).shape == (24, 32, 1)


@given(
    st.integers(1, 24),
    st.integers(1, 24),
    st.sampled_from([1, 3]),
    st.integers(0, 2**32 - 1),
)
@settings(max_examples=20, deadline=None)
def test_png_round_trip_is_lossless(h: int, w: int, c: int, seed: int) -> None:
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)
    data, _ = image.encode(arr, "png")
    assert np.array_equal(decode(data), arr)


# ----- bounded decoding (issue 11) -------------------------------------------------------------


def test_truncated_jpeg_is_refused_not_filled_grey() -> None:
    full = encode_pil(Image.new("RGB", (800, 600), (90, 140, 200)), "JPEG", quality=90)
    assert decode(full).shape == (600, 800, 3)
    with pytest.raises(InputError, match="truncated"):
        decode(full[: len(full) // 2])


def test_jpeg_decoded_no_larger_than_the_target_needs() -> None:
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    photo = np.asarray(Image.fromarray(small).resize((1600, 1200), Image.Resampling.BILINEAR))
    data = encode_pil(Image.fromarray(photo), "JPEG", quality=95)
    fast = decode(data, target=(28, 28))
    assert min(fast.shape[:2]) >= 28 and fast.shape[0] * fast.shape[1] <= 1600 * 1200 // 64  # DCT-scaled 1/8
    reference = resize_to(decode(data), 28, 28).astype(int)
    diff = np.abs(resize_to(fast, 28, 28).astype(int) - reference)
    assert diff.mean() < 6 and diff.max() < 40  # the same picture (two-stage vs one-stage averaging)


@pytest.mark.parametrize("mode", ["RGBA", "L", "P", "RGB"])
def test_reduce_keeps_at_least_the_target(mode: str) -> None:
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (300, 400, 3), dtype=np.uint8)).convert(
        mode
    )
    out = decode(encode_pil(img, "PNG"), target=(28, 40))
    assert out.shape[0] >= 28 and out.shape[1] >= 40 and out.shape[0] < 300


def test_compositing_in_integers_is_the_exact_rounding() -> None:
    rgba = np.random.default_rng(2).integers(0, 256, (64, 64, 4), dtype=np.uint8)
    bg = (255, 17, 0)
    a = rgba[:, :, 3:4].astype(np.float64) / 255.0
    exact = np.floor(rgba[:, :, :3] * a + np.asarray(bg, np.float64) * (1.0 - a) + 0.5)
    assert np.abs(image.composite(rgba, bg).astype(int) - exact).max() <= 1  # float64 ties only
    assert np.array_equal(
        image.composite(rgba, bg), decode(encode_pil(Image.fromarray(rgba), "PNG"), background=bg)
    )


def test_many_frame_gif_costs_milliseconds_and_frames_are_capped() -> None:
    corpus_gif = b"GIF89a" + b"\x01\x00\x01\x00\x80\x00\x00" + b"\x00\x00\x00\xff\xff\xff"
    frame = (
        b"\x21\xf9\x04\x00\x01\x00\x00\x00"
        + b"\x2c\x00\x00\x00\x00\x01\x00\x01\x00\x00"
        + b"\x02\x02\x44\x01\x00"
    )
    data = corpus_gif + frame * 200_000 + b"\x3b"  # 4.6 MB, 200,000 frames
    t = time.process_time()
    with pytest.raises(ImageTooLarge, match="more than 100 frames"):
        decode(data)
    assert time.process_time() - t < 1.0  # counted up to the cap only (all frames: 2-4 s)
    few = corpus_gif + frame * 3 + b"\x3b"
    assert decode(few).shape == (1, 1, 3)
    with pytest.raises(UnsupportedImage, match="3 frames"):
        decode(few, ImageLimits(animated="refuse"))


def test_min_side_is_the_routes_smallest_image() -> None:
    tiny = encode_pil(Image.new("L", (2, 2)), "PNG")
    with pytest.raises(InputError, match="at least 3x3"):
        decode(tiny, ImageLimits(min_side=3))
    assert decode(tiny).shape == (2, 2, 1)


def test_bomb_over_pillows_own_limit_uses_the_limits_wording() -> None:
    with pytest.raises(ImageTooLarge, match=r"200000000 pixels; the limit is 1000 pixels"):
        decode(png_claiming(20000, 10000), ImageLimits(max_pixels=1000))


def test_large_transparent_png_reduced_in_strips_matches_a_whole_reduction() -> None:
    rgba = np.random.default_rng(3).integers(0, 256, (1000, 700, 4), dtype=np.uint8)
    data = encode_pil(Image.fromarray(rgba), "PNG")
    fast = decode(data, target=(28, 28))
    whole = decode(data)
    assert fast.shape[0] >= 56 and fast.shape[1] >= 56
    diff = np.abs(fast.astype(int) - resize_to(whole, fast.shape[0], fast.shape[1]).astype(int))
    assert diff.mean() < 3 and diff[-1].mean() < 6  # no black or missing last rows
