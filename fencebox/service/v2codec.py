"""Open Inference Protocol (KServe V2) REST messages, JSON and binary tensor data, both directions.

The binary extension: the body is a JSON header of ``Inference-Header-Content-Length`` bytes,
followed by the raw little-endian data of every tensor whose ``parameters.binary_data_size`` is
set, in order.  Used by the service's V2 endpoints and by the upstream backend.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

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


class V2FormatError(ValueError):
    """A V2 message does not follow the protocol (bad JSON, sizes, datatypes)."""


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
    return list(value)


def _tensor(entry: Any, key: str, binary: memoryview, offset: int) -> tuple[Tensor, int]:
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


def decode(body: bytes, header_length: str | None, key: str = "inputs") -> Message:
    """Decode a V2 request (``key='inputs'``) or response (``key='outputs'``) body."""
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
        header = json.loads(bytes(body[:hl]))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise V2FormatError(f"the request is not valid JSON: {exc}") from None
    except RecursionError:  # e.g. '[[[[...' thousands deep: a client error, not a server crash
        raise V2FormatError("the request's JSON is nested too deeply") from None
    if not isinstance(header, dict):
        raise V2FormatError("the V2 message must be a JSON object")
    entries = header.get(key)
    if not isinstance(entries, list) or not entries:
        raise V2FormatError(f"the V2 message needs a non-empty '{key}' list")
    binary = memoryview(body)[hl:]
    offset = 0
    tensors = []
    for entry in entries:
        t, offset = _tensor(entry, key, binary, offset)
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
    header = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    if not blobs:
        return header, {"content-type": "application/json"}
    return header + b"".join(blobs), {
        "content-type": "application/octet-stream",
        HEADER_LENGTH: str(len(header)),
    }
