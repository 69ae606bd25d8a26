"""Past one machine: the serve command joins a real multi-node Ray cluster built here.

Three `ray start` nodes on this machine (loopback, ports of their own): a head without the
custom resource the model replicas ask for (the serve command's --replica-resources), and two
workers with it: one on the serve command's address (127.0.0.1), one on another (127.0.0.2,
as another machine would be). The replica lands on a worker and answers SQL calls; that node is
killed (every process of it, as a machine that dies), and the calls are answered again once Ray
Serve has started the replica on the other worker. The serve command listens on loopback, so a
replica on 127.0.0.1 is called on its own port and one on 127.0.0.2 through the serve command: the test
sees both, in one order or the other.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from pgtest import eventually, one
from psycopg.types.json import Jsonb

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

from localengine import free_port  # noqa: E402
from localserve import LocalServe  # noqa: E402

VENV = Path(os.environ.get("PGML_VENV", REPO / ".venv"))
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
# The cluster's own token (Ray's token authentication), shared by its nodes and the serve command, and
# health checks that find a dead node within seconds (Ray's defaults take about half a minute).
RAY_ENV = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": os.urandom(16).hex(), "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_health_check_period_ms": "1000", "RAY_health_check_timeout_ms": "3000",
           "RAY_health_check_failure_threshold": "5"}


def session_pids(sid: int) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as fh:
                if int(fh.read().rsplit(")", 1)[1].split()[3]) == sid:
                    found.append(int(pid))
        except (OSError, ValueError, IndexError):
            continue
    return found


class Node:
    """One `ray start` node; its processes share the OS session the command started in."""

    def __init__(self, *args: str, ip: str = "127.0.0.1"):
        self.ip = ip
        self.command = subprocess.Popen([str(VENV / "bin" / "python"), "-m", "ray.scripts.scripts", "start",
                                         "--node-ip-address", ip, "--num-cpus", "1", "--disable-usage-stats",
                                         *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        start_new_session=True, env={**os.environ, **RAY_ENV})
        self.sid = self.command.pid

    def started(self) -> "Node":
        """The node, once `ray start` has finished (it exits when the node runs)."""
        output = self.command.communicate(timeout=300)[0]
        assert self.command.returncode == 0, output
        return self

    def kill(self) -> None:
        for pid in session_pids(self.sid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def holds(self, pid: int) -> bool:
        return pid in session_pids(self.sid)


@pytest.fixture
def nodes():
    started = []

    def start(*args, **kwargs):
        started.append(Node(*args, **kwargs))
        return started[-1]

    yield start
    deadline = time.monotonic() + 60
    while any(session_pids(n.sid) for n in started) and time.monotonic() < deadline:
        for node in started:  # again until none is left: a node still starting may start more processes
            node.kill()
        time.sleep(0.5)
    assert not any(session_pids(n.sid) for n in started), "Ray processes were left behind"


def state(conn):
    seen = []
    conn.add_notice_handler(lambda d: seen.append(d.message_primary))
    conn.execute("SELECT pgml._activate()")
    conn.execute("DO $$\nimport json\nfrom pgml_plpy.server import _settings\nfrom pgml_plpy.runtimes import "
                 "runtime_of\nplpy.notice(json.dumps(runtime_of(_settings(plpy).runtimes[0]).state()))\n"
                 "$$ LANGUAGE plpython3u")
    import json

    return json.loads(seen[-1])


def test_a_replica_on_another_node_is_rescheduled_when_its_node_goes(nodes, conn, dsn):
    head_port = free_port()
    nodes("--head", "--port", str(head_port), "--include-dashboard=false").started()
    workers = [nodes("--address", f"127.0.0.1:{head_port}", "--resources", '{"pgml_worker": 1}', ip=ip).started()
               for ip in ("127.0.0.1", "127.0.0.2")]  # one after the other: a busy GCS lets concurrent joins time out
    serve = LocalServe(VENV, ["--port", str(free_port()), "--address", f"127.0.0.1:{head_port}",
                              "--replica-resources", '{"pgml_worker": 1}'], env=RAY_ENV).start()
    try:
        assert "joining the Ray cluster" in serve.output()
        conn.execute("UPDATE pgml.settings SET value = %s WHERE name = 'runtimes'",
                     (Jsonb([{"model": MINILM, "runtime": "ray", "url": serve.url, "timeout": 120}]),))
        with psycopg.connect(dsn, autocommit=True) as c:
            vector = one(c, "SELECT pgml.embed(%s, 'past one machine')", (MINILM,))
            found = state(c)
            holder = [w for w in workers if w.holds(found["pid"])]
            assert len(holder) == 1, "the replica is not on a worker with the resource (the head has none)"
            # on its own port where the serve command's loopback reaches it, else through the serve command
            assert (found["direct"] > 0) == (holder[0].ip == "127.0.0.1"), (holder[0].ip, found)
            other = workers[1 - workers.index(holder[0])]
            holder[0].kill()
            deadline = time.monotonic() + 400
            while True:
                try:
                    again = one(c, "SELECT pgml.embed(%s, 'past one machine')", (MINILM,))
                    break
                except psycopg.Error as exc:
                    assert exc.sqlstate.startswith("08") and time.monotonic() < deadline, (exc.sqlstate, str(exc))
                    time.sleep(1)
            assert again == pytest.approx(vector, abs=1e-5)
            found = state(c)
            assert other.holds(found["pid"])
            if other.ip == "127.0.0.1":  # the backend finds the replica's own port (it looks up again within 10 s)
                eventually(lambda: one(c, "SELECT pgml.embed(%s, 'x')", (MINILM,)) and state(c)["direct"] > 0,
                           120, 1, "calls on the moved replica's own port")
            else:
                assert found["direct"] == 0, found
    finally:
        conn.execute("UPDATE pgml.settings SET value = '[]' WHERE name = 'runtimes'")
        assert serve.stop() == 0, serve.output()[-3000:]
        assert serve.wait_gone() == []
