"""Fuzzing the running app: mutations of real seed images and V2 messages (JSON and binary) must never
get a 5xx or hang.  Hypothesis draws the seeds of each batch of mutations; every case goes through the
whole app (routing, auth, body limits, decoding, V2 parsing, chain, model) in-process over a real ASGI
client, and a smaller set goes over a real uvicorn socket (keep-alive included).

Size: ``FUZZ_EXAMPLES`` x ``BATCH`` cases (200 x 100 = 20,000 by default; about a minute on two
loaded cores); set FENCEBOX_FUZZ_EXAMPLES to run more or fewer.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from typing import Any
from urllib.parse import urlencode

import httpx
from fastapi import FastAPI
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from fencebox.service.settings import Settings
from tests.service.helpers import (
    asgi_request,
    image_seeds,
    in_process,
    load_corpus_module,
    route,
    v2_seeds,
)
from tests.service.servers import serve

BATCH = 100
FUZZ_EXAMPLES = int(os.environ.get("FENCEBOX_FUZZ_EXAMPLES", "200"))
CASE_TIMEOUT_S = 20.0  # a hang, not a slow case: the slowest legitimate case takes milliseconds

IMAGES = image_seeds()
V2 = v2_seeds()
SMALL_ATTACKS = {k: v for k, v in load_corpus_module().corpus(big=False).items() if "override" not in k}
INTERESTING = [0, 1, 0x7F, 0x80, 0xFF]
INTERESTING_INTS = [0, 1, -1, 2**31, 2**32 + 1, 2**63, 10**30, -(2**63)]
SHAPES: list[Any] = [
    [0, 10**30],
    [0],
    [],
    [1, 28, 28],
    [1, 28, 28, 1, 1],
    [2**31, 28, 28, 1],
    [0, 28, 28, 1],
    [9, 28, 28, 1],
    [1, -28, 28, 1],
    [1.5, 28, 28, 1],
    [True, 28, 28, 1],
    "1,28,28,1",
    None,
    [10**6, 10**6, 10**6, 1],
]
DATATYPES = ["UINT8", "FP32", "INT64", "FP16", "BOOL", "BYTES", "uint8", "", None, 7]


def fuzz_settings() -> Settings:
    """Two routes of the tiny model: 'tiny' (fixed chain) and 'open' (cheap overrides allowed)."""
    lim = {"max_in_flight": 10_000, "max_images": 8, "max_chain_cost": 1e7, "max_body_bytes": 1 << 20}
    batching = {"max_queue": 100_000}
    return Settings(
        routes=[
            route(limits=lim, batching=batching),
            route(name="open", allow_chain_override=True, limits=lim, batching=batching),
        ],
        threads=2,
    )


def mutate_bytes(data: bytes, rnd: random.Random, pool: list[bytes]) -> bytes:
    """One to four byte-level mutations: flips, interesting bytes, truncation, insertion, deletion,
    duplication, splicing with another seed, big integers written over the header."""
    b = bytearray(data)
    for _ in range(rnd.randint(1, 4)):
        op = rnd.randrange(8)
        n = len(b)
        if n == 0:
            b += bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 8)))
            continue
        i = rnd.randrange(n)
        if op == 0:
            b[i] ^= 1 << rnd.randrange(8)
        elif op == 1:
            b[i] = rnd.choice(INTERESTING)
        elif op == 2:
            del b[rnd.randrange(n) :]
        elif op == 3:
            b[i:i] = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 16)))
        elif op == 4:
            del b[i : i + rnd.randint(1, 64)]
        elif op == 5:
            j = rnd.randrange(n)
            b[i:i] = b[j : j + rnd.randint(1, 256)]
        elif op == 6:
            other = rnd.choice(pool)
            b = b[:i] + bytearray(other[rnd.randrange(len(other)) :])
        else:  # a large big-endian or little-endian integer over a header field
            k = min(i, 64)
            value = rnd.choice([0xFFFFFFFF, 0x7FFFFFFF, 0x10000, 0xFFFF, 0])
            b[k : k + 4] = value.to_bytes(4, rnd.choice(["big", "little"]))
    return bytes(b)


def mutate_v2(rnd: random.Random) -> tuple[bytes, dict[str, str]]:
    """A structural mutation of a seed V2 message (shape, datatype, data, sizes, header length), then
    sometimes a byte-level one."""
    name = rnd.choice(list(V2))
    body, headers = V2[name]
    headers = dict(headers)
    hl = int(headers.get("inference-header-content-length", len(body)))
    doc = json.loads(body[:hl])
    blob = body[hl:]
    entry = doc["inputs"][0]
    for _ in range(rnd.randint(1, 3)):
        op = rnd.randrange(10)
        if op == 0:
            entry["shape"] = rnd.choice(SHAPES)
        elif op == 1:
            entry["datatype"] = rnd.choice(DATATYPES)
        elif op == 2 and "data" in entry:
            entry["data"] = rnd.choice(
                [[], [[0]] * 784, ["NaN"] * 784, [10**30], [0.5] * 1568, None, {"a": 1}, [-1] * 1568, "x"]
            )
        elif op == 3:
            entry.setdefault("parameters", {})["binary_data_size"] = rnd.choice(INTERESTING_INTS)
        elif op == 4:
            headers["inference-header-content-length"] = str(rnd.choice([*INTERESTING_INTS, hl - 1, hl + 1]))
        elif op == 5:
            entry["name"] = rnd.choice(["image", "", None, 5, "input" * 1000])
        elif op == 6:
            doc["outputs"] = rnd.choice(
                [[{"name": "scores"}], [{}], "x", [{"name": "label", "parameters": 3}]]
            )
        elif op == 7:
            doc["inputs"] = rnd.choice([[], {}, [entry, entry], None, [1]])
        elif op == 8:
            doc["parameters"] = rnd.choice([None, [], {"binary_data_output": "yes"}, 5])
        else:
            blob = blob[: rnd.randrange(len(blob) + 1)]
    try:
        text = json.dumps(doc).encode()
    except (TypeError, ValueError):
        text = body[:hl]
    if "inference-header-content-length" in headers and headers["inference-header-content-length"] == str(hl):
        headers["inference-header-content-length"] = str(len(text))
    out = text + blob
    if rnd.random() < 0.3:
        out = mutate_bytes(out, rnd, [b for b, _ in V2.values()])
    return out, headers


def make_case(rnd: random.Random) -> tuple[str, str, bytes, dict[str, str]]:
    """One fuzz case: (method, url, body, headers)."""
    kind = rnd.random()
    if kind < 0.45:
        seed = rnd.choice(list(IMAGES.values()))
        url = rnd.choice(["/v1/predict", "/v1/purify", "/v1/predict?model=open", "/v1/purify?format=jpeg"])
        body = mutate_bytes(seed, rnd, list(IMAGES.values()))
        if rnd.random() < 0.2:  # as a multipart upload, the form itself sometimes mutated too
            form = (
                b'--b0\r\nContent-Disposition: form-data; name="note"\r\n\r\nhi\r\n'
                b'--b0\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n'
                b"Content-Type: image/png\r\n\r\n" + body + b"\r\n--b0--\r\n"
            )
            if rnd.random() < 0.5:
                form = mutate_bytes(form, rnd, [form])
            return "POST", url, form, {"content-type": "multipart/form-data; boundary=b0"}
        ctype = rnd.choice(["image/png", "application/octet-stream", "image/jpeg", ""])
        return "POST", url, body, {"content-type": ctype} if ctype else {}
    if kind < 0.55:
        endpoint, body, headers = rnd.choice(list(SMALL_ATTACKS.values()))
        return "POST", endpoint.replace("{model}", "tiny"), mutate_bytes(body, rnd, [body]), headers
    if kind < 0.6:
        seed = rnd.choice(list(IMAGES.values()))
        spec = mutate_bytes(b"bit_depth(bits=3) | median(size=3)", rnd, [b"jpeg(quality=50)"])
        chain = spec.decode("latin-1")
        return "POST", "/v1/predict", seed, {"content-type": "image/png"} | {"x-chain": chain}
    body, headers = mutate_v2(rnd)
    return "POST", "/v2/models/tiny/infer", body, headers


Case = tuple[str, str, bytes, dict[str, str]]


def resolve(case: Case) -> Case:
    """The case as sent: a fuzzed chain override goes into the query string of the 'open' route."""
    method, url, body, headers = case
    headers = dict(headers)
    if "x-chain" in headers:
        url = "/v1/predict?" + urlencode({"model": "open", "chain": headers.pop("x-chain")})
    return method, url, body, headers


async def send(app: FastAPI, case: Case) -> int:
    """The status the app answers to one case (-1: it hung)."""
    method, url, body, headers = resolve(case)
    try:
        status, _, _ = await asyncio.wait_for(asgi_request(app, method, url, body, headers), CASE_TIMEOUT_S)
    except TimeoutError:
        return -1
    return status


async def send_all(app: FastAPI, cases: list[Case]) -> list[int]:
    """Send a batch of cases concurrently; their statuses in order."""
    return list(await asyncio.gather(*(send(app, case) for case in cases)))


def test_fuzzed_requests_never_get_5xx_or_hang() -> None:
    seen: dict[int, int] = {}

    # hypothesis drives a synchronous test: run the app's lifespan on a loop we keep stepping
    loop = asyncio.new_event_loop()
    started = asyncio.Event()
    done = asyncio.Event()

    async def keep_app() -> None:
        async with in_process(fuzz_settings()) as (app, _):
            holder.append(app)
            started.set()
            await done.wait()

    holder: list[FastAPI] = []
    task = loop.create_task(keep_app())
    loop.run_until_complete(started.wait())
    app = holder[0]

    @settings(
        max_examples=FUZZ_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(st.integers(0, 2**63))
    def batch(seed: int) -> None:
        rnd = random.Random(seed)
        cases = [make_case(rnd) for _ in range(BATCH)]
        statuses = loop.run_until_complete(send_all(app, cases))
        for code, case in zip(statuses, cases, strict=True):
            seen[code] = seen.get(code, 0) + 1
            if not 0 < code < 500:
                note(f"seed {seed}: {case[1]} headers {case[3]} body {case[2][:300]!r}")
            assert 0 < code < 500, f"{case[1]} answered {code}"

    try:
        batch()
    finally:
        done.set()
        loop.run_until_complete(task)
        loop.close()
    total = sum(seen.values())
    assert total >= FUZZ_EXAMPLES * BATCH
    assert seen.get(200, 0) > 0 and sum(v for k, v in seen.items() if 400 <= k < 500) > 0  # both kinds hit


def test_fuzzed_requests_over_a_real_socket_keep_the_connection_usable() -> None:
    """A smaller set over uvicorn on loopback, on one keep-alive connection: no 5xx, and after every
    answer the same connection serves a valid request (a 500 used to drop it)."""
    rnd = random.Random(11)
    good = IMAGES["png_gray"]
    with serve(fuzz_settings()) as s, httpx.Client(base_url=s.url, timeout=CASE_TIMEOUT_S) as c:
        for _ in range(300):
            method, url, body, headers = resolve(make_case(rnd))
            r = c.request(method, url, content=body, headers=headers)
            assert r.status_code < 500, (url, r.status_code, r.text)
            assert c.post("/v1/predict", content=good).status_code == 200
