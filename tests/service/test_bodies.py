"""Reading image bodies: the multipart form is parsed from bytes (in the worker pool), picking the
``file`` field among other parts, and malformed forms are 400."""

from __future__ import annotations

import pytest

from fencebox.service.bodies import multipart_file
from fencebox.service.errors import BadRequest

CTYPE = "multipart/form-data; boundary=b0"


def _form(*parts: tuple[str, str | None, bytes]) -> bytes:
    out = b""
    for name, filename, data in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--b0\r\nContent-Disposition: {disp}\r\n\r\n".encode() + data + b"\r\n"
    return out + b"--b0--\r\n"


def test_the_file_field_is_chosen_among_parts() -> None:
    body = _form(("note", None, b"hi"), ("other", "o.png", b"OTHER"), ("file", "x.png", b"\x89PNG-data\r\n-"))
    assert multipart_file(body, CTYPE, 1 << 20) == b"\x89PNG-data\r\n-"
    assert multipart_file(_form(("upload", "u.png", b"U")), CTYPE, 1 << 20) == b"U"  # else the first file


@pytest.mark.parametrize(
    ("body", "ctype", "words"),
    [
        (_form(("note", None, b"hi")), CTYPE, "no file part"),
        (b"--b0\r\nbroken", CTYPE, "no file part"),
        (_form(("file", "x", b"1")), "multipart/form-data", "no boundary"),
        (_form(*[(f"f{i}", "x", b"1") for i in range(9)]), CTYPE, "more than 8 parts"),
    ],
)
def test_malformed_forms_are_400(body: bytes, ctype: str, words: str) -> None:
    with pytest.raises(BadRequest, match=words):
        multipart_file(body, ctype, 1 << 20)
