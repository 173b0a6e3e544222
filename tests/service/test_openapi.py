"""Schemathesis against the service's own OpenAPI schema (bounded): no request may cause a 5xx."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.service.servers import serve, tiny_settings


@pytest.fixture(scope="module")
def live() -> Iterator[tuple[str, schemathesis.BaseSchema]]:
    cfg = tiny_settings(allow_chain_override=True, limits={"max_body_bytes": 100_000, "max_pixels": 250_000})
    with serve(cfg) as s:
        yield s.url, schemathesis.openapi.from_url(s.url + "/openapi.json")


def test_no_server_errors_on_any_operation(live: tuple[str, schemathesis.BaseSchema]) -> None:
    url, schema = live
    seen: dict[str, set[int]] = {}
    failures: list[str] = []
    counter = [0]
    operations = [r.ok() for r in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 10

    for op in operations:

        @given(case=op.as_strategy())
        @settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def run(case: schemathesis.Case) -> None:
            counter[0] += 1
            if case.path_parameters and counter[0] % 2:  # half the time, name the real model
                case.path_parameters["name"] = "tiny"
            response = case.call(base_url=url, timeout=30)
            label = case.operation.label
            seen.setdefault(label, set()).add(response.status_code)
            if response.status_code >= 500 or not response.headers.get("content-type"):
                failures.append(f"{label}: {response.status_code} {response.text[:200]}")

        run()
    assert not failures, failures
    assert 400 in seen["POST /v2/models/{name}/infer"]  # reached the real model's validation
    assert any(400 <= c < 500 for codes in seen.values() for c in codes)  # bad input really was sent
