"""Calls to a runtime over HTTP (runtimes/http.py), against a real local HTTP server: answers,
streams, and every failure as one error; a cancel closes the connection. No PostgreSQL needed."""

import collections
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pgml_plpy import interrupts
from pgml_plpy.runtimes import routes
from pgml_plpy.runtimes.http import Client, RuntimeUnavailable


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # request id -> set when /slow or /stream began answering that request, and when its client went away
    # (handlers of earlier tests may still be writing to clients long gone: each test waits on its own request)
    began = collections.defaultdict(threading.Event)
    gone = collections.defaultdict(threading.Event)

    def log_message(self, *args):
        pass

    def _send(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _chunk(self, data: bytes):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def do_POST(self):
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/echo":
            self._send(200, {"got": payload, "auth": self.headers.get("Authorization"), "port": self.client_address[1]})
        elif self.path == "/hang-up":  # answers, then closes the connection without saying so beforehand
            self._send(200, {})
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            Handler.began[payload["id"]].set()
        elif self.path == "/pgml-error":
            self._send(400, {"error": {"message": "pgml: inputs[1] is NULL", "sqlstate": "22004", "hint": "h"}})
        elif self.path.startswith("/status/"):
            self._send(int(self.path.rsplit("/", 1)[1]), {"error": {"message": "the engine says no"}})
        elif self.path == "/not-json":
            self.send_response(200)
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.write(b"hello")
        elif self.path in ("/slow", "/stream"):
            Handler.began[payload.get("id")].set()
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                for i in range(payload.get("lines", 400)):
                    self._chunk(f"line {i}\n".encode() if self.path == "/stream" else b" ")
                    time.sleep(payload.get("every", 0.05))
                self._chunk(b"")
            except (BrokenPipeError, ConnectionResetError):
                Handler.gone[payload.get("id")].set()


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def client(url, timeout=30):
    route = routes.Route(model="*", task=None, runtime="test", options={"timeout": timeout}, index=0)
    return Client(route, url, headers={"Authorization": "Bearer k"}, serve_hint="Start it.")


class Cancel(Exception):
    sqlstate = "57014"


@pytest.fixture
def cancel_once():
    """Make the server's interrupt check raise a cancel once condition() is true."""
    def arm(condition):
        class CancellingDatabase:
            def check_interrupts(self):
                if condition():
                    raise Cancel("canceling statement due to user request")

        interrupts.bind(CancellingDatabase())

    yield arm
    interrupts.bind(None)


def test_json_answers_and_headers(server):
    answer = client(server).post("/echo", {"a": [1, 2]})
    assert answer["got"] == {"a": [1, 2]} and answer["auth"] == "Bearer k"


def test_a_connection_is_kept_until_the_runtime_closes_it(server):
    c = client(server)
    first = c.post("/echo", {})["port"]
    assert c.post("/echo", {})["port"] == first
    c.post("/hang-up", {"id": "hang-up"})
    assert Handler.began["hang-up"].wait(30)
    assert c.post("/echo", {})["port"] != first  # a new connection, not an error


def test_post_all_answers_in_order_a_bounded_number_at_a_time(server, monkeypatch):
    from pgml_plpy.runtimes import http

    monkeypatch.setattr(http, "AT_ONCE", 2)
    answers = client(server).post_all("/echo", [{"n": n} for n in range(5)])
    assert [a["got"]["n"] for a in answers] == [0, 1, 2, 3, 4]
    with pytest.raises(Exception) as info:
        client(server).post_all("/pgml-error", [{}, {}, {}])
    assert info.value.sqlstate == "22004"


def test_lines_arrive_as_they_come(server):
    c = client(server)
    started = time.monotonic()
    lines = c.stream("/stream", {"lines": 3, "every": 0.01})
    assert next(lines) == "line 0"
    assert list(lines) == ["line 1", "line 2"]
    assert time.monotonic() - started < 30


def test_the_runtimes_own_error_keeps_its_sqlstate(server):
    with pytest.raises(Exception) as info:
        client(server).post("/pgml-error", {})
    assert info.value.sqlstate == "22004" and info.value.message == "pgml: inputs[1] is NULL"
    assert info.value.hint == "h"


@pytest.mark.parametrize("status, sqlstate", [(400, "22023"), (422, "22023"), (401, "28000"), (503, "08006"),
                                              (500, "38000")])
def test_http_errors(server, status, sqlstate):
    with pytest.raises(Exception) as info:
        client(server).post(f"/status/{status}", {})
    assert info.value.sqlstate == sqlstate and "the engine says no" in info.value.message


def test_a_runtime_that_is_not_there():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(RuntimeUnavailable) as info:
        client(f"http://127.0.0.1:{port}").post("/echo", {})
    assert info.value.sqlstate == "08001" and "cannot be reached" in info.value.message
    assert "Start it." in info.value.hint and "runtimes[0]" in info.value.hint


def test_malformed_answers(server):
    with pytest.raises(RuntimeUnavailable, match="not JSON"):
        client(server).post("/not-json", {})


def test_the_routes_timeout_bounds_the_call(server):
    started = time.monotonic()
    with pytest.raises(RuntimeUnavailable, match="timeout") as info:
        client(server, timeout=0.5).post("/slow", {})
    assert info.value.sqlstate == "08006"
    assert time.monotonic() - started < 20


def test_a_cancel_closes_the_connection(server, cancel_once):
    cancel_once(Handler.began["cancelled post"].is_set)  # the request is being answered
    with pytest.raises(Cancel):
        client(server).post("/slow", {"id": "cancelled post"})
    assert Handler.gone["cancelled post"].wait(30), "the server never saw the client go away"


def test_a_cancel_closes_a_stream(server, cancel_once):
    lines = client(server).stream("/stream", {"lines": 10000, "every": 0.01, "id": "cancelled stream"})
    assert next(lines) == "line 0"
    cancel_once(lambda: True)
    with pytest.raises(Cancel):
        for _ in lines:
            pass
    assert Handler.gone["cancelled stream"].wait(30)


def test_closing_a_stream_closes_the_connection(server):
    lines = client(server).stream("/stream", {"lines": 10000, "every": 0.01, "id": "closed stream"})
    assert next(lines) == "line 0"
    lines.close()
    assert Handler.gone["closed stream"].wait(30)
