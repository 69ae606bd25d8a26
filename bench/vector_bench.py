"""Vector search over REAL[] in one run: pgml.nearest against ORDER BY <similarity> LIMIT k.

A table of random REAL[dims] vectors (seeded, loaded by binary COPY), one backend, one core
(no parallel workers), alternating rounds. Prints each figure as wall time and as the backend's
CPU time (read from /proc when the server runs on this machine: on a busy machine it is the
steadier of the two):
  - the k nearest by `ORDER BY <main's SQL cosine_distance> LIMIT k` (the SQL function as it was
    before pgml.nearest), by `ORDER BY pgml.cosine_distance(e, q) LIMIT k` (today's function) and
    by pgml.nearest, with the ratios, after checking that all three give the same rows and
    distances (1e-6);
  - where pgml.nearest's time goes (its DEBUG line: reading the ranges of blocks through SQL
    into float64, computing distances), next to a plain scan of the table;
  - the per-row cost of each way of writing cosine_distance without C: main's SQL (SET
    search_path), the same SQL schema-qualified without SET, PL/Python on real[] (a Python
    float per element), PL/Python on the arrays' bytes with and without SET on the PL/Python
    function (pgml.cosine_distance is the inlined SQL wrapper of the one without).

    .venv/bin/python bench/vector_bench.py [--rows 20000] [--dims 384] [--k 10] [--rounds 3] [--dsn DSN]

Brute force over more than --brute-force-rows rows (default 100000) is left out (main's SQL
function needs minutes for a million rows).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

import numpy as np
from common import database

# The alternatives measured, in a schema of their own. sql_set is main's pgml.cosine_distance.
ALTERNATIVES = """
DROP SCHEMA IF EXISTS bench_alt CASCADE;
CREATE SCHEMA bench_alt;
CREATE FUNCTION bench_alt._dimension_mismatch(a real[], b real[]) RETURNS float8
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  RAISE EXCEPTION 'pgml: vectors of different dimensions: % and %', cardinality(a), cardinality(b)
    USING ERRCODE = '22000', HINT = 'Compare embeddings made by the same model.';
END $$;
CREATE FUNCTION bench_alt.sql_set(a real[], b real[]) RETURNS float8
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
SELECT CASE WHEN cardinality(a) <> cardinality(b) THEN bench_alt._dimension_mismatch(a, b)
       ELSE (SELECT 1 - sum(x::float8 * y) / nullif(sqrt(sum(x::float8 * x) * sum(y::float8 * y)), 0)
             FROM unnest(a, b) AS t(x, y)) END $$;
CREATE FUNCTION bench_alt.sql_qualified(a real[], b real[]) RETURNS float8
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
SELECT CASE WHEN pg_catalog.cardinality(a) OPERATOR(pg_catalog.<>) pg_catalog.cardinality(b)
            THEN bench_alt._dimension_mismatch(a, b)
       ELSE (SELECT 1::pg_catalog.float8 OPERATOR(pg_catalog.-)
                    (pg_catalog.sum(x::pg_catalog.float8 OPERATOR(pg_catalog.*) y) OPERATOR(pg_catalog./)
                     CASE WHEN pg_catalog.sum(x::pg_catalog.float8 OPERATOR(pg_catalog.*) x)
                               OPERATOR(pg_catalog.*) pg_catalog.sum(y::pg_catalog.float8 OPERATOR(pg_catalog.*) y)
                               OPERATOR(pg_catalog.=) 0 THEN NULL
                          ELSE pg_catalog.sqrt(pg_catalog.sum(x::pg_catalog.float8 OPERATOR(pg_catalog.*) x)
                               OPERATOR(pg_catalog.*) pg_catalog.sum(y::pg_catalog.float8 OPERATOR(pg_catalog.*) y))
                     END)
             FROM ROWS FROM (pg_catalog.unnest(a), pg_catalog.unnest(b)) AS t(x, y)) END $$;
CREATE FUNCTION bench_alt.plpython_list(a real[], b real[]) RETURNS float8
LANGUAGE plpython3u IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
import math
import numpy as np
x, y = np.array(a, dtype=np.float64), np.array(b, dtype=np.float64)
norms = float(x @ x) * float(y @ y)
return None if norms == 0 else 1.0 - float(x @ y) / math.sqrt(norms) $$;
CREATE FUNCTION bench_alt._similarity_set(kind text, a bytea, b bytea) RETURNS float8
LANGUAGE plpython3u IMMUTABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].similarity(plpy, kind, a, b) $$;
CREATE FUNCTION bench_alt.bytes_set(a real[], b real[]) RETURNS float8
LANGUAGE sql IMMUTABLE STRICT
AS $$ SELECT bench_alt._similarity_set('cosine_distance', pgml._array_bytes(a), pgml._array_bytes(b)) $$;
"""
PER_ROW = {  # label -> function
    "SQL, SET search_path (main's)": "bench_alt.sql_set",
    "SQL, schema-qualified, no SET": "bench_alt.sql_qualified",
    "PL/Python on real[] (lists)": "bench_alt.plpython_list",
    "PL/Python on bytes, SET search_path": "bench_alt.bytes_set",
    "PL/Python on bytes, no SET (chosen)": "pgml.cosine_distance",
}
PER_ROW_ROWS = 20000


def load(conn, rows: int, dims: int, rng) -> None:
    """rows random vectors into bench_vectors (id bigint, e real[]) through COPY ... (FORMAT binary)."""
    conn.execute("DROP TABLE IF EXISTS bench_vectors")
    conn.execute("CREATE UNLOGGED TABLE bench_vectors (id bigint, e real[])")
    row = np.dtype([("fields", ">i2"), ("id_size", ">i4"), ("id", ">i8"), ("e_size", ">i4"), ("ndim", ">i4"),
                    ("has_null", ">i4"), ("element", ">u4"), ("dim", ">i4"), ("lbound", ">i4"),
                    ("e", [("size", ">i4"), ("value", ">f4")], (dims,))])
    with conn.cursor().copy("COPY bench_vectors (id, e) FROM STDIN WITH (FORMAT binary)") as copy:
        copy.write(b"PGCOPY\n\xff\r\n\x00" + bytes(8))
        for first in range(0, rows, 20000):
            n = min(20000, rows - first)
            chunk = np.zeros(n, row)
            chunk["fields"], chunk["id_size"], chunk["id"] = 2, 8, np.arange(first + 1, first + n + 1)
            chunk["e_size"] = row.itemsize - row.fields["ndim"][1]
            chunk["ndim"], chunk["element"], chunk["dim"], chunk["lbound"] = 1, 700, dims, 1
            chunk["e"]["size"] = 4
            chunk["e"]["value"] = rng.standard_normal((n, dims), dtype=np.float32)
            copy.write(chunk.tobytes())
        copy.write(b"\xff\xff")
    conn.execute("VACUUM ANALYZE bench_vectors")


class Clock:
    """Wall time and, where this machine can read /proc/<pid>/stat, the backend's CPU time: on a busy
    machine the CPU time shows what a statement costs when others leave it waiting."""

    def __init__(self, conn):
        self.conn = conn
        self.stat = f"/proc/{conn.execute('SELECT pg_backend_pid()').fetchone()[0]}/stat"
        self.tick = os.sysconf("SC_CLK_TCK")

    def cpu(self) -> float:
        try:
            with open(self.stat) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # a server elsewhere (--dsn)
            return math.nan
        return (int(fields[11]) + int(fields[12])) / self.tick  # utime + stime

    def time(self, run) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), self.cpu()
        run()
        return time.perf_counter() - wall, self.cpu() - cpu

    def rounds(self, rounds: int, runs: dict) -> dict[str, tuple[float, float]]:
        """Median (wall, CPU) of each run, the runs alternating round by round so that drift hits all."""
        seen = {name: [] for name in runs}
        for _ in range(rounds):
            for name, run in runs.items():
                seen[name].append(self.time(run))
        return {name: (statistics.median(w for w, _ in t), statistics.median(c for _, c in t))
                for name, t in seen.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--dims", type=int, default=384)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--brute-force-rows", type=int, default=100000)
    parser.add_argument("--dsn")
    opts = parser.parse_args()

    import psycopg

    rng = np.random.default_rng(0)
    query = rng.standard_normal(opts.dims, dtype=np.float32).tolist()
    with database(opts.dsn) as dsn, psycopg.connect(dsn, autocommit=True) as conn:
        debug = []
        conn.add_notice_handler(lambda d: debug.append(d.message_primary)
                                if d.message_primary.startswith("pgml.nearest:") else None)
        started = time.perf_counter()
        load(conn, opts.rows, opts.dims, rng)
        loaded = time.perf_counter() - started
        conn.execute(ALTERNATIVES)
        conn.execute("SET max_parallel_workers_per_gather = 0")  # one core
        size = conn.execute("SELECT pg_size_pretty(pg_table_size('bench_vectors'))").fetchone()[0]
        clock = Clock(conn)

        def order_by(function):
            return lambda: conn.execute(
                f"SELECT tableoid, ctid, {function}(e, %s::real[]) AS d FROM bench_vectors "
                "WHERE e IS NOT NULL ORDER BY d, ctid LIMIT %s", (query, opts.k)).fetchall()

        def nearest():
            return conn.execute("SELECT * FROM pgml.nearest('bench_vectors', 'e', %s::real[], %s)",
                                (query, opts.k)).fetchall()

        runs = {"nearest": nearest}
        if opts.rows <= opts.brute_force_rows:
            runs = {"main_sql": order_by("bench_alt.sql_set"), "function": order_by("pgml.cosine_distance"), **runs}
        answers = {name: run() for name, run in runs.items()}  # warm, and the answers to compare
        for name, answer in answers.items():
            reference = answers["nearest"]
            assert [r[:2] for r in answer] == [r[:2] for r in reference], (name, answer, reference)
            assert np.allclose([r[2] for r in answer], [r[2] for r in reference], rtol=0, atol=1e-6), name
        times = clock.rounds(opts.rounds, runs)

        conn.execute("SET client_min_messages = debug2")
        debug.clear()
        nearest()
        conn.execute("RESET client_min_messages")
        scan = clock.rounds(3, {"scan": lambda: conn.execute("SELECT count(e) FROM bench_vectors").fetchall()})

        sampled = min(opts.rows, PER_ROW_ROWS)
        sample = f"(SELECT e FROM bench_vectors LIMIT {sampled}) s"
        per_row = clock.rounds(3, {"scan": lambda: conn.execute(f"SELECT count(e) FROM {sample}").fetchall()})
        for label, function in PER_ROW.items():
            query_sql = f"SELECT sum({function}(e, %s::real[])) FROM {sample}"
            conn.execute(query_sql, (query,))  # warm
            per_row.update(clock.rounds(opts.rounds, {label: lambda: conn.execute(query_sql, (query,)).fetchall()}))
        conn.execute("DROP SCHEMA bench_alt CASCADE")
        conn.execute("DROP TABLE bench_vectors")

    def line(label, seconds, unit="s", scale=1.0):
        wall, cpu = seconds
        print(f"  {label:44s} {wall * scale:9.3f} {unit} {cpu * scale:9.3f} {unit}")

    print(f"{opts.rows} rows of REAL[{opts.dims}] ({size}, loaded in {loaded:.1f} s), k = {opts.k}, one core, "
          f"median of {opts.rounds} rounds: wall time, the backend's CPU time")
    if "main_sql" in times:
        line("ORDER BY main's SQL cosine_distance LIMIT k", times["main_sql"])
        line("ORDER BY pgml.cosine_distance LIMIT k", times["function"])
    line("pgml.nearest", times["nearest"])
    if "main_sql" in times:
        for label, slow, fast in (("nearest vs main's ORDER BY", "main_sql", "nearest"),
                                  ("nearest vs today's ORDER BY", "function", "nearest"),
                                  ("today's vs main's ORDER BY", "main_sql", "function")):
            print(f"  {label:44s} {times[slow][0] / times[fast][0]:8.1f}x  "
                  f"{times[slow][1] / times[fast][1]:8.1f}x  faster")
        print("  same rows and distances (1e-6) from all three: yes")
    print(f"  {debug[-1]}")
    line("a plain scan of the table (SELECT count(e))", scan["scan"])
    print(f"cosine_distance per row over {sampled} rows, the scan included: wall, CPU")
    line("a plain scan of them", per_row.pop("scan"), "us", 1e6 / sampled)
    for label, seconds in per_row.items():
        line(label, seconds, "us", 1e6 / sampled)
    return 0


if __name__ == "__main__":
    sys.exit(main())
