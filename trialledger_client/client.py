"""The clients: :class:`Client` (blocking) and :class:`AsyncClient` (asyncio), over httpx.

Both run the calls of :mod:`trialledger_client.operations` alike: they keep the token of the
last sign-in, send a fresh ``Idempotency-Key`` with every write (the same one on each retry
of that write), send ``If-Match`` with the version of the subject they last saw, retry after
a connection error or a 503 or 409 with ``Retry-After``, and turn problem+json into
exceptions.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Concatenate, ParamSpec, TypeVar

import httpx
import pydantic_core

from trialledger_client import operations as ops
from trialledger_client.errors import ConnectionFailed, problem_error
from trialledger_client.models import AuditEntry, AuditPage, ExportFormat, Token
from trialledger_client.operations import Call

T = TypeVar("T")
P = ParamSpec("P")

Destination = str | os.PathLike[str] | IO[bytes]
"""Where an export goes: a file name (written whole, then renamed into place) or an open
binary file."""


class _Session:
    """What both clients share: the token, the versions seen, and when to retry."""

    def __init__(self, token: Token | None, retries: int, max_retry_wait: float,
                 idempotency_keys: bool) -> None:
        self.token = token
        self.idempotency_keys = idempotency_keys
        self.retries = retries
        self.max_retry_wait = max_retry_wait
        self._versions: dict[tuple[str, str], int] = {}

    def version(self, study: str, subject: str) -> int | None:
        """The version of the subject this client last saw (read or wrote), if any."""
        return self._versions.get((study, subject))

    def auth_headers(self) -> dict[str, str]:
        """The token of the last sign-in, as a header."""
        if self.token is None:
            return {}
        return {"Authorization": f"Bearer {self.token.access_token}"}

    def headers(self, call: Call[Any]) -> dict[str, str]:
        """The headers of ``call``: token, and for a write its idempotency key and If-Match."""
        headers = self.auth_headers()
        if call.is_write:
            if self.idempotency_keys:
                headers["Idempotency-Key"] = str(uuid.uuid4())
            version = call.version
            if version is None and call.subject is not None:
                version = self._versions.get(call.subject)
            if version is not None:
                headers["If-Match"] = f'"{version}"'
        return headers

    def may_retry(self, call: Call[Any], headers: dict[str, str], attempt: int) -> bool:
        """Whether ``call`` may be sent again: a read, a POST with an idempotency key (the
        server answers a repeated key with the first answer), or a correction or removal
        carrying If-Match (a repeat of one that was stored is refused as stale: the server
        keeps keys of POSTs only)."""
        if attempt >= self.retries:
            return False
        if call.method == "POST":
            return "Idempotency-Key" in headers
        return call.method == "GET" or "If-Match" in headers

    def backoff(self, attempt: int) -> float:
        """The wait before retry ``attempt + 1`` after a connection error."""
        return float(min(self.max_retry_wait, 0.1 * 2 ** attempt))

    def retry_after(self, response: httpx.Response) -> float | None:
        """The wait a 503 (the database away) or a 409 (another's write to the subject came
        first) asks for with Retry-After (None: neither, or without it)."""
        if response.status_code not in (409, 503):
            return None
        value = response.headers.get("retry-after")
        if value is None or not value.strip().isdigit():
            return None
        return min(float(value), self.max_retry_wait)

    def finish(self, call: Call[T], response: httpx.Response) -> T:
        """The answer of ``call`` read, its version noted; or the refusal raised."""
        if response.status_code >= 400:
            raise _refusal(response)
        if call.tracks and call.subject is not None:
            etag = response.headers.get("etag", "").removeprefix("W/").strip('"')
            if etag.isdigit():
                # Versions only grow: a late or replayed answer never takes one back.
                seen = self._versions.get(call.subject, 0)
                self._versions[call.subject] = max(seen, int(etag))
        return call.read(response)


class _Urls:
    """The absolute URL of each path called, parsed once: httpx parses a URL given as text on
    every request, the largest part of its own work per request."""

    LIMIT = 4096

    def __init__(self, base_url: httpx.URL) -> None:
        self.base = str(base_url).rstrip("/")
        self._parsed: dict[str, httpx.URL] = {}

    def __call__(self, path: str) -> httpx.URL:
        url = self._parsed.get(path)
        if url is None:
            if len(self._parsed) >= self.LIMIT:
                self._parsed.clear()
            url = self._parsed[path] = httpx.URL(self.base + path)
        return url


def _content(call: Call[Any], headers: dict[str, str]) -> bytes | None:
    """The body of ``call`` as JSON (pydantic's encoder), its content type in ``headers``."""
    if call.body is None:
        return None
    headers["Content-Type"] = "application/json"
    return pydantic_core.to_json(call.body)


def _refusal(response: httpx.Response) -> Exception:
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    retry_after = response.headers.get("retry-after")
    return problem_error(response.status_code, body,
                         float(retry_after) if retry_after and retry_after.isdigit() else None)


def _operation(build: Callable[P, Call[T]]) -> Callable[Concatenate[Client, P], T]:
    def method(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self.run(build(*args, **kwargs))
    method.__doc__ = build.__doc__
    method.__name__ = build.__name__
    return method


def _async_operation(build: Callable[P, Call[T]]
                     ) -> Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, T]]:
    async def method(self: AsyncClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self.run(build(*args, **kwargs))
    method.__doc__ = build.__doc__
    method.__name__ = build.__name__
    return method


class _Sink:
    """An export's destination: a named file appears only once complete."""

    def __init__(self, destination: Destination) -> None:
        self.path: Path | None = None
        if isinstance(destination, str | os.PathLike):
            self.path = Path(destination)
            self.partial = self.path.with_name(self.path.name + ".part")
            self.file: IO[bytes] = self.partial.open("wb")
        else:
            self.file = destination
        self.written = 0

    def write(self, chunk: bytes) -> None:
        self.file.write(chunk)
        self.written += len(chunk)

    def close(self, complete: bool) -> None:
        if self.path is None:
            return
        self.file.close()
        if complete:
            self.partial.replace(self.path)
        else:
            self.partial.unlink(missing_ok=True)


class Client:
    """A blocking client of one TrialLedger server.

    ``Client("http://127.0.0.1:8000")``, then :meth:`sign_in` (or pass the ``token`` of
    another client's sign-in); every operation of :mod:`trialledger_client.operations` is a
    method. ``retries`` bounds the retries of one
    call after a connection error or a 503 or 409 with Retry-After (each wait at most
    ``max_retry_wait`` seconds); ``transport`` and ``timeout`` go to httpx. With
    ``idempotency_keys=False`` writes carry no key and a POST is never retried (for a caller
    whose every entry names its own ``record_id``, which the server refuses to store twice).
    """

    def __init__(self, base_url: str, *, token: Token | None = None, timeout: float = 60.0,
                 retries: int = 3, max_retry_wait: float = 10.0, idempotency_keys: bool = True,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.session = _Session(token, retries, max_retry_wait, idempotency_keys)
        self.http = httpx.Client(base_url=base_url, timeout=timeout, transport=transport)
        self._url = _Urls(self.http.base_url)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections."""
        self.http.close()

    def run(self, call: Call[T]) -> T:
        """Send ``call`` (retrying as the class says) and read its answer."""
        headers = self.session.headers(call)
        content = _content(call, headers)
        attempt = 0
        while True:
            try:
                response = self.http.request(call.method, self._url(call.path),
                                             params=call.params, content=content,
                                             headers=headers)
            except httpx.TransportError as e:
                if not self.session.may_retry(call, headers, attempt):
                    raise ConnectionFailed(f"{call.method} {call.path}: {e!r}") from e
                time.sleep(self.session.backoff(attempt))
            else:
                wait = self.session.retry_after(response)
                if wait is None or not self.session.may_retry(call, headers, attempt):
                    return self.session.finish(call, response)
                time.sleep(wait)
            attempt += 1

    def sign_in(self, username: str, password: str, *, totp: str | None = None,
                client_id: str | None = None, client_secret: str | None = None) -> Token:
        """Sign in; later calls carry the token."""
        self.session.token = self.run(ops.sign_in(
            username, password, totp=totp, client_id=client_id, client_secret=client_secret))
        return self.session.token

    def version(self, study: str, subject: str) -> int | None:
        """The version of the subject this client last saw (sent as If-Match next)."""
        return self.session.version(study, subject)

    def audit_trail(self, study: str, *, page_size: int = 100,
                    **filters: Any) -> Iterator[AuditEntry]:
        """Every row of the study's audit trail in commit order, page after page (filters as
        :func:`~trialledger_client.operations.audit_page` takes them)."""
        return self._pages(lambda cursor: ops.audit_page(study, cursor=cursor,
                                                         limit=page_size, **filters))

    def history(self, study: str, subject: str, *,
                page_size: int = 100) -> Iterator[AuditEntry]:
        """Every row of a subject's audit trail, page after page."""
        return self._pages(lambda cursor: ops.history_page(study, subject, cursor=cursor,
                                                           limit=page_size))

    def _pages(self, page: Callable[[str | None], Call[AuditPage]]) -> Iterator[AuditEntry]:
        cursor: str | None = None
        while True:
            result = self.run(page(cursor))
            yield from result.entries
            if result.next_cursor is None:
                return
            cursor = result.next_cursor

    def export(self, study: str, export_format: ExportFormat, destination: Destination, *,
               as_of: datetime | None = None) -> int:
        """Download an export as it streams, into ``destination``; the bytes written. A
        download cut off part-way raises :class:`ConnectionFailed` (a named file is then not
        left behind)."""
        path, params = ops.export_request(study, export_format, as_of=as_of)
        headers = self.session.auth_headers()
        sink = _Sink(destination)
        try:
            with self.http.stream("GET", path, params=params, headers=headers) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _refusal(response)
                for chunk in response.iter_bytes():
                    sink.write(chunk)
        except httpx.TransportError as e:
            sink.close(complete=False)
            raise ConnectionFailed(f"GET {path}: {e!r}") from e
        except BaseException:
            sink.close(complete=False)
            raise
        sink.close(complete=True)
        return sink.written

    register_study = _operation(ops.register_study)
    get_study = _operation(ops.get_study)
    add_user = _operation(ops.add_user)
    list_subjects = _operation(ops.list_subjects)
    enrol = _operation(ops.enrol)
    record_vitals = _operation(ops.record_vitals)
    record_dose = _operation(ops.record_dose)
    start_therapy = _operation(ops.start_therapy)
    record_lab = _operation(ops.record_lab)
    record_assessment = _operation(ops.record_assessment)
    report_adverse_event = _operation(ops.report_adverse_event)
    change_therapy = _operation(ops.change_therapy)
    stop_therapy = _operation(ops.stop_therapy)
    update_adverse_event = _operation(ops.update_adverse_event)
    resolve_adverse_event = _operation(ops.resolve_adverse_event)
    correct = _operation(ops.correct)
    remove = _operation(ops.remove)
    withdraw = _operation(ops.withdraw)
    complete = _operation(ops.complete)
    lock_subject = _operation(ops.lock_subject)
    unlock_subject = _operation(ops.unlock_subject)
    open_query = _operation(ops.open_query)
    answer_query = _operation(ops.answer_query)
    close_query = _operation(ops.close_query)
    verify_source = _operation(ops.verify_source)
    sign = _operation(ops.sign)
    record_deviation = _operation(ops.record_deviation)
    casebook = _operation(ops.casebook)
    history_page = _operation(ops.history_page)
    audit_page = _operation(ops.audit_page)
    outcomes = _operation(ops.outcomes)
    outcome_cell = _operation(ops.outcome_cell)
    list_deviations = _operation(ops.list_deviations)
    checkpoint = _operation(ops.checkpoint)
    inclusion_proof = _operation(ops.inclusion_proof)
    consistency_proof = _operation(ops.consistency_proof)


class AsyncClient:
    """The asyncio twin of :class:`Client`: the same operations, awaited."""

    def __init__(self, base_url: str, *, token: Token | None = None, timeout: float = 60.0,
                 retries: int = 3, max_retry_wait: float = 10.0, idempotency_keys: bool = True,
                 transport: httpx.AsyncBaseTransport | None = None,
                 limits: httpx.Limits | None = None) -> None:
        self.session = _Session(token, retries, max_retry_wait, idempotency_keys)
        self.http = httpx.AsyncClient(base_url=base_url, timeout=timeout, transport=transport,
                                      limits=limits or httpx.Limits())
        self._url = _Urls(self.http.base_url)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections."""
        await self.http.aclose()

    async def run(self, call: Call[T]) -> T:
        """Send ``call`` (retrying as :class:`Client` does) and read its answer."""
        headers = self.session.headers(call)
        content = _content(call, headers)
        attempt = 0
        while True:
            try:
                response = await self.http.request(call.method, self._url(call.path),
                                                   params=call.params, content=content,
                                                   headers=headers)
            except httpx.TransportError as e:
                if not self.session.may_retry(call, headers, attempt):
                    raise ConnectionFailed(f"{call.method} {call.path}: {e!r}") from e
                await asyncio.sleep(self.session.backoff(attempt))
            else:
                wait = self.session.retry_after(response)
                if wait is None or not self.session.may_retry(call, headers, attempt):
                    return self.session.finish(call, response)
                await asyncio.sleep(wait)
            attempt += 1

    async def sign_in(self, username: str, password: str, *, totp: str | None = None,
                      client_id: str | None = None, client_secret: str | None = None) -> Token:
        """Sign in; later calls carry the token."""
        self.session.token = await self.run(ops.sign_in(
            username, password, totp=totp, client_id=client_id, client_secret=client_secret))
        return self.session.token

    def version(self, study: str, subject: str) -> int | None:
        """The version of the subject this client last saw (sent as If-Match next)."""
        return self.session.version(study, subject)

    async def audit_trail(self, study: str, *, page_size: int = 100,
                          **filters: Any) -> AsyncIterator[AuditEntry]:
        """Every row of the study's audit trail in commit order, page after page."""
        cursor: str | None = None
        while True:
            page = await self.run(ops.audit_page(study, cursor=cursor, limit=page_size,
                                                 **filters))
            for entry in page.entries:
                yield entry
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def export(self, study: str, export_format: ExportFormat,
                     destination: Destination, *, as_of: datetime | None = None) -> int:
        """Download an export as it streams, as :meth:`Client.export` does."""
        path, params = ops.export_request(study, export_format, as_of=as_of)
        headers = self.session.auth_headers()
        sink = _Sink(destination)
        try:
            async with self.http.stream("GET", path, params=params,
                                        headers=headers) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise _refusal(response)
                async for chunk in response.aiter_bytes():
                    sink.write(chunk)
        except httpx.TransportError as e:
            sink.close(complete=False)
            raise ConnectionFailed(f"GET {path}: {e!r}") from e
        except BaseException:
            sink.close(complete=False)
            raise
        sink.close(complete=True)
        return sink.written

    register_study = _async_operation(ops.register_study)
    get_study = _async_operation(ops.get_study)
    add_user = _async_operation(ops.add_user)
    list_subjects = _async_operation(ops.list_subjects)
    enrol = _async_operation(ops.enrol)
    record_vitals = _async_operation(ops.record_vitals)
    record_dose = _async_operation(ops.record_dose)
    start_therapy = _async_operation(ops.start_therapy)
    record_lab = _async_operation(ops.record_lab)
    record_assessment = _async_operation(ops.record_assessment)
    report_adverse_event = _async_operation(ops.report_adverse_event)
    change_therapy = _async_operation(ops.change_therapy)
    stop_therapy = _async_operation(ops.stop_therapy)
    update_adverse_event = _async_operation(ops.update_adverse_event)
    resolve_adverse_event = _async_operation(ops.resolve_adverse_event)
    correct = _async_operation(ops.correct)
    remove = _async_operation(ops.remove)
    withdraw = _async_operation(ops.withdraw)
    complete = _async_operation(ops.complete)
    lock_subject = _async_operation(ops.lock_subject)
    unlock_subject = _async_operation(ops.unlock_subject)
    open_query = _async_operation(ops.open_query)
    answer_query = _async_operation(ops.answer_query)
    close_query = _async_operation(ops.close_query)
    verify_source = _async_operation(ops.verify_source)
    sign = _async_operation(ops.sign)
    record_deviation = _async_operation(ops.record_deviation)
    casebook = _async_operation(ops.casebook)
    history_page = _async_operation(ops.history_page)
    audit_page = _async_operation(ops.audit_page)
    outcomes = _async_operation(ops.outcomes)
    outcome_cell = _async_operation(ops.outcome_cell)
    list_deviations = _async_operation(ops.list_deviations)
    checkpoint = _async_operation(ops.checkpoint)
    inclusion_proof = _async_operation(ops.inclusion_proof)
    consistency_proof = _async_operation(ops.consistency_proof)
