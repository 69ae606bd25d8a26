"""HTTP calls from a backend to a runtime that never outlive their statement.

A backend's main thread is the only one that may call into the server, and a cancel or
statement_timeout reaches Python only when it does. So each call runs as an asyncio task on
this backend's event loop, driven from the main thread in short slices; between slices the
server is asked for pending interrupts. A cancel cancels the task, which closes the
connection: the runtime sees the client go away and stops the work. The route's timeout
bounds the whole call.

Failures become one SQL error each: class 08 when the runtime cannot be reached, dies
mid-call, does not answer in time or answers what the protocol does not allow (08P01); the
runtime's own SQLSTATE where it sends one (the shared runtime does); otherwise the HTTP
status decides.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import AsyncIterator, Iterator

from .. import interrupts
from ..errors import InvalidAuthorizationSpecification, InvalidParameter, PgmlError, one_line
from .routes import Route

SLICE = 0.05  # seconds the loop runs between interrupt checks

_loop: asyncio.AbstractEventLoop | None = None


def _event_loop() -> asyncio.AbstractEventLoop:
    global _loop
    if _loop is None or _loop.is_closed():
        _loop = asyncio.new_event_loop()
    return _loop


class RuntimeUnavailable(PgmlError):
    """The runtime cannot be reached, went away mid-call, or did not answer in time (class 08)."""

    sqlstate = "08006"  # connection_failure


class RuntimeUnreachable(RuntimeUnavailable):
    """No connection to the runtime could be made."""

    sqlstate = "08001"  # sqlclient_unable_to_establish_sqlconnection


class RuntimeProtocolViolation(RuntimeUnavailable):
    """An answer that breaks the protocol (not JSON, fields missing, a stream cut short)."""

    sqlstate = "08P01"  # protocol_violation


def drive(coro, deadline: float | None = None, on_timeout=None):
    """Run coro to completion on this backend's loop, answering interrupts between slices.

    A pending cancel (or anything else raised by the interrupt check) cancels coro, whose
    cleanup closes its connections, and is re-raised; past deadline (time.monotonic()) the
    same happens with on_timeout() raised instead.
    """
    loop = _event_loop()
    task = loop.create_task(coro)
    try:
        while True:
            loop.run_until_complete(asyncio.wait([task], timeout=SLICE))
            # at most every interrupts.CHECK_INTERVAL when answers come fast, after every slice otherwise
            interrupts.check(force=not task.done())
            if task.done():
                return task.result()
            if deadline is not None and time.monotonic() > deadline:
                raise on_timeout()
    except BaseException:
        if not task.done():
            task.cancel()
            loop.run_until_complete(asyncio.wait([task]))
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: no "exception was never retrieved" warning
        raise


class Client:
    """One runtime endpoint (a route's url), with its headers and TLS verification."""

    def __init__(self, route: Route, base_url: str, *, headers: dict | None = None, verify=True,
                 serve_hint: str = ""):
        self.route = route
        self.base_url = base_url.rstrip("/")
        self.headers = headers or {}
        self.verify = verify
        self.serve_hint = serve_hint
        self._client = None

    def _http(self):
        import httpx

        if self._client is None:
            timeout = httpx.Timeout(self.route.timeout, connect=min(10.0, self.route.timeout))
            self._client = httpx.AsyncClient(base_url=self.base_url, headers=self.headers, verify=self.verify,
                                             timeout=timeout)
        return self._client

    # ---------------------------------------------------------------------------------------- errors

    def unavailable(self, what: str, error: type[RuntimeUnavailable] | None = None) -> RuntimeUnavailable:
        if error is None:
            error = RuntimeUnreachable if what.startswith("cannot be reached") else RuntimeUnavailable
        return error(f"{self.route.runtime} runtime at {self.base_url} {what}",
                     hint=f"The route is {self.route.describe()}. " + self.serve_hint)

    def malformed(self, what: str) -> RuntimeUnavailable:
        """An answer that breaks the protocol (not JSON, fields missing, a stream cut short): 08P01."""
        return self.unavailable(f"sent {what}", RuntimeProtocolViolation)

    def timed_out(self) -> RuntimeUnavailable:
        return self.unavailable(f"did not answer within the route's timeout ({self.route.timeout:g} s)")

    def _transport_error(self, exc) -> RuntimeUnavailable:
        import httpx

        if isinstance(exc, httpx.ConnectError):
            return self.unavailable(f"cannot be reached: {one_line(exc) or type(exc).__name__}")
        if isinstance(exc, httpx.TimeoutException):
            return self.timed_out()
        return self.unavailable(f"failed mid-call: {type(exc).__name__}: {one_line(exc)}")

    def http_error(self, status: int, body: bytes) -> PgmlError:
        """The error a non-2xx answer stands for: the runtime's own SQLSTATE when it sends one.
        Its .status is the HTTP status."""
        error = self._status_error(status, body)
        error.status = status
        return error

    def _status_error(self, status: int, body: bytes) -> PgmlError:
        message, sqlstate, hint, detail = _error_fields(body)
        if sqlstate:
            return PgmlError(message, sqlstate=sqlstate, hint=hint, detail=detail)
        text = f"{self.route.runtime} runtime at {self.base_url} answered HTTP {status}: {message}"
        if status in (401, 403):
            return InvalidAuthorizationSpecification(text, hint=f"Check the credentials of {self.route.describe()}.")
        if status in (502, 503, 504):
            return self.unavailable(f"answered HTTP {status}: {message}")
        if 400 <= status < 500:
            return InvalidParameter(text, hint=f"The route is {self.route.describe()}.")
        return PgmlError(text, hint=f"The route is {self.route.describe()}.")  # 38000 external_routine_exception

    # ----------------------------------------------------------------------------------------- calls

    def post(self, path: str, payload) -> object:
        """POST payload as JSON; the decoded JSON answer."""
        return drive(self._call("POST", path, payload), time.monotonic() + self.route.timeout, self.timed_out)

    def get(self, path: str) -> object:
        """GET path; the decoded JSON answer."""
        return drive(self._call("GET", path), time.monotonic() + self.route.timeout, self.timed_out)

    def post_all(self, path: str, payloads: list) -> list:
        """POST each payload as JSON, all at once; the decoded answers in the payloads' order. The
        first failure cancels the calls still running; the route's timeout bounds them together."""
        async def every():
            calls = [asyncio.ensure_future(self._call("POST", path, payload)) for payload in payloads]
            try:
                return await asyncio.gather(*calls)
            finally:
                for call in calls:
                    call.cancel()
                await asyncio.gather(*calls, return_exceptions=True)

        return drive(every(), time.monotonic() + self.route.timeout, self.timed_out)

    async def _call(self, method: str, path: str, payload=None) -> object:
        import httpx

        try:
            response = await self._http().request(method, path, json=payload)
            body = response.content
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None
        if response.status_code >= 300:
            raise self.http_error(response.status_code, body)
        try:
            return json.loads(body)
        except ValueError:
            raise self.malformed(f"an answer that is not JSON: {one_line(body[:200])!r}") from None

    def stream(self, path: str, payload) -> Iterator[str]:
        """POST payload as JSON; the answer's lines as they arrive. Closing the iterator closes the
        connection; the route's timeout bounds the wait for each line."""
        lines = self._lines(path, payload)
        try:
            while True:
                try:
                    line = drive(lines.__anext__(), time.monotonic() + self.route.timeout, self.timed_out)
                except StopAsyncIteration:
                    return
                yield line
        finally:
            drive(lines.aclose())

    async def _lines(self, path: str, payload) -> AsyncIterator[str]:
        import httpx

        try:
            async with self._http().stream("POST", path, json=payload) as response:
                if response.status_code >= 300:
                    raise self.http_error(response.status_code, await response.aread())
                async for line in response.aiter_lines():
                    yield line
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None


def _error_fields(body: bytes) -> tuple[str, str | None, str | None, str | None]:
    """(message, sqlstate, hint, detail) from an error answer: the shared runtime's
    {"error": {"message", "sqlstate", "hint", "detail"}}, OpenAI's {"error": {"message"}},
    FastAPI's {"detail": ...}, or the text itself."""
    try:
        value = json.loads(body)
    except ValueError:
        return one_line(body.decode(errors="replace")[:400]) or "(no message)", None, None, None
    error = value.get("error", value) if isinstance(value, dict) else value
    if isinstance(error, dict):
        message = error.get("message") or error.get("detail") or json.dumps(error)
        sqlstate = error.get("sqlstate")
        valid = isinstance(sqlstate, str) and len(sqlstate) == 5
        return (one_line(message if isinstance(message, str) else json.dumps(message)),
                sqlstate if valid else None, error.get("hint"), error.get("detail") if valid else None)
    return one_line(error if isinstance(error, str) else json.dumps(error)), None, None, None
