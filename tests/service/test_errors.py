"""The service's errors are project errors, and the classification of what a client sees."""

from __future__ import annotations

from fencebox.errors import Cancelled, ConfigError, FenceboxError
from fencebox.service import v2codec
from fencebox.service.errors import BadRequest, GatewayTimeout, ServiceError, classify, error_response


def test_every_service_error_is_a_fencebox_error() -> None:
    assert issubclass(ServiceError, FenceboxError) and issubclass(v2codec.V2FormatError, FenceboxError)


def test_cancelled_work_is_a_504_and_config_mistakes_a_400() -> None:
    assert isinstance(classify(Cancelled("late")), GatewayTimeout)
    assert isinstance(classify(ConfigError("bad")), BadRequest)


def test_only_a_bugs_500_closes_the_connection() -> None:
    bug = error_response(classify(RuntimeError("boom")))
    assert bug.status_code == 500 and bug.headers["connection"] == "close"
    assert b"boom" not in bug.body  # the client is told nothing of the bug itself
    timeout = error_response(GatewayTimeout("slow"))
    assert timeout.status_code == 504 and "connection" not in timeout.headers
