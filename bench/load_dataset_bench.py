"""pgml.load_dataset against COPY in one run: the same rows from the same files, alternating rounds.

A generated table of (id bigint, text text, score bigint, ok boolean, weight double precision),
written to a parquet file and a CSV file in a temporary folder the server can read (the server
must run on this machine: a throwaway cluster, or --dsn for a local one, as a superuser). Each
round, in turn:
  - `SELECT * FROM pgml.load_dataset('<parquet file>')` and `... ('<csv file>')`;
  - the direct way, at its best: `CREATE TABLE` and `COPY ... FROM '<csv file>' (FORMAT csv,
    FREEZE)` in one transaction;
  - the same with two jsonb columns (a list and a struct): load_dataset from parquet against
    COPY from a CSV holding them as JSON text.
Each figure is wall time and the backend's CPU time (steadier on a busy machine). The tables are
checked to hold the same values (row count, sums) and types. Then:
  - load_dataset's insert stage alone (writing.py's prepared `INSERT ... SELECT * FROM unnest(...)`
    in batches of 20,000) against a prepared per-row INSERT, inside the backend, same rows;
  - the first call in a fresh connection: activating the package, then the first load_dataset
    (of a 3-row file: it imports datasets) against the second.

    .venv/bin/python bench/load_dataset_bench.py [--rows 100000] [--rounds 3] [--dsn DSN]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import sys
import tempfile

import pyarrow as pa
import pyarrow.parquet as pq
from common import database, sentences
from vector_bench import Clock

COLUMNS = "id bigint, text text, score bigint, ok boolean, weight double precision"
JSON_COLUMNS = COLUMNS + ", tags jsonb, meta jsonb"
CHECK = ("SELECT count(*), sum(id), sum(score), sum(length(text)), count(*) FILTER (WHERE ok), "
         "sum(weight::numeric){extra} FROM {table}")
JSON_CHECK = ", sum(jsonb_array_length(tags)), sum((meta->>'n')::bigint), count(DISTINCT meta->>'k')"

# The insert stage alone, inside the backend: the same rows (read from the parquet file first, not
# timed) into a fresh table, as writing.py does it (one prepared INSERT ... SELECT * FROM unnest of
# one array per column, batches of 20,000) or by a prepared INSERT per row.
INSERT_STAGE = """
DROP SCHEMA IF EXISTS bench_load CASCADE;
CREATE SCHEMA bench_load;
CREATE FUNCTION bench_load.insert(how text, path text) RETURNS float8[]
LANGUAGE plpython3u VOLATILE AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
import time
import pyarrow.parquet as pq
columns = [c.to_pylist() for c in pq.read_table(path).columns]
types = ['bigint', 'text', 'bigint', 'boolean', 'double precision']
plpy.execute('DROP TABLE IF EXISTS bench_load.t')
plpy.execute('CREATE TABLE bench_load.t (%s)' % ', '.join('c%d %s' % (i, t) for i, t in enumerate(types)))
wall, cpu = time.perf_counter(), time.process_time()
if how == 'unnest':
    plan = plpy.prepare('INSERT INTO bench_load.t SELECT * FROM unnest($1, $2, $3, $4, $5)', [t + '[]' for t in types])
    for first in range(0, len(columns[0]), 20000):
        plpy.execute(plan, [c[first:first + 20000] for c in columns])
else:
    plan = plpy.prepare('INSERT INTO bench_load.t VALUES ($1, $2, $3, $4, $5)', types)
    for row in zip(*columns):
        plpy.execute(plan, row)
return [time.perf_counter() - wall, time.process_time() - cpu]
$$;
"""


def write_files(folder: str, rows: int) -> dict[str, str]:
    """The rows as rows.parquet and rows.csv, and with two nested columns as nested.parquet and nested.csv."""
    texts = sentences(rows)
    plain = {"id": pa.array(range(rows), pa.int64()), "text": texts,
             "score": pa.array([i % 5 for i in range(rows)], pa.int64()),
             "ok": [i % 3 == 0 for i in range(rows)], "weight": [i / 7 for i in range(rows)]}
    tags = [[f"tag{i % 11}", f"tag{i % 13}"][: 1 + i % 2] for i in range(rows)]
    meta = [{"k": f"kind{i % 4}", "n": i % 100} for i in range(rows)]
    files = {name: os.path.join(folder, name) for name in
             ("rows.parquet", "rows.csv", "nested.parquet", "nested.csv", "tiny.parquet")}
    pq.write_table(pa.table(plain), files["rows.parquet"])
    pq.write_table(pa.table({**plain, "tags": tags, "meta": meta}), files["nested.parquet"])
    pq.write_table(pa.table({"id": [1, 2, 3], "text": ["a", "b", "c"]}), files["tiny.parquet"])
    for name, nested in (("rows.csv", False), ("nested.csv", True)):
        with open(files[name], "w", newline="") as f:
            out = csv.writer(f)
            out.writerow(list(plain) + (["tags", "meta"] if nested else []))
            for i in range(rows):
                row = [i, texts[i], i % 5, "true" if i % 3 == 0 else "false", repr(i / 7)]
                out.writerow(row + ([json.dumps(tags[i]), json.dumps(meta[i])] if nested else []))
    os.chmod(folder, 0o755)  # the server's OS user reads them (postgres when this runs as root)
    for path in files.values():
        os.chmod(path, 0o644)
    return files


def ratio(slow: float, fast: float) -> str:
    """slow / fast as '  2.1x', or '     -' where fast took less than /proc's CPU clock counts (tiny runs)."""
    return f"{slow / fast:7.1f}x" if fast else "      -"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dsn", help="a server on this machine (it reads the files), as a superuser")
    opts = parser.parse_args()

    import psycopg

    folder = tempfile.mkdtemp(prefix="pgml_load_bench_")
    try:
        files = write_files(folder, opts.rows)
        sizes = {name: os.path.getsize(path) / 1e6 for name, path in files.items()}
        with database(opts.dsn) as dsn:
            with psycopg.connect(dsn, autocommit=True) as conn:
                results = measure(conn, files, opts.rounds)
            first = [first_call(psycopg, dsn, files["tiny.parquet"]) for _ in range(opts.rounds)]
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    times, stage = results

    def line(label, seconds, after=""):
        print(f"  {label:60s} {seconds[0]:7.3f} s {seconds[1]:7.3f} s{after}")

    print(f"{opts.rows} rows of ({COLUMNS}); parquet {sizes['rows.parquet']:.1f} MB, CSV {sizes['rows.csv']:.1f} MB; "
          f"median of {opts.rounds} alternating rounds: wall time, the backend's CPU time, rows/s (wall)")
    for label, name in (("pgml.load_dataset(parquet)", "ld_parquet"), ("pgml.load_dataset(csv)", "ld_csv"),
                        ("CREATE TABLE + COPY FROM csv (FREEZE)", "copy"),
                        ("with 2 jsonb columns: load_dataset(parquet)", "ld_nested"),
                        ("with 2 jsonb columns: CREATE TABLE + COPY FROM csv", "copy_nested")):
        line(label, times[name], f" {opts.rows / times[name][0]:9.0f}")
    for label, slow, fast in (("load_dataset(parquet) vs COPY", "ld_parquet", "copy"),
                              ("load_dataset(csv) vs COPY", "ld_csv", "copy"),
                              ("with 2 jsonb columns: load_dataset vs COPY", "ld_nested", "copy_nested")):
        print(f"  {label:60s} {ratio(times[slow][0], times[fast][0])}  {ratio(times[slow][1], times[fast][1])}  "
              "slower")
    print("  same values (count, sums) and column types in load_dataset's tables and COPY's: yes")
    print(f"load_dataset's insert stage alone, inside the backend, {opts.rows} rows "
          f"(median of {opts.rounds}): wall, CPU")
    line("prepared INSERT ... SELECT * FROM unnest, batches of 20,000", stage["unnest"])
    line("prepared INSERT per row", stage["per_row"], f"  ({ratio(stage['per_row'][0], stage['unnest'][0]).strip()} slower)")
    activate, cold, warm = ((statistics.median(f[i][0] for f in first), statistics.median(f[i][1] for f in first))
                            for i in range(3))
    print(f"the first call in a fresh connection (median of {opts.rounds} connections): wall, CPU")
    line("activating the package (SELECT pgml._activate())", activate)
    line("first load_dataset of a 3-row parquet file", cold)
    line("second one", warm)
    line("the first call's one-off cost (importing datasets, ...)", (cold[0] - warm[0], cold[1] - warm[1]))
    return 0


def measure(conn, files: dict[str, str], rounds: int):
    def load_dataset(path):
        return lambda: conn.execute("SELECT * FROM pgml.load_dataset(%s)", (path,)).fetchall()

    def copy(table, columns, path):
        def run():
            with conn.transaction():
                conn.execute(f"DROP TABLE IF EXISTS {table}")
                conn.execute(f"CREATE TABLE {table} ({columns})")
                conn.execute(f"COPY {table} FROM '{path}' WITH (FORMAT csv, HEADER true, FREEZE true)")
        return run

    runs = {"ld_parquet": load_dataset(files["rows.parquet"]), "ld_csv": load_dataset(files["rows.csv"]),
            "copy": copy("bench_copy", COLUMNS, files["rows.csv"]),
            "ld_nested": load_dataset(files["nested.parquet"]),
            "copy_nested": copy("bench_copy_nested", JSON_COLUMNS, files["nested.csv"])}
    for run in runs.values():  # warm (imports, caches), and the tables to compare
        run()
    conn.execute("ALTER TABLE pgml.rows RENAME TO rows_from_csv")
    runs["ld_parquet"]()
    for tables, extra in ((("pgml.rows", "pgml.rows_from_csv", "bench_copy"), ""),
                          (("pgml.nested", "bench_copy_nested"), JSON_CHECK)):
        found = {table: (conn.execute(CHECK.format(table=table, extra=extra)).fetchone(),
                         conn.execute("SELECT array_agg(format_type(atttypid, atttypmod) ORDER BY attnum) "
                                      "FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0",
                                      (table,)).fetchone()[0]) for table in tables}
        found = {table: (tuple(check), tuple(types)) for table, (check, types) in found.items()}
        assert len(set(found.values())) == 1, found
    conn.execute("DROP TABLE pgml.rows_from_csv")
    times = Clock(conn).rounds(rounds, runs)
    for table in ("pgml.rows", "pgml.nested", "bench_copy", "bench_copy_nested"):
        conn.execute(f"DROP TABLE {table}")

    conn.execute(INSERT_STAGE)
    stage = {"unnest": [], "per_row": []}
    for _ in range(rounds):
        for how in stage:
            stage[how].append(conn.execute("SELECT bench_load.insert(%s, %s)", (how, files["rows.parquet"]))
                              .fetchone()[0])
    conn.execute("DROP SCHEMA bench_load CASCADE")
    return times, {how: (statistics.median(w for w, _ in t), statistics.median(c for _, c in t))
                   for how, t in stage.items()}


def first_call(psycopg, dsn: str, path: str) -> list[tuple[float, float]]:
    """In a fresh connection: (wall, CPU) seconds to activate the package, for the first load_dataset, the second."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        clock = Clock(conn)
        seconds = [clock.time(lambda: conn.execute("SELECT pgml._activate()").fetchall())]
        for _ in range(2):
            seconds.append(clock.time(lambda: conn.execute("SELECT * FROM pgml.load_dataset(%s)", (path,)).fetchall()))
        conn.execute("DROP TABLE pgml.tiny")
        return seconds

if __name__ == "__main__":
    sys.exit(main())
