"""The admission gate: a request for a route at its in-flight limit is refused at the door.

The endpoints admit requests themselves (:func:`fencebox.service.dataplane.admitted`), after the
API key, the route and the chain override, and before the budget and the body.  Under overload
most requests are such refusals, and going through routing, dependency injection and the
exception handlers made each one cost about as much CPU as a third of a served request.  This
pure-ASGI layer answers those requests first, in the endpoint's order of checks: a missing or wrong
key gets the endpoint's 401 (the key is checked here, once), an unknown route passes on to the
endpoint's 404, and only then does a full route get its 503 + Retry-After.  It never refuses what
the endpoint would not; everything else, and every request with a chain override (whose 400/403
comes before admission), passes through unchanged.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from fencebox.service.errors import ServiceError, error_response
from fencebox.service.metrics import ENDPOINT_KEY
from fencebox.service.runtime import Route, Runtime

V1_PATHS = frozenset({"/v1/predict", "/v1/purify"})
"""The REST endpoints that admit requests (their route: the ``model`` query parameter)."""


def _v1_route_name(scope: Scope) -> tuple[bool, str | None]:
    """(gated, route name) of a REST request: not gated when it overrides the chain or asks for stages."""
    qs: bytes = scope.get("query_string", b"")
    if not qs:
        return True, None
    params = parse_qs(qs.decode("latin-1"))
    if "chain" in params or "stages" in params:
        return False, None
    names = params.get("model")
    return True, names[0] if names else None


def _v2_route_name(path: str) -> str | None:
    """The model name of ``/v2/models/{name}/infer``; None for any other path."""
    parts = path.split("/")
    return parts[3] if len(parts) == 5 and parts[4] == "infer" and parts[3] else None


class AdmissionGate:
    """Pure ASGI middleware: 503 + Retry-After, before routing, for a route at its in-flight limit."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse at once when the request's route is full; otherwise hand the request on unchanged."""
        if scope["type"] == "http" and scope["method"] == "POST":
            refusal = self._refusal(scope)
            if refusal is not None:  # the same JSON answer (and error metric) every endpoint gives
                await error_response(refusal, Request(scope))(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope) -> ServiceError | None:
        """The error the endpoint would answer first when this request's route is full (401 or 503); else None."""
        path: str = scope["path"]
        if path in V1_PATHS:
            gated, name = _v1_route_name(scope)
            endpoint = path
        elif path.startswith("/v2/models/"):
            name = _v2_route_name(path)
            gated, endpoint = name is not None, "/v2/models/{name}/infer"
        else:
            return None
        if not gated:
            return None
        runtime: Runtime | None = getattr(scope["app"].state, "runtime", None)
        if runtime is None:
            return None
        route: Route | None = runtime.routes.get(name or runtime.settings.default.name)
        if route is None or not route.admission.full:
            return None
        scope[ENDPOINT_KEY] = endpoint
        try:
            runtime.guard.identify(Request(scope))
        except ServiceError as err:  # the key comes before admission: the endpoint's own 401
            return err
        return route.admission.overloaded()
