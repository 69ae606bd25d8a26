"""A serving engine run as a local subprocess, for the tests and the benchmark (stdlib only).

    engine = Engine(["python", "-m", "transformers.cli.transformers", "serve", ...], port).start()
    engine.url        # http://127.0.0.1:PORT/v1, answering once start() returns
    engine.stop()     # SIGTERM, then SIGKILL if it lingers

start() waits on a real signal: GET /v1/models answers (any HTTP status: a key-protected engine
answers 401), with a generous deadline, and fails with the engine's log if it exits first.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

READY_DEADLINE = 600.0  # seconds an engine may take to start on a busy machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Engine:
    def __init__(self, command: list[str], port: int, *, env: dict | None = None, scheme: str = "http",
                 ca_file: str | None = None):
        self.command = command
        self.port = port
        self.env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **(env or {})}
        self.url = f"{scheme}://127.0.0.1:{port}/v1"
        self.ca_file = ca_file
        self.log = Path(tempfile.mkstemp(prefix="pgml_engine_", suffix=".log")[1])
        self.process: subprocess.Popen | None = None

    def start(self) -> "Engine":
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                            start_new_session=True)
        context = ssl.create_default_context(cafile=self.ca_file) if self.url.startswith("https") else None
        deadline = time.monotonic() + READY_DEADLINE
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the engine exited with {self.process.returncode}:\n{self.tail()}")
            try:
                urllib.request.urlopen(f"{self.url}/models", timeout=10, context=context).close()
                return self
            except urllib.error.HTTPError:
                return self  # it answers (a key-protected engine says 401)
            except (OSError, urllib.error.URLError):
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"the engine did not answer within {READY_DEADLINE:g} s:\n{self.tail()}")
                time.sleep(0.5)

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def kill(self) -> None:
        """SIGKILL, as when the engine dies."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.unlink(missing_ok=True)


def transformers_serve(port: int, *options: str, python: str = sys.executable) -> Engine:
    """`transformers serve` on 127.0.0.1:port, on the CPU (options: a model to pin, --continuous-batching...)."""
    return Engine([python, "-m", "transformers.cli.transformers", "serve", *options, "--host", "127.0.0.1",
                   "--port", str(port), "--device", "cpu"], port)
