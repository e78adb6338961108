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
- ``POST /api/clear``: forget every kept result (the page's Clear button).
- ``POST /api/samples``: the shipped sample radiographs, classified (its "Try the samples").

POSTs from another site are refused (403: ``Origin`` and ``Sec-Fetch-Site`` must say this
server); another method on a POST route is a 405. An admitted body that stops or trickles is cut
off (408), so a slow client cannot hold a place in the queue.

Every refusal is a 4xx (503 when busy) with ``{"error": "one line"}``; an unforeseen fault is a
500 with one line, never a traceback. Uploads wait for a place in a bounded queue before their
bodies are read, so memory stays bounded however many arrive at once.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import Any
from urllib.parse import urlsplit

import anyio
from starlette import formparsers
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from btxrd.runtime.decode.formats import installed_formats
from btxrd.runtime.serve import views as pictures
from btxrd.runtime.serve.exporting import export_document
from btxrd.runtime.serve.service import Service, Upload
from btxrd.runtime.settings import ServeSettings

log = logging.getLogger("btxrd.serve")


def _keep_name_bytes(src: bytes | bytearray, codec: str) -> str:
    """Multipart names: Starlette reads a name that is not UTF-8 as Latin-1, which turns its
    bytes into other, real characters (mojibake no record could tell from a genuine name). Kept
    instead as the bytes they are (lone surrogates, as ``os.fsdecode`` keeps a file name), so
    the record escapes and flags them as ``btxrd-run`` does for a file on disk."""
    try:
        return bytes(src).decode(codec)
    except (UnicodeDecodeError, LookupError):
        return bytes(src).decode("utf-8", "surrogateescape")


formparsers._user_safe_decode = _keep_name_bytes  # Starlette's own fallback, Latin-1

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


_POST_ROUTES = ("/api/classify", "/api/export", "/api/clear", "/api/samples")
_NOT_POST = ["GET", "HEAD", "PUT", "PATCH", "DELETE"]


class UploadTooLarge(Exception):
    """The request body grew past ``serve.max_upload_mb``."""


class BodyTooSlow(Exception):
    """The request body stopped, or came slower than ``serve.min_body_kb_per_s``."""


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
        Route("/api/clear", state.clear, methods=["POST"]),
        Route("/api/samples", state.samples, methods=["POST"]),
        # Without these, another method on a POST route would fall through to the page's files.
        *(Route(path, _post_only, methods=_NOT_POST) for path in _POST_ROUTES),
        Route("/api/scale.png", state.scale),
        Route("/api/results/{key}/film.png", state.film),
        Route("/api/results/{key}/heatmap/{class_name}.png", state.heatmap),
        Route("/api/results/{key}/overlay/{class_name}.png", state.overlay),
    ]
    static = StaticFiles(directory=str(files("btxrd.runtime.serve") / "static"), html=True)
    app = Starlette(
        routes=[*api, Mount("/", app=static)],
        middleware=[
            Middleware(_SecurityHeaders),  # outermost: on every answer, refusals included
            Middleware(_TrustedHost, allowed_hosts=allowed_hosts or LOOPBACK_NAMES),
            Middleware(_SameOrigin),
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
        except ClientDisconnect:
            # Nobody is left to answer; worth a line (a proxy's timeout looks like this too),
            # but not an internal error.
            path = request.url.path
            log.info("%s %s: the client hung up before its answer", request.method, path)
            return _error(400, "the client hung up")
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
        # What the page's file chooser offers: the runtime's list, DICOM only with pydicom.
        self.formats = {name: list(suffixes) for name, suffixes in installed_formats().items()}
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
                "formats": self.formats,
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
        async with self._admitted() as admitted:
            if not admitted:
                return self._busy()
            return await self._classify_admitted(request)

    @asynccontextmanager
    async def _admitted(self) -> AsyncIterator[bool]:
        """A place in the queue (True), or False after ``ADMISSION_WAIT_SECONDS``. A request's
        body is read only once it holds a place, so the queue bounds memory."""
        assert self._gate is not None
        self.waiting += 1
        try:
            with anyio.move_on_after(ADMISSION_WAIT_SECONDS) as waited:
                await self._gate.acquire()
        finally:
            self.waiting -= 1
        if waited.cancelled_caught:
            yield False
            return
        self.admitted += 1
        self.most_admitted = max(self.most_admitted, self.admitted)
        try:
            yield True
        finally:
            self.admitted -= 1
            self._gate.release()
            self.answered += 1

    def _busy(self) -> Response:
        return _error(
            503,
            f"the server is busy ({self.settings.queue_size} requests in its queue); "
            "try again shortly",
            headers={"Retry-After": "10"},
        )

    def _body(self, request: Request) -> Request:
        """``request`` whose body is read within the size limit and the time limits."""
        receive = _guarded(
            request.receive,
            limit=self.max_bytes,
            idle=float(self.settings.body_timeout_s),
            min_rate=self.settings.min_body_kb_per_s * 1024.0,
        )
        return Request(request.scope, receive)

    def _too_slow(self) -> Response:
        return _error(
            408,
            f"the upload stopped or came too slowly (no byte for {self.settings.body_timeout_s} s, "
            f"or under {self.settings.min_body_kb_per_s} KB/s); send it again",
        )

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
        try:
            form = await self._body(request).form(max_files=self.settings.max_files, max_fields=8)
        except UploadTooLarge:
            return _error(413, self._too_large(None))
        except BodyTooSlow:
            return self._too_slow()
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
        async with self._admitted() as admitted:
            if not admitted:
                return self._busy()
            chunks = []
            try:
                async for chunk in self._body(request).stream():
                    chunks.append(chunk)  # joined once: linear in the body's size
            except UploadTooLarge:
                return _error(413, self._too_large(None))
            except BodyTooSlow:
                return self._too_slow()
            info = self.service.classifier.info
            # Parsing a large body takes a while: off the event loop, so other requests go on.
            text = await anyio.to_thread.run_sync(_export_text, b"".join(chunks), info, fmt)
        if text is None:
            return _error(400, 'not a btxrd results document ({"results": [records]})')
        kind = "text/csv; charset=utf-8" if fmt == "csv" else "application/json"
        disposition = f'attachment; filename="btxrd-results.{fmt}"'
        return Response(text, media_type=kind, headers={"Content-Disposition": disposition})

    @_answers
    async def samples(self, request: Request) -> Response:
        """The shipped sample radiographs, classified as if uploaded (the page's "Try the
        samples" button); the same answer as ``/api/classify``."""
        assert self._worker is not None
        async with self._admitted() as admitted:
            if not admitted:
                return self._busy()
            answer = await anyio.to_thread.run_sync(
                self.service.classify_samples, limiter=self._worker
            )
        return JSONResponse(answer.document, status_code=200 if answer.all_classified else 422)

    @_answers
    async def clear(self, request: Request) -> Response:
        """Forget every kept result (the page's Clear button): their pictures are freed."""
        forgotten = self.service.views.clear()
        return JSONResponse({"cleared": forgotten})

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


def _export_text(body: bytes, info: Any, fmt: str) -> str | None:
    """The export of ``body`` (a results document), or None when it is not one. A body nested
    deeper than the parser's recursion limit is not one either (RecursionError)."""
    try:
        return export_document(json.loads(body)["results"], info, fmt)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError):
        return None


def _guarded(receive: Receive, *, limit: int, idle: float, min_rate: float) -> Receive:
    """``receive`` for a request body: ``UploadTooLarge`` once it passes ``limit`` bytes (a
    chunked body has no Content-Length to check first), ``BodyTooSlow`` when no byte comes for
    ``idle`` seconds or, after those first ``idle`` seconds, the body falls below ``min_rate``
    bytes a second on average (a client trickling a byte every few seconds)."""
    started = time.monotonic()
    seen = 0

    async def guarded() -> Message:
        nonlocal seen
        now = time.monotonic()
        wait = idle
        if min_rate > 0:  # the moment the bytes so far stop keeping up with the floor
            wait = min(wait, started + idle + seen / min_rate - now)
        if wait <= 0:
            raise BodyTooSlow
        try:
            with anyio.fail_after(wait):
                message = await receive()
        except TimeoutError:
            raise BodyTooSlow from None
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise UploadTooLarge
        return message

    return guarded


async def _post_only(request: Request) -> Response:
    return _error(405, f"{request.url.path}: send a POST request", headers={"Allow": "POST"})


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


class _TrustedHost:
    """Answers only requests whose Host header is a name of this server (DNS rebinding: a page
    elsewhere reaching a loopback server under its own name); the refusal is JSON like every
    other, with the security headers."""

    def __init__(self, app: ASGIApp, allowed_hosts: list[str]) -> None:
        self.app = app
        self.allowed = {name.lower() for name in allowed_hosts}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or "*" in self.allowed:
            await self.app(scope, receive, send)
            return
        host = _header(scope, b"host")
        if _host_name(host) in self.allowed:
            await self.app(scope, receive, send)
            return
        shown = host or "(none)"
        answer = _error(
            400, f"Host {shown}: not a name of this server; open it as http://127.0.0.1:PORT/"
        )
        await answer(scope, receive, send)


class _SameOrigin:
    """State-changing requests only from this server's own page: a form or script on another
    site (which a browser would send with this machine's access) is refused with 403. Tools
    that send no ``Origin`` and no ``Sec-Fetch-Site`` (curl, scripts) are not browsers on
    another site and pass."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        site = _header(scope, b"sec-fetch-site")
        origin = _header(scope, b"origin")
        host = _header(scope, b"host")
        cross = site not in (None, "same-origin", "none") or (
            origin is not None and (origin == "null" or urlsplit(origin).netloc.lower() != host)
        )
        if cross:
            said = origin or site
            answer = _error(
                403,
                f"cross-site request refused (from {said}); use the page this server serves",
            )
            await answer(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1").strip().lower()
    return None


def _host_name(host: str | None) -> str:
    """The name part of a Host header: ``[::1]:8000`` -> ``[::1]``, ``localhost:80`` ->
    ``localhost``."""
    if not host:
        return ""
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.split(":")[0]


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
