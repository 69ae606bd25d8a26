"""The shared runtime on Ray Serve, as a backend sees it: routes with "runtime": "ray".

A backend sends each call as JSON over HTTP (runtimes/http.py: cancels and timeouts reach
the runtime) to the serve command (python -m pgml_plpy.serve), with the load policy that
applies to its caller; the runtime enforces it and runs the same task code as the backend
(runtimes/backend.py), so results are the same. This module is also the wire format both
sides share, and imports nothing heavy: a backend whose calls all go to routes never
imports torch or transformers.

The runtime keeps one Ray Serve application per deployment shape (replicas, num_cpus,
num_gpus of the route), deployed on the first call that needs it. A backend asks the serve
command once which replica serves it (Serve's handle there spreads backends over the
replicas) and then calls that replica on its own port: one hop instead of three per call. A
replica that cannot be reached any more (restarted, moved to another node) is looked up
again; one without a port the backend can reach is called through the serve command, which
passes each call to it through Ray Serve. Tuned models travel as
files: the backend sends the manifest (paths and part checksums), the runtime answers with
the parts it lacks ("need"), and the backend reads those from pgml.files with the caller's
rights, checks them and sends them once.
"""

from __future__ import annotations

import array
import base64
import binascii
import json
import os
import re
import stat
import sys
import time
from urllib.parse import urlsplit

from .. import __version__
from ..errors import InvalidAuthorizationSpecification, ObjectNotInPrerequisiteState, PgmlError
from ..settings import Settings, from_rows
from . import EmbedRequest, RankRequest, TransformRequest, routes
from .http import Client, RuntimeProtocolViolation, RuntimeUnavailable, RuntimeUnreachable, _error_fields

# Settings that decide what a caller may load, and the limits of one call: sent with every request.
POLICY = ("hub_downloads", "huggingface_cache", "huggingface_trust_remote_code",
          "huggingface_trust_remote_code_whitelist", "huggingface_whitelist", "models_path", "allow_pickle",
          "max_inputs", "max_input_chars", "max_new_tokens", "max_sequences")
DEFAULT_DEPLOYMENT = {"replicas": 1, "num_cpus": 1, "num_gpus": 0}
PART_BYTES = 64 << 20        # raw bytes of model parts sent in one request at most
PREFIX = "/pgml"             # the serve command's paths; model applications' under PREFIX/m/<name>
LOOKUP_AGAIN = 10.0          # seconds after which a backend calling through the serve command looks up again


# ------------------------------------------------------------------------------------ wire format


def policy(settings: Settings) -> dict:
    """What the runtime must enforce for this caller: the POLICY settings and whether the caller is a
    superuser (who may load any local folder)."""
    return {**{name: getattr(settings, name) for name in POLICY}, "superuser": settings.superuser}


def settings_of(value: dict, **own) -> Settings:
    """The runtime's Settings for a request: the caller's policy (each value checked as pgml.settings
    checks it) and the runtime's own values (own: torch_threads, max_models, models_cache, ...)."""
    if not isinstance(value, dict) or set(value) != set(POLICY) | {"superuser"}:
        raise RuntimeProtocolViolation("the request's policy does not have the fields of this runtime's version",
                                       hint="Run the same pgml_plpy release in the database's venv and the "
                                            "runtime's.")
    found = from_rows(((name, json.dumps(value[name])) for name in POLICY), superuser=value["superuser"] is True)
    return Settings(**{**{name: getattr(found, name) for name in POLICY}, "superuser": found.superuser, **own})


def deployment_of(options: dict) -> dict:
    """The Ray Serve deployment shape a route asks for (its replicas, num_cpus, num_gpus)."""
    return {key: options.get(key, default) for key, default in DEFAULT_DEPLOYMENT.items()}


def app_name(deployment: dict) -> str:
    """The application serving a deployment shape: pgml-r1-c1-g0, pgml-r2-c0_5-g1, ..."""
    def number(value) -> str:
        return re.sub(r"[^0-9]", "_", f"{float(value):g}")

    return f"pgml-r{int(deployment['replicas'])}-c{number(deployment['num_cpus'])}-g{number(deployment['num_gpus'])}"


def pack_array(vectors) -> dict:
    """A float32 matrix as JSON: its shape and its little-endian bytes in base64 (exact, compact)."""
    import numpy as np

    data = np.ascontiguousarray(vectors, dtype="<f4")
    return {"shape": list(data.shape), "data": base64.b64encode(data.tobytes()).decode()}


def unpack_array(value: dict) -> list[list[float]]:
    """pack_array's matrix as rows of floats: a routed backend does not import numpy (7.5 MB each)."""
    try:
        rows, dim = (int(n) for n in value["shape"])
        flat = array.array("f", base64.b64decode(value["data"], validate=True))
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise RuntimeProtocolViolation("the runtime sent embeddings that are not a float32 matrix") from None
    if len(flat) != rows * dim:
        raise RuntimeProtocolViolation(f"the runtime sent {len(flat)} numbers for a {rows} x {dim} matrix")
    if sys.byteorder == "big":
        flat.byteswap()
    return [flat[i * dim:(i + 1) * dim].tolist() for i in range(rows)]


# --------------------------------------------------------------------------------------- the client


def serve_hint(url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    command = f"python -m pgml_plpy.serve --port {port}"
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        command += f" --host {parts.hostname} --token-file FILE --tls-cert CERT --tls-key KEY"
    return f"Start the runtime with the project's venv on that host: {command} (see the docs on scaling)."


def read_token(route) -> str | None:
    """The route's token_file, which only the server's OS user (and the runtime) may read."""
    path = route.options.get("token_file")
    if path is None:
        return None
    where = f"token_file {path} of {route.describe()}"
    try:
        mode = os.stat(path).st_mode
        with open(path, encoding="utf-8") as fh:
            token = fh.read().strip()
    except OSError as exc:
        raise InvalidAuthorizationSpecification(
            f"{where} cannot be read by the database server's OS user: {exc.strerror}",
            hint="Put the runtime's token there, owned by the server's OS user (chmod 600, or 640 with a group "
                 "the runtime's user is in).") from None
    if mode & stat.S_IRWXO:
        raise InvalidAuthorizationSpecification(
            f"{where} can be read by every OS user",
            hint=f"chmod o-rwx {path}: only the server's OS user and the runtime may read the token.")
    if not token:
        raise InvalidAuthorizationSpecification(f"{where} is empty", hint="Write the runtime's token into it.")
    return token


class RayClient(Client):
    def http_error(self, status: int, body: bytes) -> PgmlError:
        """The runtime answers its own errors with a SQLSTATE; a 5xx without one comes from the serve command
        (the replica it passed the call to died or cannot be reached): the runtime failed mid-call."""
        if status >= 500 and _error_fields(body)[1] is None:
            error = self.unavailable(f"failed mid-call (HTTP {status}: {_error_fields(body)[0]})")
            error.status = status
            return error
        return super().http_error(status, body)


class RayRuntime:
    name = "ray"

    def __init__(self, route):
        self.route = route
        self.deployment = deployment_of(route.options)
        self.app = app_name(self.deployment)
        self.base = f"{PREFIX}/m/{self.app}"  # the application's path on the serve command
        self._client: Client | None = None
        self._replica: Client | None = None  # this backend's replica on its own port, or the serve command
        self._looked_up = 0.0  # time.monotonic() of the last lookup

    @property
    def client(self) -> Client:
        if self._client is None:
            token = read_token(self.route)
            url = self.route.options["url"]
            self._client = RayClient(self.route, url, headers={"Authorization": f"Bearer {token}"} if token else {},
                                     verify=url.startswith("https:"),  # no TLS context to build for http
                                     serve_hint=serve_hint(url))
        return self._client

    def _deploy(self) -> None:
        """Have the runtime deploy this route's application (it answers once the application runs)."""
        self.client.post(f"{PREFIX}/deploy", {**self.deployment, "timeout": max(1.0, self.route.timeout - 1)})

    def _proxied(self, call):
        """call(client, self.base) through the serve command to this route's application, deploying it
        first when the runtime does not have it (the serve command answers 404 for an application that does
        not run: new, or the runtime restarted)."""
        try:
            return call(self.client, self.base)
        except PgmlError as exc:
            if getattr(exc, "status", None) != 404:
                raise
        self._deploy()
        return call(self.client, self.base)

    def _on_replica(self, call):
        """call(client, base) on this backend's replica: on the replica's own port (base ""), looked up
        through the serve command when there is none yet, or through the serve command when the replica has
        no port this backend can reach (it runs on another node than a serve command that listens on
        loopback). A replica that cannot be reached (nothing was sent) is looked up again at once; after
        any other failure of class 08, on the next call; through the serve command, every LOOKUP_AGAIN
        seconds too (Ray Serve may have moved the replica to where the backend reaches it)."""
        for again in (False, True):
            if self._replica is self.client and time.monotonic() - self._looked_up > LOOKUP_AGAIN:
                self._replica = None
            if self._replica is None:
                self._looked_up = time.monotonic()
                url = self._proxied(lambda client, base: client.post(f"{base}/address", {}))["url"]
                self._replica = self.client if url is None else RayClient(
                    self.route, url, headers=self.client.headers, verify=self.client.verify,
                    serve_hint=self.client.serve_hint)
            try:
                if self._replica is self.client:
                    return self._proxied(call)
                return call(self._replica, "")
            except PgmlError as exc:
                if exc.sqlstate.startswith("08"):
                    self._replica = None
                if again or not isinstance(exc, RuntimeUnreachable):
                    raise

    def _post(self, op: str, payload: dict):
        return self._on_replica(lambda client, base: client.post(f"{base}/{op}", payload))

    # ---------------------------------------------------------------------------------- calls

    def _transform_payload(self, request: TransformRequest) -> tuple[dict, object]:
        found = request.deployed(request.model) if request.deployed is not None else None
        payload = {"task": request.task, "canonical": request.canonical, "model": request.model,
                   "options": request.options, "args": request.args, "inputs": request.inputs,
                   "policy": policy(request.settings),
                   "deployed": None if found is None else {"files": found.files(), "base": found.base,
                                                            "task": found.task}}
        return payload, found

    def _parts(self, found, need: list, files: list) -> dict:
        """The parts the runtime asked for ([path, part index] each), read from pgml.files and checked,
        up to PART_BYTES per request (the runtime asks again for the rest)."""
        known = {path: parts for path, parts, _ in files}
        sent, size = {}, 0
        for path, index in need:
            if path not in known or not isinstance(index, int) or not 0 <= index < len(known[path]):
                raise self.client.malformed(f"a request for a part the model does not have: {path} part {index}")
            data = found.read(path, index)
            sent[known[path][index]] = base64.b64encode(data).decode()
            size += len(data)
            if size >= PART_BYTES:
                break
        return sent

    def _with_files(self, call, payload: dict, found):
        """call(payload) until the runtime has every part of a tuned model's files."""
        files = payload["deployed"]["files"] if found is not None else []
        for _ in range(2 * sum(len(parts) for _, parts, _ in files) + 2):
            answer = call(payload)
            if not (isinstance(answer, dict) and "need" in answer):
                return answer
            payload = {**payload, "parts": self._parts(found, answer["need"], files)}
        raise self.client.malformed(f"requests for the files of {payload['model']} again and again (check the "
                                    "runtime's models cache, its disk and its log)")

    def transform(self, request: TransformRequest):
        payload, found = self._transform_payload(request)
        return self._with_files(lambda p: self._post("transform", p), payload, found)["result"]

    def transform_stream(self, request: TransformRequest):
        payload, found = self._transform_payload(request)

        def first(p):
            """The stream's first line (the runtime's need for files, or the first piece)."""
            def start(client, base):
                lines = client.stream(f"{base}/stream", p)
                return lines, next(lines, None)

            lines, line = self._on_replica(start)
            answer = json.loads(line) if line else {}
            if "need" in answer:
                lines.close()
                return answer
            return {"lines": lines, "first": answer}

        started = self._with_files(first, payload, found)
        return self._pieces(started["first"], started["lines"])

    @staticmethod
    def _pieces(first: dict, lines):
        try:
            answer = first
            while True:
                if "error" in answer:
                    error = answer["error"]
                    raise PgmlError(error.get("message") or "the runtime failed mid-stream",
                                    sqlstate=error.get("sqlstate") or "38000", hint=error.get("hint"),
                                    detail=error.get("detail"))
                if "piece" in answer:
                    yield answer["piece"]
                line = next(lines, None)
                if line is None:
                    return
                if line:
                    answer = json.loads(line)
                else:
                    answer = {}
        finally:
            lines.close()

    def embed(self, request: EmbedRequest):
        return unpack_array(self._post("embed", {"model": request.model, "texts": request.texts,
                                                 "build": request.build, "call": request.call,
                                                 "policy": policy(request.settings)}))

    def rank(self, request: RankRequest):
        answer = self._post("rank", {"model": request.model, "query": request.query, "documents": request.documents,
                                     "build": request.build, "call": request.call, "policy": policy(request.settings)})
        return [(int(i), float(score), text) for i, score, text in answer["ranked"]]

    def state(self) -> dict | None:
        """What the route's application reports: its loaded models, running and cancelled calls, files
        received (None: the runtime has not deployed it)."""
        try:
            return self.client.post(f"{self.base}/state", {})
        except PgmlError as exc:
            if getattr(exc, "status", None) == 404:
                return None
            raise

    def loaded(self) -> tuple[list[dict], str]:
        """pgml.loaded_models' rows of this runtime (as dicts), and its name there."""
        state = self.state()
        return (state or {}).get("loaded", []), f"ray {self.client.base_url} {self.app}"

    def check(self, route, settings: Settings) -> str:
        """Reachable and authenticated (the serve command's health), and the route's model
        answering when the route names one model (a glob names none)."""
        health = self.client.post(f"{PREFIX}/health", {})
        found = (f"{self.client.base_url}: pgml_plpy {health.get('version')} on Ray {health.get('ray')}, "
                 f"{health.get('nodes')} node(s)")
        if health.get("version") != __version__:
            raise ObjectNotInPrerequisiteState(f"{found}, but this database's pgml_plpy is {__version__}",
                                               hint="Run the same pgml_plpy release in the database's venv and the runtime's.")
        if routes.is_glob(route.model):
            return f"{found}; models matching {route.model} load on first use"
        answer = self._post("check", {"model": route.model, "task": route.task, "policy": policy(settings)})
        return f"{found}; {answer['detail']}"


def runtime(route) -> RayRuntime:
    return RayRuntime(route)
