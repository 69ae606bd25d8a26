"""HTTP calls from a backend to a runtime that never outlive their statement.

A backend's main thread is the only one that may call into the server, and a cancel or
statement_timeout reaches Python only when it does. So a call never blocks on its socket:
it waits for it in short slices (poll) and between slices asks the server for pending
interrupts. A cancel closes the call's connection: the runtime sees the client go away and
stops the work. The route's timeout bounds the whole call (for a stream, the wait for each
line).

HTTP/1.1 itself is h11's, the protocol engine under httpx, over the standard library's
sockets and TLS: with httpx's asyncio client on an event loop driven in slices, a routed
pgml.embed cost its backend 3.3 ms of CPU and importing httpx 13 MB of its PSS; this way
1.5 ms (bench/routed_bench.py, docs/scaling.md). Connections are kept for the next call
while they are idle for less than KEEP_IDLE seconds (under the 5 s that uvicorn and most
servers keep theirs), and one that the runtime has closed is not used again.

Failures become one SQL error each: class 08 when the runtime cannot be reached, dies
mid-call, does not answer in time or answers what the protocol does not allow (08P01); the
runtime's own SQLSTATE where it sends one (the shared runtime does); otherwise the HTTP
status decides.
"""

from __future__ import annotations

import codecs
import errno
import json
import os
import select
import socket
import ssl
import time
from typing import Iterator
from urllib.parse import urlsplit

import h11

from .. import __version__, interrupts
from ..errors import InvalidAuthorizationSpecification, InvalidParameter, PgmlError, one_line
from .routes import Route

SLICE = 0.05      # seconds a call waits for its socket between interrupt checks
KEEP_IDLE = 4.0   # seconds an idle connection is kept for the next call (under the 5 s that servers keep)
MAX_IDLE = 16     # idle connections kept per runtime
RECEIVE = 1 << 16  # bytes read at once
AT_ONCE = 100     # requests of one post_all running at once (httpx's connection pool allowed as many)
_END = object()


class RuntimeUnavailable(PgmlError):
    """The runtime cannot be reached, went away mid-call, or did not answer in time (class 08)."""

    sqlstate = "08006"  # connection_failure


class RuntimeUnreachable(RuntimeUnavailable):
    """No connection to the runtime could be made."""

    sqlstate = "08001"  # sqlclient_unable_to_establish_sqlconnection


class RuntimeProtocolViolation(RuntimeUnavailable):
    """An answer that breaks the protocol (not JSON, fields missing, a stream cut short)."""

    sqlstate = "08P01"  # protocol_violation


class _Connection:
    """One HTTP/1.1 connection: a non-blocking socket (TLS for https) and h11's state of it."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.http = h11.Connection(h11.CLIENT)
        self.used = False        # it answered an earlier call (the runtime may have closed it since)
        self.idle_since = 0.0

    def fresh(self) -> bool:
        """Idle for less than KEEP_IDLE and not closed by the runtime (a closed one reads as ready)."""
        if time.monotonic() - self.idle_since > KEEP_IDLE:
            return False
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        return not poller.poll(0)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class Client:
    """One runtime endpoint (a route's url), with its headers and TLS verification (True: the
    system's CAs, as SSL_CERT_FILE / SSL_CERT_DIR may set them; False: no TLS; or an SSLContext)."""

    def __init__(self, route: Route, base_url: str, *, headers: dict | None = None, verify=True,
                 serve_hint: str = ""):
        self.route = route
        self.base_url = base_url.rstrip("/")
        self.headers = headers or {}
        self.verify = verify
        self.serve_hint = serve_hint
        parts = urlsplit(self.base_url)
        self._tls = parts.scheme == "https"
        self._host, self._port = parts.hostname, parts.port or (443 if self._tls else 80)
        self._authority = parts.netloc.rpartition("@")[2]
        self._prefix = parts.path
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._context: ssl.SSLContext | None = None
        self._idle: list[_Connection] = []

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

    def _transport_error(self, exc: Exception) -> RuntimeUnavailable:
        """A connection that failed after it was made (reset, closed early, broken HTTP)."""
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

    # ---------------------------------------------------------------------------------------- calls

    def post(self, path: str, payload) -> object:
        """POST payload as JSON; the decoded JSON answer."""
        return self._json(*self._call("POST", path, payload))

    def get(self, path: str) -> object:
        """GET path; the decoded JSON answer."""
        return self._json(*self._call("GET", path))

    def post_all(self, path: str, payloads: list) -> list:
        """POST each payload as JSON, up to AT_ONCE at a time (one connection each); the decoded answers
        in the payloads' order. The first failure closes the calls still running; the route's timeout
        bounds them together."""
        deadline = time.monotonic() + self.route.timeout
        pending, running, answers = iter(payloads), [], []
        try:
            while True:
                while len(running) < AT_ONCE and (payload := next(pending, _END)) is not _END:
                    running.append(self._start("POST", path, payload, deadline))
                if not running:
                    return answers
                answers.append(self._json(*self._answer(running[0], deadline)))
                running.pop(0)
        finally:
            for conn in running:
                if conn not in self._idle:
                    conn.close()

    def stream(self, path: str, payload) -> Iterator[str]:
        """POST payload as JSON; the answer's lines as they arrive. Closing the iterator closes the
        connection; the route's timeout bounds the wait for each line."""
        deadline = time.monotonic() + self.route.timeout
        conn = self._start("POST", path, payload, deadline)
        try:
            response = self._response(conn, deadline)
            if response.status_code >= 300:
                raise self.http_error(response.status_code, self._body(conn, deadline))
            decode, pending = codecs.getincrementaldecoder("utf-8")("replace").decode, ""
            while True:
                event = self._event(conn, time.monotonic() + self.route.timeout)
                if isinstance(event, h11.Data):
                    *lines, pending = (pending + decode(event.data)).split("\n")
                    for line in lines:
                        yield line.removesuffix("\r")
                elif isinstance(event, h11.EndOfMessage):
                    pending += decode(b"", final=True)
                    if pending:
                        yield pending.removesuffix("\r")
                    self._release(conn)
                    return
        finally:
            if conn not in self._idle:
                conn.close()

    # ------------------------------------------------------------------------------------ the wire

    def _call(self, method: str, path: str, payload=None) -> tuple[int, bytes]:
        deadline = time.monotonic() + self.route.timeout
        conn = self._start(method, path, payload, deadline)
        try:
            return self._answer(conn, deadline)
        finally:
            if conn not in self._idle:
                conn.close()

    def _json(self, status: int, body: bytes) -> object:
        if status >= 300:
            raise self.http_error(status, body)
        try:
            return json.loads(body)
        except ValueError:
            raise self.malformed(f"an answer that is not JSON: {one_line(body[:200])!r}") from None

    def _answer(self, conn: _Connection, deadline: float) -> tuple[int, bytes]:
        """The status and body of the answer on conn; conn goes back to the idle ones."""
        status = self._response(conn, deadline).status_code
        body = self._body(conn, deadline)
        self._release(conn)
        return status, body

    def _start(self, method: str, path: str, payload, deadline: float) -> _Connection:
        """The request sent on an idle connection or a new one; the connection its answer comes on."""
        body = b"" if payload is None else json.dumps(payload).encode()
        headers = [("Host", self._authority), ("User-Agent", f"pgml_plpy/{__version__}"),
                   ("Accept", "application/json"), ("Content-Length", str(len(body))), *self.headers.items()]
        if payload is not None:
            headers.append(("Content-Type", "application/json"))
        request = h11.Request(method=method, target=self._target(path), headers=headers)
        while True:
            conn = self._idle.pop() if self._idle else self._connect(deadline)
            if conn.used and not conn.fresh():
                conn.close()
                continue
            try:
                data = conn.http.send(request) + conn.http.send(h11.Data(data=body)) + conn.http.send(h11.EndOfMessage())
                self._send(conn, data, deadline)
                return conn
            except OSError as exc:
                conn.close()
                if not conn.used:
                    raise self._transport_error(exc) from None

    def _target(self, path: str) -> str:
        """The request target of a path under the base URL, or of a URL on the same server (text-embeddings-
        inference's /rerank beside an engine's /v1)."""
        if "://" not in path:
            return self._prefix + path
        parts = urlsplit(path)
        if f"{parts.scheme}://{parts.netloc}" != self._origin:
            raise InvalidParameter(f"{path} is not on the runtime's server {self._origin}")
        return parts.path + (f"?{parts.query}" if parts.query else "")

    def _response(self, conn: _Connection, deadline: float) -> h11.Response:
        event = self._event(conn, deadline)
        if not isinstance(event, h11.Response):
            raise self.malformed(f"no HTTP answer ({type(event).__name__})")
        return event

    def _body(self, conn: _Connection, deadline: float) -> bytes:
        chunks = []
        while not isinstance(event := self._event(conn, deadline), h11.EndOfMessage):
            chunks.append(event.data)
        return b"".join(chunks)

    def _release(self, conn: _Connection) -> None:
        """Keep conn for the next call when both sides are done with this one."""
        if conn.http.our_state is h11.DONE and conn.http.their_state is h11.DONE:
            conn.http.start_next_cycle()
            conn.used, conn.idle_since = True, time.monotonic()
            self._idle.append(conn)
            if len(self._idle) > MAX_IDLE:
                self._idle.pop(0).close()

    def _event(self, conn: _Connection, deadline: float):
        """h11's next event of the answer on conn (Response, Data, EndOfMessage), reading as needed."""
        try:
            while (event := conn.http.next_event()) is h11.NEED_DATA:
                try:
                    data = conn.sock.recv(RECEIVE)
                except (BlockingIOError, ssl.SSLWantReadError):
                    self._wait(conn, select.POLLIN, deadline)
                    continue
                except ssl.SSLWantWriteError:
                    self._wait(conn, select.POLLOUT, deadline)
                    continue
                conn.http.receive_data(data)
                interrupts.check()  # at most every interrupts.CHECK_INTERVAL while data keeps coming
            if isinstance(event, (h11.InformationalResponse, h11.ConnectionClosed)):
                if isinstance(event, h11.ConnectionClosed):
                    raise self.unavailable("failed mid-call: it closed the connection")
                return self._event(conn, deadline)
            return event
        except (OSError, h11.ProtocolError) as exc:
            raise self._transport_error(exc) from None

    def _send(self, conn: _Connection, data: bytes, deadline: float) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[conn.sock.send(view):]
            except (BlockingIOError, ssl.SSLWantWriteError):
                self._wait(conn, select.POLLOUT, deadline)
            except ssl.SSLWantReadError:
                self._wait(conn, select.POLLIN, deadline)

    def _wait(self, conn: _Connection, events: int, deadline: float) -> None:
        """Until conn's socket is ready for events, answering interrupts every SLICE; past deadline the
        route's timeout error."""
        poller = select.poll()
        poller.register(conn.sock, events)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise self.timed_out()
            if poller.poll(min(SLICE, left) * 1000):
                return
            interrupts.check(force=True)

    def _connect(self, deadline: float) -> _Connection:
        """A new connection (TLS for https), or the error that says the runtime cannot be reached."""
        deadline = min(deadline, time.monotonic() + 10.0)
        try:
            found = socket.getaddrinfo(self._host, self._port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise self.unavailable(f"cannot be reached: {one_line(exc)}") from None
        failure = None
        for family, kind, proto, _, address in found:
            conn = _Connection(socket.socket(family, kind, proto))
            try:
                conn.sock.setblocking(False)
                conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if conn.sock.connect_ex(address) not in (0, errno.EINPROGRESS):
                    conn.sock.connect(address)  # raises why
                self._wait(conn, select.POLLOUT, deadline)
                if (error := conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)) != 0:
                    raise OSError(error, os.strerror(error))
                if self._tls:
                    self._handshake(conn, deadline)
                return conn
            except OSError as exc:
                conn.close()
                failure = exc
            except BaseException:
                conn.close()
                raise
        raise self.unavailable(f"cannot be reached: {one_line(failure) or type(failure).__name__}")

    def _handshake(self, conn: _Connection, deadline: float) -> None:
        if self._context is None:
            if isinstance(self.verify, ssl.SSLContext):
                self._context = self.verify
            else:
                self._context = ssl.create_default_context()
                if not self.verify:
                    self._context.check_hostname, self._context.verify_mode = False, ssl.CERT_NONE
        conn.sock = self._context.wrap_socket(conn.sock, server_hostname=self._host, do_handshake_on_connect=False)
        while True:
            try:
                conn.sock.do_handshake()
                return
            except ssl.SSLWantReadError:
                self._wait(conn, select.POLLIN, deadline)
            except ssl.SSLWantWriteError:
                self._wait(conn, select.POLLOUT, deadline)


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
