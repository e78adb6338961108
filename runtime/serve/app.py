"""The HTTP layer of ``btxrd-serve`` (Starlette): the page, and the API it uses.

- ``GET /``: the page (``static/``, package data; it fetches nothing from elsewhere).
- ``POST /api/classify``: multipart, one or more files; the document ``btxrd-run --json`` writes
  for the same files, plus ``views`` (each result's film and heatmap addresses) and ``errors``
  (one line per input that failed). 200 when every file was classified, 422 when one was not
  (the CLI's exit 1).
- ``GET /api/model``: what ``btxrd-run --info --json`` prints. ``GET /api/health``: status, limits,
  queue.
- ``GET /api/results/{id}/film.png``, ``.../heatmap/{class}.png`` (the layer the page's opacity
  slider fades), ``.../overlay/{class}.png`` (the overlay ``btxrd-run --cam`` draws);
  ``GET /api/scale.png``: the colour scale.
- ``POST /api/export?format=json|csv``: records sent back as the document or the CSV
  ``btxrd-run`` writes.

Every refusal is a 4xx (503 when busy) with ``{"error": "one line"}``; an unforeseen fault is a
500 with one line, never a traceback. Uploads wait for a place in a bounded queue before their
bodies are read, so memory stays bounded however many arrive at once.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from btxrd.runtime.serve import views as pictures
from btxrd.runtime.serve.exporting import export_document
from btxrd.runtime.serve.service import Service, Upload
from btxrd.runtime.settings import ServeSettings

log = logging.getLogger("btxrd.serve")

# A request waits this long for a place in the queue before it is told to come back (503).
ADMISSION_WAIT_SECONDS = 300.0
_KEY = re.compile(r"^[A-Za-z0-9_-]{16}$")
# The page fetches nothing from elsewhere; the browser is told so too.
_SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
        b"object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]
LOOPBACK_NAMES = ["127.0.0.1", "localhost", "::1", "[::1]"]


class UploadTooLarge(Exception):
    """The request body grew past ``serve.max_upload_mb``."""


def create_app(
    service: Service,
    settings: ServeSettings,
    *,
    info_document: dict[str, Any],
    allowed_hosts: list[str] | None = None,
) -> Starlette:
    """The ASGI app. ``allowed_hosts``: the Host headers answered (loopback names by default:
    a web page elsewhere cannot reach this server through DNS rebinding)."""
    state = _State(service, settings, info_document)
    api = [
        Route("/api/health", state.health),
        Route("/api/model", state.model),
        Route("/api/classify", state.classify, methods=["POST"]),
        Route("/api/export", state.export, methods=["POST"]),
        Route("/api/scale.png", state.scale),
        Route("/api/results/{key}/film.png", state.film),
        Route("/api/results/{key}/heatmap/{class_name}.png", state.heatmap),
        Route("/api/results/{key}/overlay/{class_name}.png", state.overlay),
    ]
    static = StaticFiles(directory=str(files("btxrd.runtime.serve") / "static"), html=True)
    app = Starlette(
        routes=[*api, Mount("/", app=static)],
        middleware=[
            Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts or LOOPBACK_NAMES),
            Middleware(_SecurityHeaders),
        ],
        exception_handlers={HTTPException: _http_error},
        lifespan=state.lifespan,
    )
    return app


def _answers(
    handler: Callable[[Any, Request], Awaitable[Response]],
) -> Callable[[Any, Request], Awaitable[Response]]:
    """A handler's unforeseen fault becomes a 500 with one line (the log gets the traceback
    only with --debug), never a traceback to the client."""

    @functools.wraps(handler)
    async def wrapped(self: Any, request: Request) -> Response:
        try:
            return await handler(self, request)
        except HTTPException:
            raise
        except Exception as exc:
            log.debug("internal error", exc_info=True)
            log.error(
                "internal error: %s: %s (rerun with --debug and report it)", type(exc).__name__, exc
            )
            return _error(500, f"internal error ({type(exc).__name__}); please report it")

    return wrapped


class _State:
    def __init__(self, service: Service, settings: ServeSettings, info: dict[str, Any]) -> None:
        self.service = service
        self.settings = settings
        self.info = info
        self.max_bytes = settings.max_upload_mb * 1024 * 1024
        self.admitted = 0
        self.most_admitted = 0  # the high-water mark: never above serve.queue_size
        self.waiting = 0
        self.answered = 0
        self._gate: anyio.Semaphore | None = None
        self._worker: anyio.CapacityLimiter | None = None

    @asynccontextmanager
    async def lifespan(self, app: Starlette):
        # Made inside the server's event loop, which they belong to.
        self._gate = anyio.Semaphore(self.settings.queue_size)
        self._worker = anyio.CapacityLimiter(1)
        yield

    @_answers
    async def health(self, request: Request) -> Response:
        identity = self.service.model_identity()
        return JSONResponse(
            {
                "status": "ok",
                "model": {k: identity[k] for k in ("file", "sha256", "class_names")},
                "overlay_alpha": self.service.alpha,
                "limits": {
                    "max_upload_mb": self.settings.max_upload_mb,
                    "max_files": self.settings.max_files,
                    "queue_size": self.settings.queue_size,
                },
                "queue": {
                    "admitted": self.admitted,
                    "waiting": self.waiting,
                    "most_admitted": self.most_admitted,
                },
                "answered": self.answered,
            }
        )

    @_answers
    async def model(self, request: Request) -> Response:
        return JSONResponse(self.info)

    @_answers
    async def scale(self, request: Request) -> Response:
        return _png(pictures.scale_png())

    @_answers
    async def classify(self, request: Request) -> Response:
        refusal = self._precheck(request)
        if refusal is not None:
            return refusal
        assert self._gate is not None and self._worker is not None
        self.waiting += 1
        try:
            with anyio.move_on_after(ADMISSION_WAIT_SECONDS) as waited:
                await self._gate.acquire()
        finally:
            self.waiting -= 1
        if waited.cancelled_caught:
            return _error(
                503,
                f"the server is busy ({self.settings.queue_size} requests in its queue); "
                "try again shortly",
                headers={"Retry-After": "10"},
            )
        self.admitted += 1
        self.most_admitted = max(self.most_admitted, self.admitted)
        try:
            return await self._classify_admitted(request)
        finally:
            self.admitted -= 1
            self._gate.release()
            self.answered += 1

    def _precheck(self, request: Request) -> Response | None:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "multipart/form-data":
            return _error(
                415,
                "send the images as multipart/form-data (a form with file fields), "
                f"not {kind or 'a body without a content type'}",
            )
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return _error(413, self._too_large(int(length)))
        return None

    def _too_large(self, size: int | None) -> str:
        said = f"{size:,} bytes" if size else "the upload"
        return (
            f"{said} exceeds the limit of {self.settings.max_upload_mb} MB per request "
            "(serve.max_upload_mb); send fewer or smaller files"
        )

    async def _classify_admitted(self, request: Request) -> Response:
        assert self._worker is not None
        limited = Request(request.scope, _limit(request.receive, self.max_bytes))
        try:
            form = await limited.form(max_files=self.settings.max_files, max_fields=8)
        except UploadTooLarge:
            return _error(413, self._too_large(None))
        except HTTPException as exc:  # malformed multipart, too many files
            return _error(400, f"upload refused: {exc.detail}")
        try:
            uploads = [
                Upload(value.filename or "", value.file)
                for _, value in form.multi_items()
                if isinstance(value, UploadFile)
            ]
            if not uploads:
                return _error(400, "no file in the upload; send images as form file fields")
            answer = await anyio.to_thread.run_sync(
                self.service.classify, uploads, limiter=self._worker
            )
        except OSError as exc:  # the server's temporary folder (full, unwritable), not the input
            return _error(
                503,
                f"the server cannot store the upload ({exc.strerror or exc}); free space in its "
                "temporary folder (TMPDIR) and try again",
            )
        finally:
            await form.close()
        return JSONResponse(answer.document, status_code=200 if answer.all_classified else 422)

    @_answers
    async def export(self, request: Request) -> Response:
        fmt = request.query_params.get("format", "json")
        if fmt not in ("json", "csv"):
            return _error(400, f"format={fmt!r}: choose json or csv")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.max_bytes:
                return _error(413, self._too_large(None))
        try:
            records = json.loads(body)["results"]
            text = export_document(records, self.service.classifier.info, fmt)
        except (ValueError, KeyError, TypeError, AttributeError, IndexError):
            return _error(400, 'not a btxrd results document ({"results": [records]})')
        kind = "text/csv; charset=utf-8" if fmt == "csv" else "application/json"
        disposition = f'attachment; filename="btxrd-results.{fmt}"'
        return Response(text, media_type=kind, headers={"Content-Disposition": disposition})

    def _view(self, request: Request):
        key = request.path_params["key"]
        view = self.service.views.get(key) if _KEY.match(key) else None
        if view is None:
            raise HTTPException(
                404, "no such result (the server keeps the last serve.kept_results); classify again"
            )
        class_name = request.path_params.get("class_name")
        if class_name is not None and class_name not in view.cams:
            raise HTTPException(404, f"no heatmap of class {class_name!r} for this result")
        return view, class_name

    @_answers
    async def film(self, request: Request) -> Response:
        view, _ = self._view(request)
        return _png(await anyio.to_thread.run_sync(pictures.film_png, view))

    @_answers
    async def heatmap(self, request: Request) -> Response:
        view, class_name = self._view(request)
        return _png(await anyio.to_thread.run_sync(pictures.layer_png, view, class_name))

    @_answers
    async def overlay(self, request: Request) -> Response:
        view, class_name = self._view(request)
        identity = self.service.model_identity()
        picture = await anyio.to_thread.run_sync(
            functools.partial(
                pictures.overlay_png,
                view,
                class_name,
                alpha=self.service.alpha,
                model_sha256=identity["sha256"],
                intended_use=identity["intended_use"],
            )
        )
        return _png(picture)


def _limit(receive: Receive, limit: int) -> Receive:
    """``receive`` that raises ``UploadTooLarge`` once the body passes ``limit`` bytes (a body
    sent in chunks has no Content-Length to check first)."""
    seen = 0

    async def limited() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise UploadTooLarge
        return message

    return limited


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404 and not request.url.path.startswith("/api/results/"):
        detail = f"{request.url.path}: not found"
    return _error(exc.status_code, detail, headers=exc.headers)


def _png(data: bytes) -> Response:
    return Response(data, media_type="image/png", headers={"Cache-Control": "no-store"})


class _SecurityHeaders:
    """Adds the content security policy and friends to every answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, sending)
