"""The browser pages (``/ui`` playground, ``/ui/reports``) and the API calls they make.

Two routers:

- ``pages``: the static HTML/CSS/JS and the bundled sample images, shipped inside the package and
  served by name from a fixed list (no file-system paths from the URL).  They carry no data, so they
  load without an API key; the page asks for the key and sends it on every API call.
- ``router``: ``POST /v1/chains/validate``, ``GET /v1/chains/presets``, ``GET /v1/reports[/{name}]``,
  ``GET /v1/reports/{name}/examples``; every one needs an API key when keys are configured (a router
  dependency, so no endpoint can forget it).

``POST /v1/purify?stages=true`` (the playground's main call) is answered by :func:`purify_stages`,
which the ``/v1/purify`` endpoint delegates to.
"""

from __future__ import annotations

import base64
import functools
import re
from importlib import resources
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from fencebox import image
from fencebox.chain import Chain
from fencebox.errors import InputError, SpecError
from fencebox.presets import list_presets, preset_info
from fencebox.service import dataplane
from fencebox.service.common import ERROR_RESPONSES, read_within, runtime_of, server_timing
from fencebox.service.errors import BadRequest, Forbidden, NotFound, PayloadTooLarge
from fencebox.service.policy import rest_answers
from fencebox.service.reports import ReportNotFound, ReportStore
from fencebox.service.runtime import Route
from fencebox.service.stages import Stage, heatmap, parse_spec, run_stages
from fencebox.spec import load_chain
from fencebox.transforms.base import Transform

UI_PACKAGE = "fencebox.service"
UI_FOLDER = "ui"
SAMPLES_PACKAGE = "fencebox"
SAMPLES_FOLDER = "samples"
MEDIA = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
}
PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    # Everything the pages need comes from this server; images arrive as data: URLs.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
    "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
}

EMPTY_CHAIN = Chain([])


@functools.cache
def _files(package: str, folder: str) -> dict[str, tuple[bytes, str]]:
    """Every servable file of a package folder: name -> (content, media type), read once."""
    out: dict[str, tuple[bytes, str]] = {}
    for entry in resources.files(package).joinpath(folder).iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        if entry.is_file() and suffix in MEDIA:
            out[entry.name] = (entry.read_bytes(), MEDIA[suffix])
    return out


def _serve(package: str, folder: str, name: str) -> Response:
    found = _files(package, folder).get(name)
    if found is None:
        raise NotFound(f"no such file: {name!r}")
    return Response(found[0], media_type=found[1], headers=PAGE_HEADERS)


def sample_names() -> list[str]:
    """The bundled sample images (``fencebox/samples``), offered by the playground."""
    return sorted(_files(SAMPLES_PACKAGE, SAMPLES_FOLDER))


# ----- pages: no key (they hold no data) ----------------------------------------------------------

pages = APIRouter(include_in_schema=False)


@pages.get("/")
async def root() -> RedirectResponse:
    """The service's front door is the playground."""
    return RedirectResponse("/ui", status_code=307)


@pages.get("/ui")
async def playground() -> Response:
    """The playground page."""
    return _serve(UI_PACKAGE, UI_FOLDER, "index.html")


@pages.get("/ui/reports")
async def reports_page() -> Response:
    """The report viewer page."""
    return _serve(UI_PACKAGE, UI_FOLDER, "reports.html")


@pages.get("/ui/static/{name}")
async def static(name: str) -> Response:
    """A stylesheet or script of the pages, by name from the shipped list."""
    return _serve(UI_PACKAGE, UI_FOLDER, name)


@pages.get("/ui/samples")
async def samples() -> dict[str, list[str]]:
    """The names of the bundled sample images."""
    return {"samples": sample_names()}


@pages.get("/ui/samples/{name}")
async def sample(name: str) -> Response:
    """A bundled sample image, by name from the shipped list."""
    return _serve(SAMPLES_PACKAGE, SAMPLES_FOLDER, name)


# ----- API calls of the pages: a key when keys are configured --------------------------------------


def require_key(request: Request) -> str:
    """Authenticate with the service's guard (the same check every API route makes); return the identity."""
    return runtime_of(request).guard.identify(request)


router = APIRouter(dependencies=[Depends(require_key)], responses=ERROR_RESPONSES)


class ValidateRequest(BaseModel):
    """A chain spec to check, optionally against a route (whose model input size it must fit)."""

    spec: str = Field(max_length=2000, description="a preset name or a compact chain spec")
    model: str | None = Field(default=None, max_length=200, description="route whose input it must fit")


_POSITION = re.compile(r"at position (\d+)")


@router.post("/v1/chains/validate", summary="Check a chain spec; answer its normalised form or the error")
async def validate(request: Request, body: ValidateRequest) -> dict[str, Any]:
    """``{"valid": true, "spec", "stages", "randomized"}`` or ``{"valid": false, "error", "position"}``.

    A bad spec is an expected answer here (the page checks as the user types), so it is a 200 with
    ``valid: false``; ``position`` is the character the error points at, or null.
    """
    try:
        chain = parse_spec(body.spec)
        if body.model is not None:
            h, w, c = runtime_of(request).route(body.model).backend.input_shape
            chain.output_shape((1, h, w, c))
    except (SpecError, InputError) as exc:
        m = _POSITION.search(str(exc))
        return {"valid": False, "error": str(exc), "position": int(m.group(1)) if m else None}
    stages = list(chain) if isinstance(chain, Chain) else [chain]
    return {
        "valid": True,
        "spec": str(chain),
        "stages": [str(t) for t in stages],
        "randomized": chain.randomized,
    }


@router.get("/v1/chains/presets", summary="The shipped presets: name, description, chain")
async def presets() -> dict[str, Any]:
    """Every preset with its description and chain, for the playground's list."""
    out = []
    for name in list_presets():
        info = preset_info(name)
        out.append({"name": name, "description": info.get("description", ""), "chain": str(load_chain(name))})
    return {"presets": out}


def _store(request: Request) -> ReportStore:
    return ReportStore(runtime_of(request).settings.reports_dir)


@router.get("/v1/reports", summary="Names of the reports in the configured reports_dir")
async def list_reports(request: Request) -> dict[str, Any]:
    """The names ``/v1/reports/{name}`` accepts (empty when no reports_dir is configured)."""
    store = _store(request)
    return {"configured": store.folder is not None, "reports": store.names()}


@router.get("/v1/reports/{name}", summary="One report.json by name")
async def get_report(request: Request, name: str) -> Response:
    """The report's JSON, read from reports_dir by name (404 for any name the folder does not list)."""
    try:
        data = await runtime_of(request).run(_store(request).load, name)
    except ReportNotFound as exc:
        raise NotFound(str(exc)) from None
    return Response(data, media_type="application/json")


@router.get("/v1/reports/{name}/examples", summary="A report's saved adversarial examples")
async def get_examples(request: Request, name: str) -> dict[str, Any]:
    """Clean / adversarial / purified images with their predictions; an empty list when none were saved."""
    try:
        return await runtime_of(request).run(_store(request).examples, name)
    except ReportNotFound as exc:
        raise NotFound(str(exc)) from None


# ----- POST /v1/purify?stages=true -----------------------------------------------------------------


def _b64png(img: np.ndarray) -> str:
    return base64.b64encode(image.encode(img, "png")[0]).decode()


def _picture(img: np.ndarray) -> dict[str, Any]:
    h, w, c = img.shape
    return {"image": _b64png(img), "width": w, "height": h, "channels": c}


def _check_sizes(route: Route, stages: list[Stage]) -> None:
    """Refuse (413) stage images larger than the route accepts as input, before encoding any of them."""
    limit = route.config.limits.max_pixels
    for s in stages:
        _, h, w, _ = s.image.shape
        if h * w > limit:
            raise PayloadTooLarge(
                f"stage {s.transform.name} outputs {w}x{h} pixels, more than this route's max_pixels ({limit})"
            )


def _stages_answer(
    route: Route, data: bytes, chain: Transform, seed: int | None
) -> tuple[dict[str, Any], np.ndarray]:
    """Decode and fit the image exactly as /v1/predict does, run the stages, encode everything (in the pool)."""
    original, t_dec, _ = route.prepare(data, EMPTY_CHAIN)
    n, h, w, c = original.shape
    route.check_cost(chain, (n, h, w, c))  # the route's cost limits, before any stage runs
    stages = run_stages(chain, original, seed)
    _check_sizes(route, stages)
    final = route.purify_batch(stages[-1].image if stages else original, EMPTY_CHAIN)
    heat, peak = heatmap(original[0], final[0])
    body: dict[str, Any] = {
        "model": route.name,
        "chain": str(chain),
        "seed": seed,
        "randomized": chain.randomized,
        "original": _picture(original[0]),
        "stages": [
            {
                "name": s.transform.name,
                "spec": str(s.transform),
                "seconds": s.seconds,
                "drawn": s.drawn,
                **_picture(s.image[0]),
            }
            for s in stages
        ],
        "purified": _picture(final[0]),
        "heatmap": {**_picture(heat), "max_difference": peak},
        "timing": {"decode": t_dec, "chain": sum(s.seconds for s in stages)},
    }
    size = sum(
        len(p["image"]) for p in (body["original"], body["purified"], body["heatmap"], *body["stages"])
    )
    limit = route.config.limits.max_body_bytes
    if size > limit:
        raise PayloadTooLarge(f"the stage images take {size} bytes, more than this route's limit of {limit}")
    return body, final


async def purify_stages(
    request: Request, model: str | None, chain: str | None, seed: int | None
) -> JSONResponse:
    """Every stage's image and time, the difference heat-map, and the model's answer on the final image.

    Admission is /v1/predict's: key, route, chain override, seed (only where the route allows
    overrides: a client-chosen seed makes a randomised defence deterministic), the in-flight limit,
    one query charged, the body within the route's limits and read timeout.  The work runs in the
    data plane (timed, under the deadline, cancelled on the 504); the answer passes through the
    route's output policy.
    """
    rt = runtime_of(request)
    who = rt.guard.identify(request)
    route = rt.route(model)
    chosen = route.chain_for(chain)
    if seed is not None and not route.config.allow_chain_override:
        raise Forbidden(
            f"route '{route.name}' does not accept a seed: it draws fresh randomness for every request "
            "(allow_chain_override: false)"
        )
    with dataplane.admitted(route) as ctx:
        rt.guard.charge(who)
        data = await read_within(request, route, route.config.limits.max_body_bytes, image_body=True)
        try:
            body, out = await dataplane.classify_after(
                rt, ctx, "stages", _stages_answer, route, data, chosen, seed
            )
        finally:
            server_timing(request, ctx)
    body["timing"].update(queue=ctx.timings.get("queue", 0.0), model=ctx.timings.get("model", 0.0))
    b = route.backend
    body["answer"] = rest_answers(out, b.outputs, b.class_names, route.config.policy, route.config.topk)[0]
    body["policy"] = route.config.policy
    return JSONResponse(body, headers={"X-Fencebox-Chain": str(chosen)})


def seed_query() -> Any:
    """The ``seed`` query parameter of ``/v1/purify`` (with ``stages=true``, on routes allowing overrides)."""
    return Query(
        None,
        ge=0,
        le=2**63 - 1,
        description="with stages=true, on routes that allow chain overrides only: seed the chain's randomness",
    )


def refuse_seed_without_stages(seed: int | None) -> None:
    """A seed only makes sense with stages=true (plain /v1/purify always draws fresh randomness)."""
    if seed is not None:
        raise BadRequest("'seed' is accepted only with stages=true")
