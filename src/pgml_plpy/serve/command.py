"""python -m pgml_plpy.serve: the shared runtime on Ray Serve.

    python -m pgml_plpy.serve --port 8000
    python -m pgml_plpy.serve --port 8443 --host 10.0.0.5 --token-file /etc/pgml/token \\
        --tls-cert /etc/pgml/cert.pem --tls-key /etc/pgml/key.pem --address ray-head:6379

Starts a local Ray (or joins the cluster given by --address / RAY_ADDRESS) and Ray Serve
without its HTTP proxy, serves HTTP at HOST:PORT itself (app.Front: health, deploying the
model applications, and calls passed to their replicas through Serve's deployment handles),
prints a line with "ready" once it accepts calls, and runs until SIGTERM or SIGINT; then it
stops its HTTP server and what it started (the local Ray, or on a joined cluster its own
applications, and Serve when it started Serve). Model applications are deployed on the
first call that routes to them.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import hashlib
import ipaddress
import json
import logging
import os
import signal
import stat
import sys
import threading

from .. import __version__

LOOPBACK = ("localhost",)


def _loopback(host: str) -> bool:
    if host in LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pgml_plpy.serve", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=8000, help="HTTP port of the runtime (default 8000)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; any other needs --token-file and TLS)")
    p.add_argument("--address", default=None,
                   help="join this Ray cluster (default: RAY_ADDRESS, else start a local Ray)")
    p.add_argument("--token-file", help="file holding the token callers must send (routes' token_file)")
    p.add_argument("--tls-cert", help="TLS certificate (PEM) the runtime serves HTTPS with")
    p.add_argument("--tls-key", help="the TLS certificate's private key (PEM)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: all)")
    p.add_argument("--num-gpus", type=int, default=None, help="GPUs of the local Ray (default: all)")
    p.add_argument("--max-models", type=int, default=8,
                   help="most models one replica keeps loaded, least recently used unloaded first (default 8)")
    p.add_argument("--max-model-bytes", type=int, default=None,
                   help="most bytes of weights one replica keeps loaded (default: no limit)")
    p.add_argument("--models-cache", default=None,
                   help="folder for tuned models' files (default ~/.cache/pgml_plpy/models)")
    p.add_argument("--replica-resources", type=json.loads, default={},
                   help='custom Ray resources every model replica needs, as JSON, e.g. \'{"pgml": 1}\'')
    return p


def _secret_file(path: str, what: str) -> str | None:
    """Why the file may not hold a secret (None: fine): it must exist and not be readable by every user."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return f"{what} {path}: {exc.strerror}"
    if mode & stat.S_IRWXO:
        return f"{what} {path} can be read by every OS user: chmod o-rwx {path}"
    return None


def problems(opts) -> list[str]:
    """What keeps the command from starting safely."""
    found = []
    if not 0 < opts.port < 65536:
        found.append(f"--port {opts.port} is not a TCP port")
    if bool(opts.tls_cert) != bool(opts.tls_key):
        found.append("--tls-cert and --tls-key go together")
    for path, what in ((opts.token_file, "--token-file"), (opts.tls_key, "--tls-key")):
        if path:
            found += [p for p in [_secret_file(path, what)] if p]
    if opts.token_file and not found:
        with open(opts.token_file, encoding="utf-8") as fh:
            if not fh.read().strip():
                found.append(f"--token-file {opts.token_file} is empty")
    if not _loopback(opts.host):
        if not opts.token_file:
            found.append(f"--host {opts.host} is not a loopback address: callers must authenticate "
                         "(--token-file)")
        if not opts.tls_cert:
            found.append(f"--host {opts.host} is not a loopback address: the token and the data must travel "
                         "encrypted (--tls-cert and --tls-key)")
    if not isinstance(opts.replica_resources, dict) or not all(
            isinstance(k, str) and isinstance(v, (int, float)) and v >= 0 for k, v in opts.replica_resources.items()):
        found.append("--replica-resources must be a JSON object of resource names to amounts")
    if opts.max_models < 1 or (opts.max_model_bytes is not None and opts.max_model_bytes < 1):
        found.append("--max-models and --max-model-bytes must be positive")
    return found


def say(text: str) -> None:
    print(f"pgml_plpy serve: {text}", flush=True)


def main(argv=None) -> int:
    opts = parser().parse_args(argv)
    wrong = problems(opts)
    if wrong:
        for line in wrong:
            print(f"pgml_plpy serve: refusing to start: {line}", file=sys.stderr)
        return 2
    token_sha256 = None
    if opts.token_file:
        with open(opts.token_file, encoding="utf-8") as fh:
            token_sha256 = hashlib.sha256(fh.read().strip().encode()).hexdigest()

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    import ray
    from ray import serve
    from ray.serve.config import ProxyLocation

    from .app import LOGGING, Front, listen

    stop = threading.Event()
    address = opts.address or os.environ.get("RAY_ADDRESS") or None
    local = address is None
    init = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": True,
            "namespace": "pgml_plpy"}
    if local:
        # Ray starts its workers at nice 15 by default: model replicas answer SQL calls and must not lose
        # the CPU to everything else on a busy database machine (backends run at nice 0).
        os.environ.setdefault("RAY_worker_niceness", "0")
        init.update(address="local", num_cpus=opts.num_cpus, num_gpus=opts.num_gpus)
        if _loopback(opts.host):
            init["_node_ip_address"] = "127.0.0.1"  # Ray's own ports stay on loopback too
    say(f"{'starting a local Ray' if local else f'joining the Ray cluster at {address}'} (pgml_plpy {__version__}, "
        f"Ray {ray.__version__})")
    ray.init(address=address if not local else "local", **{k: v for k, v in init.items() if k != "address"})
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    started_serve = local or not _serve_running()
    http = None
    try:
        # No proxy: this process answers HTTP itself and reaches the replicas through handles.
        serve.start(proxy_location=ProxyLocation.Disabled, logging_config=LOGGING)
        logging.getLogger("ray.serve").setLevel(logging.WARNING)  # deploys: this command says what it does
        config = {"token_sha256": token_sha256, "max_models": opts.max_models,
                  "max_model_bytes": opts.max_model_bytes, "models_cache": opts.models_cache,
                  "replica_resources": opts.replica_resources, "loopback": _loopback(opts.host),
                  "node_ip": ray.util.get_node_ip_address(),
                  "tls_cert": opts.tls_cert and os.path.abspath(opts.tls_cert),
                  "tls_key": opts.tls_key and os.path.abspath(opts.tls_key)}
        try:
            http = _Http(listen(Front(config), opts.host, opts.port, config["tls_cert"], config["tls_key"]))
        except OSError as exc:  # the port taken, a certificate that cannot be read
            say(f"cannot serve HTTP at {opts.host}:{opts.port}: {exc}")
            return 1
        session = ray._private.worker.global_worker.node.get_session_dir_path()
        say(f"Ray session {session}")
        say(f"ready at {http.url} (routes: {{\"runtime\": \"ray\", \"url\": \"{http.url}\"}})")
        while not stop.wait(1.0):
            if not http.thread.is_alive():
                say("the HTTP server stopped")
                return 1
        say("stopping")
    finally:
        if http is not None:
            http.stop()
        _stop(serve, ray, started_serve)
    return 0


class _Http:
    """The serve command's HTTP server, running in a thread of its own with its own event loop
    (the main thread waits for signals); started by the listen() coroutine given."""

    def __init__(self, listening):
        started = concurrent.futures.Future()

        async def run():
            try:
                self.server, serving, self.url = await listening
            except BaseException as exc:  # noqa: BLE001 - raised in the main thread
                started.set_exception(exc)
                return
            started.set_result(None)
            await serving

        self.thread = threading.Thread(target=asyncio.run, args=(run(),), name="pgml_plpy http", daemon=True)
        self.thread.start()
        started.result()

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def _serve_running() -> bool:
    import ray
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    try:
        ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
        return True
    except ValueError:
        return False


def _stop(serve, ray, started_serve: bool) -> None:
    """Stop what this command started: Serve when it started it, else its own applications; then
    the local Ray (ray.shutdown stops the processes a local ray.init started)."""
    try:
        if started_serve:
            serve.shutdown()
        else:
            for name in list(serve.status().applications):
                if name.startswith("pgml-"):
                    serve.delete(name)
    finally:
        ray.shutdown()
