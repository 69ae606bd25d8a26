"""The pgml_plpy application on Ray Serve.

- Control (route /pgml): health, and deploying the model applications. Light: it never
  imports torch.
- Models (route /pgml/m/<name>, one application per deployment shape: replicas, num_cpus,
  num_gpus of the routes that use it): transform, stream, embed, rank, check, state. Embed,
  rank and the classification tasks are batched continuously (replica.py), so that
  concurrent callers' inputs run together.
- Each model replica also answers the same operations on a port of its own (`address` tells
  which, through the proxy; none when the serve command listens on loopback and the replica runs
  on another machine): a backend looks its replica up once and then calls it directly,
  which saves the proxy's hop (HTTP in, a Ray call to the replica and back, HTTP out) on every
  call. Ray Serve still places, starts, restarts and removes the replicas; a backend whose
  replica went away looks it up again.

Both check the bearer token (its SHA-256 is all they hold) when the serve command was given one.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import math
import time

import ray
from ray import serve
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from .. import __version__, jsontext
from ..errors import InvalidParameter
from ..runtimes.http import RuntimeUnavailable
from ..runtimes.ray import PREFIX, app_name
from .replica import error_body

MAX_ONGOING = 256          # requests a replica takes at once (they queue per model inside)
# Serve's own logs: warnings only, and no access log line per request (a measurable cost per call).
LOGGING = {"log_level": "WARNING", "enable_access_log": False}
# A replica's own port keeps idle connections longer than a backend's client does (httpx: 5 s), so
# that the backend, not the replica, closes an idle one: never one that a new call is just using.
KEEP_ALIVE = 90


def json_response(body, status_code: int = 200) -> Response:
    """JSON that may hold numpy values (a pipeline's scores), as the backend's answers may."""
    return Response(json.dumps(body, default=jsontext.default), status_code=status_code, media_type="application/json")


def authorized(request: Request, token_sha256: str | None) -> bool:
    if token_sha256 is None:
        return True
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    digest = hashlib.sha256(token.encode()).hexdigest()
    return scheme.lower() == "bearer" and hmac.compare_digest(digest, token_sha256)


def unauthorized() -> Response:
    return json_response({"error": {"message": "the runtime refused the call: no valid token",
                                   "sqlstate": "28000",
                                   "hint": "The route's token_file must hold the token of the serve command's "
                                           "--token-file."}}, status_code=401)


def failure(exc: BaseException, doing: str) -> Response:
    body = error_body(exc, doing)
    client_side = body["error"]["sqlstate"][:2] in ("22", "42", "0A", "54", "58", "28", "55")
    return json_response(body, status_code=400 if client_side else 500)


def operation(request: Request) -> str:
    return request.url.path.rstrip("/").rsplit("/", 1)[-1]


async def listen(app, config: dict) -> str | None:
    """Serve the ASGI app on a port of this replica's own, with the serve command's TLS; its URL. It
    listens on the address of the replica's node, or on loopback when the serve command does; then
    only on the serve command's machine (None elsewhere: the replica is called through the proxy)."""
    import socket

    import uvicorn

    node = ray.util.get_node_ip_address()
    if config["loopback"] and node != config["node_ip"]:
        return None
    host = "127.0.0.1" if config["loopback"] else node
    sock = socket.create_server((host, 0), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    tls = {"ssl_certfile": config["tls_cert"], "ssl_keyfile": config["tls_key"]} if config["tls_cert"] else {}
    server = uvicorn.Server(uvicorn.Config(app, interface="asgi3", lifespan="off", log_level="warning",
                                           access_log=False, timeout_keep_alive=KEEP_ALIVE, **tls))
    serving = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    while not server.started:
        if serving.done():
            serving.result()  # raises why it could not start
            raise RuntimeError("the replica's own port stopped as it started")
        await asyncio.sleep(0.01)
    port = sock.getsockname()[1]
    return f"{'https' if tls else 'http'}://{f'[{host}]' if ':' in host else host}:{port}"


async def disconnect(receive) -> None:
    """Returns once the client went away (the request's body already read)."""
    while (await receive())["type"] != "http.disconnect":
        pass


@serve.deployment(max_ongoing_requests=MAX_ONGOING)
class Models:
    async def __init__(self, config: dict):
        from .replica import Replica

        self.token = config["token_sha256"]
        self.replica = Replica(config)
        self.url = await listen(self.direct, config)
        where = f"at {self.url}" if self.url else "through the proxy only (another machine than the serve command's)"
        print(f"pgml_plpy serve: a replica of {serve.get_replica_context().app_name} answers {where}", flush=True)

    async def direct(self, scope, receive, send) -> None:
        """A call on the replica's own port: the operation runs as through the proxy, and stops when the
        client goes away (a cancelled SQL statement closes its connection), as the proxy makes it."""
        if scope["type"] != "http":
            return
        self.replica.direct += 1
        request = Request(scope, receive)
        await request.body()
        call, gone = asyncio.ensure_future(self(request)), asyncio.ensure_future(disconnect(receive))
        await asyncio.wait([call, gone], return_when=asyncio.FIRST_COMPLETED)
        if not call.done():
            call.cancel()
            await asyncio.wait([call])
            return
        gone.cancel()
        await call.result()(scope, receive, send)

    async def transform(self, payload: dict):
        from .replica import BATCHED

        request = await self.replica.prepared(payload)
        if isinstance(request, list):
            return {"need": request}
        if request.canonical in BATCHED:
            result = await self.replica.transform_batched(request)
        else:
            from ..runtimes.backend import BACKEND

            result = await self.replica.run(request.model, lambda: BACKEND.transform(request))
        return result

    async def __call__(self, request: Request):
        if not authorized(request, self.token):
            return unauthorized()
        op = operation(request)
        try:
            payload = await request.json()
            if op == "stream":
                return StreamingResponse(self.replica.stream(payload), media_type="application/x-ndjson")
            if op == "state":
                return json_response({**self.replica.state(), "node": ray.get_runtime_context().get_node_id()})
            if op == "address":
                return json_response({"url": self.url})
            if op == "check":
                return json_response({"detail": await self.replica.run(payload["model"],
                                                                      lambda: self.replica.check(payload))})
            if op == "transform":
                answer = await self.transform(payload)
                answer = answer if isinstance(answer, dict) and "need" in answer else {"result": answer}
            elif op == "embed":
                answer = await self.replica.embed(self.replica.embed_request(payload))
            elif op == "rank":
                answer = {"ranked": await self.replica.rank(self.replica.rank_request(payload))}
            else:
                raise InvalidParameter(f"the runtime has no operation {op!r}")
            return json_response(answer)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - one error answer with its SQLSTATE
            return failure(exc, op)


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=MAX_ONGOING)
class Control:
    def __init__(self, config: dict):
        self.config = config
        self.lock = asyncio.Lock()

    async def __call__(self, request: Request):
        if not authorized(request, self.config["token_sha256"]):
            return unauthorized()
        if request.url.path.startswith(f"{PREFIX}/m/"):
            # a model application that is not deployed (yet): the caller deploys it and calls again
            return json_response({"error": {"message": f"no application serves {request.url.path}"}},
                                status_code=404)
        op = operation(request)
        try:
            payload = await request.json()
            if op == "health":
                nodes = await asyncio.to_thread(lambda: sum(1 for n in ray.nodes() if n.get("Alive")))
                return json_response({"version": __version__, "ray": ray.__version__, "nodes": nodes})
            if op == "deploy":
                return json_response({"app": await self.deploy(payload)})
            raise InvalidParameter(f"the runtime has no operation {op!r}")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - one error answer with its SQLSTATE
            return failure(exc, op)

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
                await asyncio.to_thread(lambda: serve.run(app, name=name, route_prefix=f"{PREFIX}/m/{name}",
                                                          blocking=False, logging_config=LOGGING))
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
