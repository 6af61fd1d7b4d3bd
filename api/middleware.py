"""What wraps every request: security headers, what is exposed, a size limit, idempotent
retries, the access log and metrics.

Pure ASGI middleware (no BaseHTTPMiddleware). The checks every request passes are one layer,
:class:`Gateway`: each layer is a coroutine a request goes through (and resumes through at
every wait) and most wrapped ``send``, which cost as much as some of the checks themselves.
"""

from __future__ import annotations

import asyncio
import hmac
import threading
import time
import uuid
from typing import Any
from urllib.parse import parse_qsl

import orjson
import psycopg
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.in_flight import InFlight
from api.metrics import Metrics
from api.problems import PROBLEM_JSON
from api.read_headers import read_source_headers
from api.schemas import CONTROL_CHARACTERS, MAX_BODY_BYTES
from application.database_away import RETRY_AFTER
from application.runtime import Runtime
from domain.group_commit import RECEIPTS
from infra.idempotency import LEASE, MAX_KEY_LENGTH, Applied, Claimed, Replay, request_digest
from infra.key_claims import frees_key
from infra.logging import get_logger

_log = get_logger("trialledger.access")
# What a lost database connection raises (a pool's wait for one too: PoolTimeout).
DATABASE_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError)


def _problem(status: int, title: str, detail: str, **extra: Any) -> tuple[int, bytes]:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return status, orjson.dumps(body)


async def _send_body(send: Send, status: int, body: bytes, content_type: str = PROBLEM_JSON,
                     headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type.encode()),
                            (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class Gateway:
    """Every request's outer checks and marks, in one layer, in this order (the order of
    the middlewares they once were, outermost first):

    - the security headers (:data:`SECURITY_HEADERS`, or :data:`PAGE_SECURITY_HEADERS` on
      the console's pages and /docs) on every answer, replacing a route's own;
    - the access log: every request gets an id (``X-Request-ID`` in, or a new one; out on
      every answer) and a log line naming request id, person, client, route, status and
      latency, and counts in the metrics;
    - what is exposed: ``/openapi.json``, ``/docs`` and ``/metrics`` only as the settings
      allow (404 otherwise, as if absent): the schema and its page when docs are exposed;
      the metrics to a bearer of the metrics token, or to anyone when they are open (see
      :class:`infra.settings.Settings`);
    - the body limit: a body over :data:`MAX_BODY_BYTES` is refused (413) before the app
      reads any of it; the body is buffered in the scope's state;
    - the URL's text: a path or query parameter holding control characters is refused (422
      naming it): no identifier or filter holds them, and PostgreSQL text cannot hold NUL;
    - the database: while it is known to be away
      (:class:`application.database_away.DatabaseAway`), 503 with Retry-After at once,
      instead of letting each request wait out the connection timeouts; every few seconds
      one request probes, and passes once it is back. ``/healthz`` (the process answers)
      always passes. Costs one attribute read otherwise.

    It also puts the headers naming the server a read came from
    (:func:`api.read_headers.read_source_headers`) on the answers of routes that read.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, runtime: Runtime,
                 limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.metrics = metrics
        self.settings = runtime.settings
        self.away = runtime.database_away
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        headers = dict(scope["headers"])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if 0 < len(given) <= 200 else str(uuid.uuid4())
        state["request_id"] = request_id
        path = scope["path"]
        marks = ((b"x-request-id", request_id.encode()),
                 *(PAGE_SECURITY_HEADERS if path == "/ui" or path.startswith(PAGE_PATHS)
                   else SECURITY_HEADERS))
        started = time.perf_counter()
        status = 500
        sent: int | None = None  # the status line that went out, if any
        ended = False

        async def send_marked(message: Message) -> None:
            nonlocal sent, ended
            if message["type"] == "http.response.start":
                sent = message["status"]
                given = [*message.get("headers", []), *read_source_headers(state)]
                message["headers"] = [*(h for h in given if h[0].lower() not in _SET_HERE),
                                      *marks]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                ended = True
            await send(message)

        aborted = False
        try:
            await self._checked(scope, receive, send_marked, headers)
        except BaseException as e:
            # The status went out but the body never ended (a stream that failed part-way, or
            # a client that left): not the success the status line claimed.
            aborted = sent is not None and not ended
            if aborted:
                status = 499 if isinstance(e, ClientDisconnect) else 500
            raise
        finally:
            if sent is not None and not aborted:
                status = sent
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            route_path = getattr(route, "path", None) or "unmatched"
            self.metrics.answered(scope["method"], route_path, status, elapsed)
            self.metrics.figures.refresh(self.metrics.runtime.pools)
            extra = {"aborted": True, "sent_status": sent} if aborted else {}
            _log.info("request", request_id=request_id, person=state.get("person"),
                      client=state.get("client"), method=scope["method"], route=route_path,
                      status=status, latency_ms=round(elapsed * 1000, 2), **extra)

    async def _checked(self, scope: Scope, receive: Receive, send: Send,
                       headers: dict[bytes, bytes]) -> None:
        """What is exposed, the body limit, the URL's text, the database; then the app."""
        if not self._allowed(scope, headers):
            await _send_body(send, *_problem(404, "Not found", "Not Found"))
            return
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await _send_body(send, *self._too_large())
            return
        # Chunked bodies declare no length: buffer them up to the limit.
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            body.extend(message.get("body", b""))
            more = message.get("more_body", False)
            if len(body) > self.limit:
                await _send_body(send, *self._too_large())
                return
        scope["state"]["body"] = bytes(body)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        query = scope.get("query_string", b"").decode("latin-1")
        # Undecodable bytes become lone surrogates, which the pattern refuses as well.
        pairs = parse_qsl(query, keep_blank_values=True, errors="surrogateescape")
        bad = [name for name, value in [("path", scope["path"]), *pairs]
               if CONTROL_CHARACTERS.search(name) or CONTROL_CHARACTERS.search(value)]
        if bad:
            await _send_body(send, *_problem(
                422, "Invalid input", "control characters in the URL",
                errors=[{"field": CONTROL_CHARACTERS.sub("?", name),
                         "message": "must not contain control characters"} for name in bad]))
            return
        if (self.away.latched and scope["path"] != "/healthz"
                and await run_in_threadpool(self.away.away)):
            await _send_body(send, *_problem(
                503, "Service unavailable", "the database is not reachable; nothing was "
                "stored, retry later"), headers=[(b"retry-after", str(RETRY_AFTER).encode())])
            return
        await self.app(scope, replay, send)

    def _too_large(self) -> tuple[int, bytes]:
        return _problem(413, "Payload too large",
                        f"a request body may have at most {self.limit} bytes",
                        errors=[{"field": "body", "message": "too large"}])

    def _allowed(self, scope: Scope, headers: dict[bytes, bytes]) -> bool:
        path = scope["path"]
        if path in ("/openapi.json", "/docs"):
            return self.settings.docs_open
        if path == "/metrics":
            token = self.settings.metrics_token
            if token is None:
                return self.settings.metrics_open
            given = headers.get(b"authorization", b"")
            return hmac.compare_digest(given, b"Bearer " + token.encode())
        return True


def _bearer_token(headers: dict[bytes, bytes]) -> str | None:
    """The token of an ``Authorization: Bearer`` header, if any."""
    scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


class Idempotency:
    """A POST with ``Idempotency-Key`` runs once per person and key; retries get its answer.

    Runs inside :class:`Gateway` (which buffered the body) and resolves the bearer token
    itself, so the key is scoped to the person even before the route's dependencies run.
    """

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime
        # Claims of failed requests this process could not free (the database went away
        # with the request, a failover): freed before the key is claimed again, so that a
        # retry runs instead of waiting out the lease.
        self._unreleased: set[tuple[str, str]] = set()
        self._unreleased_lock = threading.Lock()
        self._usernames: InFlight[str | None] = InFlight()

    async def _database_away(self, send: Send, error: Exception) -> None:
        """Answer 503 (nothing stored) when the key's own table is out of reach."""
        _log.error("database unavailable", error=str(error))
        await run_in_threadpool(self.runtime.database_away.confirm)
        await _send_body(send, *_problem(
            503, "Service unavailable", "the database is not reachable; nothing was "
            "stored, retry later"), headers=[(b"retry-after", str(RETRY_AFTER).encode())])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        key = headers.get(b"idempotency-key", b"").decode("latin-1")
        try:
            username = None
            token = _bearer_token(headers) if key else None
            if token is not None:
                # A token this process checked within the sessions' touch_every: no thread
                # hop, no round trip (the route's own check reads the same cache).
                # Else one thread hop for all the requests bearing it at that moment.
                cached = self.runtime.sessions().cached(token)
                username = (cached.username if cached is not None
                            else await self._usernames.run(
                                token, lambda: run_in_threadpool(self._username, token)))
        except DATABASE_ERRORS as e:
            await self._database_away(send, e)
            return
        if username is None:
            await self.app(scope, receive, send)
            return
        if len(key) > MAX_KEY_LENGTH:
            await _send_body(send, *_problem(422, "Invalid input", "Idempotency-Key is too long",
                                             errors=[{"field": "Idempotency-Key",
                                                      "message": f"at most {MAX_KEY_LENGTH}"}]))
            return
        digest = request_digest("POST", scope["path"], scope["state"].get("body", b""))
        try:
            # Claimed from the key claims' thread, with those of concurrent requests in one
            # statement: no pooled connection and no worker thread of its own.
            with self._unreleased_lock:
                free_first = (username, key) in self._unreleased
                self._unreleased.discard((username, key))
            claims = self.runtime.key_claims()
            replay = await claims.claim(username, key, digest, free_first=free_first)
            answering = (claims.answering(username, key)
                         if isinstance(replay, Replay) and replay.status is None else None)
            if answering is not None:
                # In flight here, answered and being stored: that answer, not a 409. (wait,
                # unlike await, neither raises the answer's failure nor cancels it.)
                await asyncio.wait([answering])
                replay = await claims.claim(username, key, digest)
        except DATABASE_ERRORS as e:
            # The claim may have committed before its answer was lost: this request did not
            # run, so its claim is freed when the key comes again.
            with self._unreleased_lock:
                self._unreleased.add((username, key))
            await self._database_away(send, e)
            return
        if isinstance(replay, Replay):
            if replay.request_sha256 != digest:
                await _send_body(send, *_problem(
                    422, "Invalid input", "this Idempotency-Key was used for another request",
                    errors=[{"field": "Idempotency-Key", "message": "reused for another "
                                                                    "request"}]))
            elif replay.status is None and replay.applied_at is not None:
                # Its events are stored but its answer is not (a server stopped between the
                # two): it must not run again.
                await _send_body(send, *_problem(
                    409, "Conflict", "the request with this Idempotency-Key was applied at "
                    f"{replay.applied_at.isoformat()} (its writes are stored) but its answer "
                    "was not kept; it will not run again: read the resource to see the result",
                    key_state="applied", applied_at=replay.applied_at.isoformat()))
            elif replay.status is None:
                await _send_body(send, *_problem(
                    409, "Conflict", "a request with this Idempotency-Key is in flight or was "
                    f"cut off; read the resource to see whether it was written, or retry after "
                    f"{int(LEASE.total_seconds())} s", key_state="in_flight"))
            else:
                await _send_body(send, replay.status, orjson.dumps(replay.body["content"]),
                                 replay.body["content_type"],
                                 [(b"idempotent-replayed", b"true"),
                                  *[(k.encode(), v.encode())
                                    for k, v in replay.body["headers"]]])
            return
        captured: dict[str, Any] = {"status": 500, "headers": [], "body": bytearray()}

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                captured["status"] = message["status"]
                captured["headers"] = message.get("headers", [])
            elif message["type"] == "http.response.body":
                captured["body"].extend(message.get("body", b""))
            await send(message)

        # The request's events are stored with the receipt of its claim (in their own
        # transaction), so that a retry never runs it twice, whatever becomes of its answer.
        receipts = RECEIPTS.set((Applied(username, key, replay.at),))
        try:
            await self.app(scope, receive, capture)
        except asyncio.CancelledError:
            # Cut off mid-way (its write may yet commit): the key stays claimed until its
            # lease runs out, and a retry hears 409 meanwhile.
            self.runtime.key_claims().forgo()
            raise
        except BaseException:
            # A server error (even after its status went out) promises nothing: its key is
            # freed, and the error goes on to the layer that answers it.
            captured["status"] = 500
            await self._complete(username, key, replay, captured)
            raise
        finally:
            RECEIPTS.reset(receipts)
        await self._complete(username, key, replay, captured)

    def _username(self, token: str) -> str | None:
        with self.runtime.pool().connection() as conn:
            session = self.runtime.sessions().resolve(conn, token)
        return None if session is None else str(session.username)

    async def _complete(self, username: str, key: str, claimed: Claimed,
                        captured: dict[str, Any]) -> None:
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in captured["headers"]
                   if k.lower() in (b"etag", b"location")]
        content_type = next((v.decode("latin-1") for k, v in captured["headers"]
                             if k.lower() == b"content-type"), "application/json")
        try:
            content = orjson.loads(bytes(captured["body"])) if captured["body"] else None
        except orjson.JSONDecodeError:
            content = None
        # A refusal with Retry-After (another's write came first) is one to be sent again.
        retry = any(k.lower() == b"retry-after" for k, _ in captured["headers"])
        try:
            await self.runtime.key_claims().answer(
                username, key, claimed, captured["status"],
                {"content": content, "content_type": content_type, "headers": headers}, retry)
        except DATABASE_ERRORS as e:
            # The answer is sent; only the key's record is missing.
            if frees_key(captured["status"], retry):
                with self._unreleased_lock:
                    self._unreleased.add((username, key))
            _log.warning("idempotency key not recorded", status=captured["status"],
                         error=str(e))


# Every answer of the API is data or an error, never a page: nothing may be framed, run or
# fetched by it, and nothing of it kept by a cache (patient data: HIPAA, GDPR).
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"content-security-policy",
     b"default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
)
# The console's pages and /docs run scripts and styles, but only this server's own files (no
# inline script, nothing from another host); their forms post only here.
PAGE_SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = tuple(
    (name, b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
           b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
    if name == b"content-security-policy" else (name, value)
    for name, value in SECURITY_HEADERS)
PAGE_PATHS = ("/ui/", "/docs")
_SET_HERE = {name for name, _ in SECURITY_HEADERS}
