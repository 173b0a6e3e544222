"""Open Inference Protocol (KServe V2) REST messages, JSON and binary tensor data, both directions.

The binary extension: the body is a JSON header of ``Inference-Header-Content-Length`` bytes,
followed by the raw little-endian data of every tensor whose ``parameters.binary_data_size`` is
set, in order.  Used by the service's V2 endpoints and by the upstream backend.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from fencebox.errors import FenceboxError

MAX_DIM = 2**31 - 1
"""Largest dimension a shape may have (larger ones are refused, never reshaped)."""
MAX_ELEMENTS = 2**40
"""Largest element count a shape may describe."""

HEADER_LENGTH = "inference-header-content-length"

DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}


class V2FormatError(FenceboxError):
    """A V2 message does not follow the protocol (bad JSON, sizes, datatypes)."""


@dataclass(frozen=True)
class Expect:
    """What a receiver accepts, checked from each tensor's header before its data is converted.

    ``shape`` uses -1 for the batch dimension, which must lie in [1, ``max_batch``].  Picklable, so
    a worker process can apply it.  Messages name what was expected (``describe``).
    """

    name: str
    shape: tuple[int, ...]
    datatypes: tuple[str, ...]
    max_batch: int
    describe: str = ""

    def check(self, name: str, datatype: Any, shape: list[int]) -> None:
        """Raise V2FormatError unless one tensor ``name`` of an accepted datatype and shape is described."""
        hint = f"; {self.describe}" if self.describe else ""
        if name != self.name:
            raise V2FormatError(f"got inputs {[name]}{hint}")
        if datatype not in self.datatypes:
            raise V2FormatError(f"input '{name}' has datatype {datatype}{hint}")
        fixed = [d for d in self.shape if d >= 0]
        ok = len(shape) == len(self.shape) and all(
            want < 0 or got == want for want, got in zip(self.shape, shape, strict=True)
        )
        if not ok or not fixed:
            raise V2FormatError(f"input '{name}' has shape {shape}{hint}")
        batch = math.prod(got for want, got in zip(self.shape, shape, strict=True) if want < 0)
        if batch < 1:
            raise V2FormatError(f"input '{name}' has shape {shape} (no images){hint}")
        if batch > self.max_batch:
            raise V2FormatError(
                f"{batch} images in one request; this route accepts at most {self.max_batch}{hint}"
            )

    def max_bytes(self, json_headroom: float = 6.0) -> int:
        """Largest body this receiver can need: ``max_batch`` tensors of the widest datatype, as JSON text.

        JSON spends up to ``json_headroom`` characters per value ("255," is 4, "0.123456," 9 for
        FP32 written short); plus 64 KiB for the header fields.
        """
        values = self.max_batch * math.prod(d for d in self.shape if d >= 0)
        widest = max(DTYPES[d].itemsize for d in self.datatypes)
        per_value = max(float(widest), json_headroom * (2.0 if widest >= 4 else 1.0))
        return int(values * per_value) + 65536


@dataclass
class Tensor:
    """A named tensor of a V2 message."""

    name: str
    datatype: str
    shape: list[int]
    data: np.ndarray
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class Message:
    """A decoded V2 request or response: tensors, requested outputs and parameters."""

    tensors: list[Tensor]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    header: dict[str, Any] = field(default_factory=dict)


def _shape(value: Any, where: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in value):
        raise V2FormatError(f"{where}: 'shape' must be a list of integers, got {value!r}")
    if any(d < 0 for d in value):
        raise V2FormatError(f"{where}: 'shape' must not have negative dimensions, got {value}")
    if len(value) > 16 or any(d > MAX_DIM for d in value) or math.prod(value) > MAX_ELEMENTS:
        raise V2FormatError(
            f"{where}: 'shape' {value} is too large (at most 16 dimensions of at most {MAX_DIM}, "
            f"{MAX_ELEMENTS} elements)"
        )
    return list(value)


def _tensor(
    entry: Any, key: str, binary: memoryview, offset: int, expect: Expect | None = None
) -> tuple[Tensor, int]:
    if not isinstance(entry, dict):
        raise V2FormatError(f"each of '{key}' must be an object with name, datatype, shape and data")
    name = entry.get("name")
    if not isinstance(name, str):
        raise V2FormatError(f"each of '{key}' needs a string 'name'")
    where = f"{key[:-1]} '{name}'"
    datatype = entry.get("datatype")
    if datatype not in DTYPES:
        raise V2FormatError(
            f"{where}: datatype {datatype!r} is not supported; use one of {', '.join(DTYPES)}"
        )
    shape = _shape(entry.get("shape"), where)
    if expect is not None:
        expect.check(name, datatype, shape)
    count = math.prod(shape)
    dtype = DTYPES[datatype]
    params = entry.get("parameters") or {}
    if not isinstance(params, dict):
        raise V2FormatError(f"{where}: 'parameters' must be an object")
    size = params.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size < 0:
            raise V2FormatError(f"{where}: binary_data_size must be a non-negative integer")
        if offset + size > len(binary):
            raise V2FormatError(f"{where}: binary_data_size {size} runs past the end of the body")
        if size != count * dtype.itemsize:
            raise V2FormatError(
                f"{where}: binary_data_size is {size} bytes but shape {shape} of {datatype} needs "
                f"{count * dtype.itemsize}"
            )
        arr = np.frombuffer(binary[offset : offset + size], dtype=dtype)
        offset += size
    else:
        data = entry.get("data")
        if data is None:
            raise V2FormatError(f"{where}: no 'data' and no binary_data_size")
        # flat (count values) or nested (shape[0] rows): anything else is refused before converting
        top = len(data) if isinstance(data, list) else -1
        if top not in (count, shape[0] if shape else 1):
            raise V2FormatError(
                f"{where}: 'data' has {top} top-level entries but shape {shape} needs {count}"
            )
        arr = _json_values(data, dtype, datatype, where)
        if arr.size != count:
            raise V2FormatError(f"{where}: 'data' has {arr.size} values but shape {shape} needs {count}")
    return Tensor(name, datatype, shape, arr.reshape(shape), dict(params)), offset


_ACCEPTED_KINDS = {"u": "iu", "i": "iu", "f": "iufU", "b": "b"}  # floats may come as strings ("NaN")


def _json_values(data: Any, dtype: np.dtype[Any], datatype: str, where: str) -> np.ndarray:
    """JSON 'data' as a flat array of ``dtype``, refusing values the type cannot hold (no silent casts)."""
    bad = V2FormatError(f"{where}: 'data' is not a (nested) list of {datatype} values")
    try:
        raw = np.asarray(data)
    except (ValueError, TypeError, OverflowError):
        raise bad from None
    if raw.size:
        if raw.dtype.kind not in _ACCEPTED_KINDS.get(dtype.kind, dtype.kind):
            raise bad
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            if raw.min() < info.min or raw.max() > info.max:
                raise V2FormatError(f"{where}: {datatype} values must lie in [{info.min}, {info.max}]")
    try:
        return raw.astype(dtype).reshape(-1)
    except (ValueError, TypeError, OverflowError):
        raise bad from None


def decode(
    body: bytes, header_length: str | None, key: str = "inputs", expect: Expect | None = None
) -> Message:
    """Decode a V2 request (``key='inputs'``) or response (``key='outputs'``) body.

    With ``expect``, the message must hold exactly one tensor it accepts, checked before its data
    is converted (a wrong shape costs the JSON parse, never the conversion).
    """
    if header_length is not None:
        try:
            hl = int(header_length)
        except ValueError:
            raise V2FormatError(
                f"Inference-Header-Content-Length must be an integer, got {header_length!r}"
            ) from None
        if hl < 0 or hl > len(body):
            raise V2FormatError(
                f"Inference-Header-Content-Length {hl} does not fit the {len(body)}-byte body"
            )
    else:
        hl = len(body)
    try:
        header = orjson.loads(memoryview(body)[:hl])
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc):  # '[[[[...' over 1024 deep: a client error, never a server crash
            raise V2FormatError("the request's JSON is nested too deeply (over 1024 levels)") from None
        raise V2FormatError(f"the request is not valid JSON: {exc}") from None
    except RecursionError:
        raise V2FormatError("the request's JSON is nested too deeply") from None
    if not isinstance(header, dict):
        raise V2FormatError("the V2 message must be a JSON object")
    entries = header.get(key)
    if not isinstance(entries, list) or not entries:
        raise V2FormatError(f"the V2 message needs a non-empty '{key}' list")
    if expect is not None and len(entries) != 1:
        names = [e.get("name") if isinstance(e, dict) else None for e in entries]
        hint = f"; {expect.describe}" if expect.describe else ""
        raise V2FormatError(f"got {len(entries)} inputs {names}{hint}")
    binary = memoryview(body)[hl:]
    offset = 0
    tensors = []
    for entry in entries:
        t, offset = _tensor(entry, key, binary, offset, expect)
        tensors.append(t)
    params = header.get("parameters") or {}
    outputs = header.get("outputs") or []
    if not isinstance(params, dict) or not isinstance(outputs, list):
        raise V2FormatError("'parameters' must be an object and 'outputs' a list")
    rid = header.get("id")
    return Message(tensors, rid if isinstance(rid, str) else None, params, outputs, header)


def encode(
    tensors: list[Tensor], binary: bool | set[str], head: dict[str, Any], key: str = "outputs"
) -> tuple[bytes, dict[str, str]]:
    """Encode tensors into a V2 body; ``binary`` is True/False for all, or the set of names sent binary.

    Returns (body, extra headers).  ``head`` holds the other top-level fields (model_name, id, ...).
    """
    entries = []
    blobs = []
    for t in tensors:
        entry: dict[str, Any] = {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
        params = dict(t.parameters)
        as_binary = binary if isinstance(binary, bool) else t.name in binary
        if as_binary:
            blob = np.ascontiguousarray(t.data, dtype=DTYPES[t.datatype]).tobytes()
            params["binary_data_size"] = len(blob)
            blobs.append(blob)
        else:
            entry["data"] = t.data.reshape(-1).tolist()
        if params:
            entry["parameters"] = params
        entries.append(entry)
    doc = {**head, key: entries}
    header = orjson.dumps(doc)
    if not blobs:
        return header, {"content-type": "application/json"}
    return header + b"".join(blobs), {
        "content-type": "application/octet-stream",
        HEADER_LENGTH: str(len(header)),
    }


def worker_ready() -> bool:
    """A no-op for warming a parse worker process up (importing this module is its start-up cost)."""
    return True


def decode_images(body: bytes, header_length: str | None, expect: Expect) -> tuple[Message, np.ndarray]:
    """Decode a V2 request holding one image tensor ``expect`` accepts -> (message, uint8 NHWC batch).

    UINT8 data is taken as is; FP32 must hold finite values in [0, 1] and is rounded to uint8.
    The message's tensor keeps its header fields but not its data (the batch is returned once).
    A plain function of plain data, so a worker process can run it for large bodies.
    """
    msg = decode(body, header_length, key="inputs", expect=expect)
    t = msg.tensors[0]
    hint = f"; {expect.describe}" if expect.describe else ""
    if t.datatype == "UINT8":
        batch = np.array(t.data, dtype=np.uint8, order="C", copy=True)  # writable: torch refuses read-only
    else:
        x = t.data.astype(np.float32, copy=False)
        if x.size and (not np.all(np.isfinite(x)) or float(x.min()) < 0.0 or float(x.max()) > 1.0):
            raise V2FormatError(f"FP32 input '{t.name}' must hold finite values in [0, 1]{hint}")
        batch = np.ascontiguousarray(np.rint(x * np.float32(255.0)).astype(np.uint8))
    t.data = np.empty((0,), np.uint8)
    return msg, batch
