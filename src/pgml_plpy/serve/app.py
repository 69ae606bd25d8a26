"""The pgml_plpy application on Ray Serve, and the serve command's HTTP entry point.

- Front (the serve command's own HTTP server at HOST:PORT, in the serve command's process):
  /pgml/health, /pgml/deploy (deploys the model applications), and /pgml/m/<name>/<op>,
  each call passed to a replica of application <name> through a Ray Serve deployment
  handle (404 while that application does not run: the caller deploys it and calls again).
  Light: it never imports torch. Ray Serve's own HTTP proxy is not started.
- Models (one application per deployment shape: replicas, num_cpus, num_gpus of the routes
  that use it): transform, stream, embed, rank, check, state, address. Embed, rank and the
  classification tasks are batched continuously (replica.py), so that concurrent callers'
  inputs run together.
- Each model replica also answers the same operations on a port of its own (`address` tells
  which; none when the serve command listens on loopback and the replica runs on another
  machine): a backend looks its replica up once through the serve command and then calls
  it directly, which saves a hop (HTTP in, a Ray call to the replica and back, HTTP out) on
  every call. Ray Serve still places, starts, restarts and removes the replicas and spreads
  the calls of the serve command's handles over them; a backend whose replica went away
  looks it up again.

Both entry points check the bearer token (its SHA-256 is all they hold) when the serve
command was given one, and stop the work when the caller goes away (a cancelled SQL
statement closes its connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import math
import time

import ray
from ray import serve

from .. import __version__, jsontext
from ..errors import InvalidParameter
from ..runtimes.http import RuntimeUnavailable
from ..runtimes.ray import PREFIX, app_name
from .replica import error_body

MAX_ONGOING = 256          # requests a replica takes at once (they queue per model inside)
# Serve's own logs: warnings only, and no access log line per request (a measurable cost per call).
LOGGING = {"log_level": "WARNING", "enable_access_log": False}
# The HTTP servers keep idle connections longer than a backend's client does (http.KEEP_IDLE), so
# that the backend, not the server, closes an idle one: never one that a new call is just using.
KEEP_ALIVE = 90
NDJSON = "application/x-ndjson"


def encoded(body) -> bytes:
    """JSON that may hold numpy values (a pipeline's scores), as the backend's answers may."""
    return json.dumps(body, default=jsontext.default).encode()


def authorized(scope, token_sha256: str | None) -> bool:
    if token_sha256 is None:
        return True
    header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
    scheme, _, token = header.partition(" ")
    digest = hashlib.sha256(token.encode()).hexdigest()
    return scheme.lower() == "bearer" and hmac.compare_digest(digest, token_sha256)


UNAUTHORIZED = encoded({"error": {"message": "the runtime refused the call: no valid token", "sqlstate": "28000",
                                  "hint": "The route's token_file must hold the token of the serve command's "
                                          "--token-file."}})


def failure(exc: BaseException, doing: str) -> tuple[int, bytes]:
    body = error_body(exc, doing)
    client_side = body["error"]["sqlstate"][:2] in ("22", "42", "0A", "54", "58", "28", "55")
    return 400 if client_side else 500, encoded(body)


def not_deployed(path: str) -> dict:
    """The body of a 404: a model application that does not run (yet); the caller deploys it and
    calls again."""
    return {"error": {"message": f"no application serves {path}"}}


async def listen(app, host: str, port: int, tls_cert: str | None, tls_key: str | None):
    """Serve the ASGI app on host:port (0: a free port) in the running event loop, with TLS when
    given a certificate: (the uvicorn server, its task, its URL), once it accepts connections."""
    import socket

    import uvicorn

    sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    tls = {"ssl_certfile": tls_cert, "ssl_keyfile": tls_key} if tls_cert else {}
    # No proxy-headers middleware and no Server header: work per request that no caller uses (the Date
    # header stays: HTTP requires it of a server with a clock).
    server = uvicorn.Server(uvicorn.Config(app, interface="asgi3", lifespan="off", log_level="warning",
                                           access_log=False, timeout_keep_alive=KEEP_ALIVE,
                                           timeout_graceful_shutdown=5, proxy_headers=False,
                                           server_header=False, **tls))
    serving = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    while not server.started:
        if serving.done():
            serving.result()  # raises why it could not start
            raise RuntimeError(f"the HTTP server on {host}:{port} stopped as it started")
        await asyncio.sleep(0.01)
    port = sock.getsockname()[1]
    return server, serving, f"{'https' if tls else 'http'}://{f'[{host}]' if ':' in host else host}:{port}"


async def disconnect(receive) -> None:
    """Returns once the client went away (the request's body already read)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def respond(scope, receive, send, token_sha256: str | None, call) -> None:
    """One HTTP call on an entry point: the token, then call(path, body), which gives (status, JSON
    bytes) or, for a stream, an async iterator of ndjson lines, each sent as it comes. A client
    that goes away cancels the call (and so the work it waits for)."""
    if scope["type"] != "http":
        return
    if not authorized(scope, token_sha256):
        await reply(send, (401, UNAUTHORIZED))
        return
    body, more = b"", True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body, more = body + message.get("body", b""), message.get("more_body", False)

    async def work() -> None:
        await reply(send, await call(scope["path"].rstrip("/"), body))

    answering, gone = asyncio.ensure_future(work()), asyncio.ensure_future(disconnect(receive))
    await asyncio.wait([answering, gone], return_when=asyncio.FIRST_COMPLETED)
    gone.cancel()
    if not answering.done():
        answering.cancel()
    await asyncio.wait([answering])
    if not answering.cancelled():
        answering.result()  # a failure of the server itself: uvicorn logs it


async def reply(send, answer) -> None:
    if isinstance(answer, tuple):
        status, data = answer
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})
        return
    try:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", NDJSON.encode())]})
        async for line in answer:
            await send({"type": "http.response.body", "body": line, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    finally:
        await answer.aclose()


@serve.deployment(max_ongoing_requests=MAX_ONGOING)
class Models:
    async def __init__(self, config: dict):
        from .replica import Replica

        self.token = config["token_sha256"]
        self.replica = Replica(config)
        self.url = None
        node = ray.util.get_node_ip_address()
        # On the serve command's machine when it listens on loopback; else on the replica node's address.
        if not config["loopback"] or node == config["node_ip"]:
            host = "127.0.0.1" if config["loopback"] else node
            self.server, self.serving, self.url = await listen(self.direct, host, 0, config["tls_cert"],
                                                               config["tls_key"])
        where = f"at {self.url}" if self.url else "through the serve command only (another machine than its own)"
        print(f"pgml_plpy serve: a replica of {serve.get_replica_context().app_name} answers {where}", flush=True)

    async def direct(self, scope, receive, send) -> None:
        """A call on the replica's own port: POST /<op>."""
        async def call(path: str, body: bytes):
            self.replica.direct += 1
            op = path.rsplit("/", 1)[-1]
            return self.stream(body) if op == "stream" else await self.answer(op, body)

        await respond(scope, receive, send, self.token, call)

    async def stream(self, body: bytes):
        """The ndjson lines of a stream (Replica.stream), for either entry point."""
        async with contextlib.aclosing(self.replica.stream(body)) as lines:
            async for line in lines:
                yield line

    async def answer(self, op: str, body: bytes) -> tuple[int, bytes]:
        """Any other operation, for either entry point: (HTTP status, JSON bytes)."""
        try:
            payload = json.loads(body)
            if op == "state":
                answer = {**self.replica.state(), "node": ray.get_runtime_context().get_node_id()}
            elif op == "address":
                answer = {"url": self.url}
            elif op == "check":
                answer = {"detail": await self.replica.run(payload["model"], lambda: self.replica.check(payload))}
            elif op == "transform":
                answer = await self.transform(payload)
                answer = answer if isinstance(answer, dict) and "need" in answer else {"result": answer}
            elif op == "embed":
                answer = await self.replica.embed(self.replica.embed_request(payload))
            elif op == "rank":
                answer = {"ranked": await self.replica.rank(self.replica.rank_request(payload))}
            else:
                raise InvalidParameter(f"the runtime has no operation {op!r}")
            return 200, encoded(answer)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - one error answer with its SQLSTATE
            return failure(exc, op)

    async def transform(self, payload: dict):
        from .replica import BATCHED

        request = await self.replica.prepared(payload)
        if isinstance(request, list):
            return {"need": request}
        if request.canonical in BATCHED:
            return await self.replica.transform_batched(request)
        from ..runtimes.backend import BACKEND

        return await self.replica.run(request.model, lambda: BACKEND.transform(request))


class Front:
    """The serve command's HTTP entry point (an ASGI app; it runs in the serve command's process)."""

    def __init__(self, config: dict):
        self.config = config
        self.lock = asyncio.Lock()
        self.handles: dict = {}  # application name -> its DeploymentHandle, once it ran

    async def __call__(self, scope, receive, send) -> None:
        await respond(scope, receive, send, self.config["token_sha256"], self.call)

    async def call(self, path: str, body: bytes):
        if path.startswith(f"{PREFIX}/m/"):
            name, _, op = path[len(PREFIX) + 3:].partition("/")
            handle = await self.handle(name)
            if handle is None:
                return 404, encoded(not_deployed(path))
            if op == "stream":
                return self.lines(name, handle, body)
            return await self.forward(name, handle, op, body)
        if not path.startswith(f"{PREFIX}/"):
            return 404, encoded(not_deployed(path))
        op = path.rsplit("/", 1)[-1]
        try:
            payload = json.loads(body)
            if op == "health":
                nodes = await asyncio.to_thread(lambda: sum(1 for n in ray.nodes() if n.get("Alive")))
                return 200, encoded({"version": __version__, "ray": ray.__version__, "nodes": nodes})
            if op == "deploy":
                return 200, encoded({"app": await self.deploy(payload)})
            raise InvalidParameter(f"the runtime has no operation {op!r}")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - one error answer with its SQLSTATE
            return failure(exc, op)

    # ------------------------------------------------------------------------- model applications

    async def handle(self, name: str):
        """The handle of model application `name`, or None while it does not run (unknown, failed)."""
        if name not in self.handles:
            if not name.startswith("pgml-"):
                return None
            status = await asyncio.to_thread(lambda: serve.status().applications.get(name))
            if status is None or status.status in ("DEPLOY_FAILED", "DELETING"):
                return None
            self.handles[name] = await asyncio.to_thread(serve.get_app_handle, name)
        return self.handles[name]

    def lost(self, name: str, op: str, exc: Exception) -> tuple[int, dict]:
        """The answer to a call that did not reach its end on a replica: 404 when the application went
        away (the caller deploys it again), else 503 without a SQLSTATE (the replica died: the caller's
        error of class 08)."""
        from ray.serve.exceptions import DeploymentUnavailableError

        if isinstance(exc, DeploymentUnavailableError):
            self.handles.pop(name, None)
            return 404, not_deployed(f"{PREFIX}/m/{name}/{op}")
        why = (str(exc).strip().splitlines() or [""])[0]  # Ray's errors go on with the actor's details
        return 503, {"error": {"message": f"the replica of {name} failed mid-call: {type(exc).__name__}: {why}"}}

    async def forward(self, name: str, handle, op: str, body: bytes) -> tuple[int, bytes]:
        """Models.answer on a replica; cancelled there when the caller goes away."""
        response = handle.options(method_name="answer").remote(op, body)
        try:
            return await response
        except asyncio.CancelledError:
            response.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - the replica or its application is gone
            status, error = self.lost(name, op, exc)
            return status, encoded(error)

    async def lines(self, name: str, handle, body: bytes):
        """Models.stream on a replica, each line as it comes; cancelled there when the caller goes away.
        A replica lost mid-stream ends it with an error line of class 08."""
        stream = handle.options(method_name="stream", stream=True).remote(body)
        finished = False
        try:
            async for line in stream:
                yield line
            finished = True
        except Exception as exc:  # noqa: BLE001 - reported to the caller as the stream's last line
            finished = True
            error = self.lost(name, "stream", exc)[1]["error"]
            yield encoded({"error": {**error, "sqlstate": "08006", "hint": "Call again: Ray Serve replaces "
                                                                           "the replica."}}) + b"\n"
        finally:
            if not finished:
                stream.cancel()

    async def deploy(self, shape: dict) -> str:
        """The application for a deployment shape, deployed unless it runs; answers once it runs."""
        replicas, cpus, gpus = shape.get("replicas"), shape.get("num_cpus"), shape.get("num_gpus")
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in (cpus, gpus))
        if not (isinstance(replicas, int) and not isinstance(replicas, bool) and replicas > 0 and numbers):
            raise InvalidParameter(f"a deployment needs replicas > 0 and num_cpus, num_gpus >= 0, not {shape}")
        name = app_name(shape)
        wait = 0.8 * float(shape.get("timeout") or 300)  # answered before the caller gives up
        async with self.lock:
            status = await asyncio.to_thread(lambda: serve.status().applications.get(name))
            if status is None or status.status in ("DEPLOY_FAILED", "UNHEALTHY"):
                print(f"pgml_plpy serve: deploying {name} (replicas {replicas}, num_cpus {cpus:g}, "
                      f"num_gpus {gpus:g})", flush=True)
                options = {"num_cpus": cpus, "num_gpus": gpus}
                if self.config.get("replica_resources"):
                    options["resources"] = self.config["replica_resources"]
                app = Models.options(num_replicas=replicas, ray_actor_options=options).bind(
                    {**self.config, "torch_threads": max(1, math.ceil(cpus))})
                await asyncio.to_thread(lambda: serve.run(app, name=name, route_prefix=None, blocking=False,
                                                          logging_config=LOGGING))
            deadline = time.monotonic() + wait
            while True:
                status = await asyncio.to_thread(lambda: serve.status().applications.get(name))
                if status is not None and status.status == "RUNNING":
                    return name
                if status is not None and status.status == "DEPLOY_FAILED":
                    raise RuntimeUnavailable(f"the runtime could not deploy {name}: {status.message}")
                if time.monotonic() > deadline:
                    message = status.message if status is not None else "no status"
                    raise RuntimeUnavailable(
                        f"the runtime's {name} did not start within {wait:g} s: {message}",
                        hint="Its replicas may ask for more CPUs, GPUs or resources than the Ray cluster has: "
                             "check the route's replicas, num_cpus and num_gpus.")
                await asyncio.sleep(0.2)
