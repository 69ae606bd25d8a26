"""The shared runtime (python -m pgml_plpy.serve) as a child process, for tests and benchmarks (stdlib only).

    with LocalServe(venv, ["--port", "8000", "--num-cpus", "2"]) as serve:
        ...  # serve.url, serve.output()

It waits for the command's "ready" line (a real signal, with a generous deadline), and on exit
sends SIGTERM and waits for the command to stop what it started. The command runs in an OS
session of its own, so leftovers() finds any process it started that is still running.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

READY = re.compile(r"pgml_plpy serve: ready at (\S+)")


class LocalServe:
    def __init__(self, venv: str | os.PathLike, args: list[str], env: dict | None = None, ready_within: float = 420):
        self.cmd = [str(Path(venv) / "bin" / "python"), "-m", "pgml_plpy.serve", *args]
        self.env = {**os.environ, **(env or {})}
        self.ready_within = ready_within
        self.lines: list[str] = []
        self.url: str | None = None
        self.proc: subprocess.Popen | None = None

    def output(self) -> str:
        return "".join(self.lines)

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            if (found := READY.search(line)) is not None:
                self.url = found.group(1)

    def start(self) -> "LocalServe":
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=self.env, start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + self.ready_within
        while self.url is None:
            if self.proc.poll() is not None:
                time.sleep(0.5)  # the reader's last lines
                raise RuntimeError(f"the serve command exited ({self.proc.returncode}):\n{self.output()[-4000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the serve command was not ready within {self.ready_within} s:\n"
                                   f"{self.output()[-4000:]}")
            time.sleep(0.2)
        return self

    def stop(self, within: float = 180) -> int:
        """SIGTERM, then wait for the command to stop (SIGKILL to what is left past `within`)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(within)
            except subprocess.TimeoutExpired:
                for pid in self._session_pids():
                    os.kill(pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode

    def _session_pids(self) -> list[int]:
        """The processes of the command's OS session (it starts one: every Ray process it starts is in it)."""
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == self.proc.pid:  # the session id
                found.append(int(pid))
        return found

    def leftovers(self) -> list[str]:
        """Processes the command started that still run (none once it stopped cleanly)."""
        left = []
        for pid in self._session_pids():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    left.append(f"{pid} {fh.read().replace(bytes(1), b' ').decode(errors='replace')[:120]}")
            except OSError:
                continue
        return left

    def wait_gone(self, within: float = 60) -> list[str]:
        """The leftovers once they had `within` seconds to exit."""
        deadline = time.monotonic() + within
        while (left := self.leftovers()) and time.monotonic() < deadline:
            time.sleep(0.5)
        return left

    def __enter__(self) -> "LocalServe":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
