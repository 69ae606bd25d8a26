"""pgml.embed in each backend vs routed to the shared runtime (Ray Serve), in one run.

all-MiniLM-L6-v2, one throwaway PostgreSQL, the serve command on loopback. Prints, for both modes:
  - the first statement on a new connection, pgml.embed (the runtime warm; the backend pays for importing
    pgml_plpy and, in-backend, torch and the model);
  - the PSS of a backend after that call, and whether it imported torch;
  - 8 concurrent clients each calling pgml.embed with one short text, rounds alternating between the
    modes: calls per second, and the total PSS of the 8 backends plus (routed) every process of the
    runtime;
  - the runtime's processes, each with its PSS;
  - the memory one more connection adds (its backend's PSS once it has called pgml.embed).
In-backend calls run at their best here: torch_threads 1 per backend (several backends share the
cores); the runtime's replica runs torch with the route's num_cpus threads (--cpus, default 1).
CPU time per call (the backends', plus the runtime's processes' when routed) does not depend on
what else the machine runs; calls per second do.

    .venv/bin/python bench/routed_bench.py [--clients 8] [--seconds 15] [--rounds 3] [--cpus 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time

from common import REPO, WORDS, database

sys.path.insert(0, str(REPO / "scripts"))

from localengine import free_port  # noqa: E402
from localserve import LocalServe  # noqa: E402

MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def pss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("Pss:")) / 1024


def cpu_seconds(pids) -> float:
    """User + system CPU time the processes used so far."""
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(bytes(1), b" ").decode(errors="replace")
    except OSError:
        return ""


def process_name(pid: int, serve_pid: int) -> str:
    """A short name for one of the runtime's processes: its Ray actor or task (ray::...), else its program."""
    if pid == serve_pid:
        return "serve command"
    args = cmdline(pid).split()
    if not args:
        return "?"
    if args[0].startswith("ray::"):
        return args[0][len("ray::"):]
    if "python" in os.path.basename(args[0]):  # a Ray script: its file's name
        return os.path.basename(next((a for a in args[1:] if a.endswith(".py")), args[0]))
    return os.path.basename(args[0])


def heavy(conn) -> bool:
    seen = []
    conn.add_notice_handler(lambda d: seen.append(d.message_primary))
    conn.execute("DO $$ import sys; plpy.notice(str('torch' in sys.modules)) $$ LANGUAGE plpython3u")
    return seen[-1] == "True"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--first-calls", type=int, default=3)
    parser.add_argument("--cpus", type=float, default=1, help="num_cpus of the route (the replica's torch threads)")
    parser.add_argument("--words", type=int, default=0,
                        help="words per text (default 0: a short text of four words)")
    parser.add_argument("--dsn")
    opts = parser.parse_args()

    import psycopg
    from psycopg.types.json import Jsonb

    load_before = f"{os.getloadavg()[0]:.1f}"

    with database(opts.dsn) as dsn, psycopg.connect(dsn, autocommit=True) as admin, \
            LocalServe(REPO / ".venv", ["--port", str(free_port())]) as serve:
        route = [{"model": MODEL, "task": "embedding", "runtime": "ray", "url": serve.url, "num_cpus": opts.cpus}]
        admin.execute("UPDATE pgml.settings SET value = '1' WHERE name = 'torch_threads'")

        def mode(routed: bool) -> None:
            admin.execute("UPDATE pgml.settings SET value = %s WHERE name = 'runtimes'", (Jsonb(route if routed else []),))

        def connect():
            return psycopg.connect(dsn, autocommit=True)

        mode(True)
        with connect() as c:
            c.execute("SELECT pgml.embed(%s, 'warm the runtime')", (MODEL,))

        first, backend_pss, imports = {}, {}, {}
        for routed in (False, True):
            mode(routed)
            times = []
            for _ in range(opts.first_calls):
                with connect() as c:
                    started = time.perf_counter()
                    c.execute("SELECT pgml.embed(%s, 'a first call')", (MODEL,))
                    times.append(time.perf_counter() - started)
                    pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
                    backend_pss.setdefault(routed, []).append(pss_mb(pid))
                    imports[routed] = heavy(c)
            first[routed] = statistics.median(times)

        pools = {}
        for routed in (False, True):
            mode(routed)
            pools[routed] = [connect() for _ in range(opts.clients)]
            for c in pools[routed]:
                c.execute("SELECT pgml.embed(%s, 'warm')", (MODEL,))

        backend_pids = {k: [c.execute("SELECT pg_backend_pid()").fetchone()[0] for c in pools[k]] for k in pools}
        cpu = {False: [], True: []}  # CPU seconds per call of the backends (+ the runtime's processes)

        def text(i: int, n: int) -> str:
            if not opts.words:
                return f"short text {i} {n}"
            return " ".join(WORDS[(i * 7 + n + j) % len(WORDS)] for j in range(opts.words))

        def parts(routed: bool) -> dict[str, list[int]]:
            """The processes whose CPU time is counted, by part."""
            found = {"backends": backend_pids[routed]}
            for pid in serve._session_pids() if routed else []:
                name = cmdline(pid)
                part = ("runtime: serve command" if pid == serve.proc.pid else
                        "runtime: model replica" if ":Models" in name else "runtime: the rest of Ray")
                found.setdefault(part, []).append(pid)
            return found

        def throughput(routed: bool) -> float:
            mode(routed)
            counted = parts(routed)
            used = {part: cpu_seconds(pids) for part, pids in counted.items()}
            counts, stop = [0] * opts.clients, threading.Event()
            start = threading.Barrier(opts.clients + 1)

            def client(i, c):
                start.wait()
                while not stop.is_set():
                    c.execute("SELECT pgml.embed(%s, %s)", (MODEL, text(i, counts[i])))
                    counts[i] += 1

            threads = [threading.Thread(target=client, args=(i, c)) for i, c in enumerate(pools[routed])]
            for t in threads:
                t.start()
            start.wait()
            began = time.perf_counter()
            time.sleep(opts.seconds)
            stop.set()
            for t in threads:
                t.join()
            cpu[routed].append({part: (cpu_seconds(pids) - used[part]) / sum(counts) for part, pids in counted.items()})
            return sum(counts) / (time.perf_counter() - began)

        import httpx

        from pgml_plpy.runtimes.ray import PREFIX, app_name, deployment_of

        def batches() -> tuple[int, int]:
            app = app_name(deployment_of(route[0]))
            found = httpx.post(f"{serve.url}{PREFIX}/m/{app}/state", json={}, timeout=60).json()
            return found["batches"], found["batched"]

        rates = {False: [], True: []}
        runs_before, calls_before = batches()
        for _ in range(opts.rounds):
            for routed in (False, True):
                rates[routed].append(throughput(routed))
        runs, calls = batches()
        mean_batch = (calls - calls_before) / max(1, runs - runs_before)
        rate = {k: statistics.median(v) for k, v in rates.items()}

        backends = {k: sum(pss_mb(c.execute("SELECT pg_backend_pid()").fetchone()[0]) for c in pools[k])
                    for k in pools}
        processes = sorted(((process_name(pid, serve.proc.pid), pss_mb(pid)) for pid in serve._session_pids()),
                           key=lambda p: -p[1])
        runtime_pss = sum(mb for _, mb in processes)
        total = {False: backends[False], True: backends[True] + runtime_pss}
        per_connection = {k: statistics.median(v) for k, v in backend_pss.items()}
        for c in pools[False] + pools[True]:
            c.close()
        mode(False)

    print(f"all-MiniLM-L6-v2; {opts.clients} clients, texts of {opts.words or 4} words, {opts.rounds} rounds of {opts.seconds:g} s each mode; "
          f"runtime replica num_cpus {opts.cpus}; backends torch_threads 1; load average before "
          f"{load_before}, after {os.getloadavg()[0]:.1f}")
    for routed, name in ((False, "in-backend"), (True, "routed    ")):
        print(f"  {name}: first call on a new connection {first[routed]:6.2f} s (median of {opts.first_calls}); "
              f"backend PSS {per_connection[routed]:6.1f} MB; torch imported: {imports[routed]}")
    print(f"  throughput in-backend {rate[False]:7.1f} calls/s, routed {rate[True]:7.1f} calls/s "
          f"(medians; rounds {[round(r) for r in rates[False]]} / {[round(r) for r in rates[True]]}) "
          f"-> routed / in-backend {rate[True] / rate[False]:.2f}")
    per_call = {k: {part: statistics.median(r[part] for r in v) * 1000 for part in v[0]} for k, v in cpu.items()}
    total_cpu = {k: sum(v.values()) for k, v in per_call.items()}
    print(f"  the runtime ran the routed calls in batches of {mean_batch:.1f} on average")
    print(f"  CPU per call: in-backend {total_cpu[False]:.1f} ms (the backends), routed {total_cpu[True]:.1f} ms "
          f"({', '.join(f'{part} {ms:.1f}' for part, ms in per_call[True].items())}) "
          f"-> routed / in-backend {total_cpu[True] / total_cpu[False]:.2f}")
    print(f"  total PSS in-backend {total[False]:7.0f} MB ({opts.clients} backends); routed {total[True]:7.0f} MB "
          f"({opts.clients} backends {backends[True]:.0f} MB + runtime {runtime_pss:.0f} MB) "
          f"-> routed / in-backend {total[True] / total[False]:.2f}")
    print(f"  the runtime's processes (PSS): {', '.join(f'{name} {mb:.0f} MB' for name, mb in processes)}")
    print(f"  each extra connection adds: in-backend {per_connection[False]:.0f} MB, routed "
          f"{per_connection[True]:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
