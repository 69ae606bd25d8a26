"""pgml.transform routed to `transformers serve --continuous-batching` vs run in each backend, in one run.

--clients SQL clients (one connection each, all at once) each call pgml.transform text-generation
--calls times per round, each call generating --tokens tokens. Rounds alternate between the two
sides, each with its own connections: in-backend (every backend loads the model, torch_threads 1)
and routed (a route sends the model to the engine, which batches the clients' requests together).
The model is a GPT-2 with random weights built here (--layers, --width) and no end-of-text, so
every call generates exactly --tokens tokens; both sides decode greedily. Each side at its best on
a shared CPU: one torch thread per backend, and --engine-threads (1) for the engine (with 2 threads
on this busy 2-core machine the engine ran 10x slower: OpenMP threads spin against other work).
Prints tokens per second (median over rounds), the ratio routed / in-backend, and memory (PSS):
the backends of each side, plus the engine's processes for the routed side.

    .venv/bin/python bench/engine_bench.py [--clients 8] [--tokens 32] [--calls 3] [--rounds 3]
        [--layers 6] [--width 512] [--engine-threads 2] [--dsn DSN]

Without --dsn it starts a throwaway cluster with pgml_plpy installed (scripts/localpg.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time

from common import REPO, database

ENGINE_MODEL = "bench-gpt2-engine"  # the routed side's model name; the engine serves the folder


def build_model(folder: str, layers: int, width: int) -> None:
    import torch
    from transformers import AutoTokenizer, GenerationConfig, GPT2Config, GPT2LMHeadModel

    sys.path.insert(0, str(REPO / "tests"))
    import tiny_models

    # the tiny chat model's tokenizer (the tests' cache of tiny models)
    root = os.environ.get("PGML_TEST_MODELS", os.path.join(tempfile.gettempdir(), "pgml_plpy_test_models"))
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_models.build_all(root, ["gpt2-chat"])["gpt2-chat"])
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=512, n_layer=layers, n_embd=width,
                        n_head=max(1, width // 64), bos_token_id=0, eos_token_id=0, pad_token_id=0)
    model = GPT2LMHeadModel(config)
    model.generation_config = GenerationConfig(bos_token_id=0, pad_token_id=0, eos_token_id=None)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    for path, dirs, files in os.walk(folder):
        os.chmod(path, 0o755)
        for name in files:
            os.chmod(os.path.join(path, name), 0o644)


def pss(pids) -> int:
    import psutil

    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_full_info().pss
        except psutil.NoSuchProcess:
            pass
    return total


def tree(pid: int) -> list[int]:
    import psutil

    return [pid] + [p.pid for p in psutil.Process(pid).children(recursive=True)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--engine-threads", type=int, default=1)
    parser.add_argument("--dsn")
    opts = parser.parse_args()

    import psycopg
    from localengine import free_port, transformers_serve
    from psycopg.types.json import Jsonb

    root = tempfile.mkdtemp(prefix="pgml_engine_bench_")
    os.chmod(root, 0o755)
    folder = os.path.join(root, "bench-gpt2")
    build_model(folder, opts.layers, opts.width)
    # A KV cache for every client's prompt and tokens, twice over: left to itself, continuous batching
    # sizes its cache from the machine's memory (13 GB here).
    blocks = 2 * opts.clients * -(-(16 + opts.tokens) // 32)
    engine = transformers_serve(free_port(), folder, "--continuous-batching", "--cb-block-size", "32",
                                "--cb-num-blocks", str(blocks), "--cb-max-batch-tokens", "512",
                                python=str(REPO / ".venv/bin/python"))
    engine.env["OMP_NUM_THREADS"] = str(opts.engine_threads)
    args = Jsonb({"max_new_tokens": opts.tokens, "do_sample": False})
    prompts = [f"The cat number {i} sat on" for i in range(opts.clients)]
    try:
        engine.start()
        with database(opts.dsn) as dsn, psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute("UPDATE pgml.settings SET value = '1' WHERE name = 'torch_threads'")
            admin.execute("UPDATE pgml.settings SET value = %s WHERE name = 'runtimes'",
                          (Jsonb([{"model": ENGINE_MODEL, "runtime": "openai", "url": engine.url,
                                   "served_model": folder}]),))
            sides = {"in-backend": folder, "routed": ENGINE_MODEL}
            conns = {side: [psycopg.connect(dsn, autocommit=True) for _ in range(opts.clients)] for side in sides}
            try:
                def call(conn, model, prompt):
                    out = conn.execute("SELECT pgml.transform(%s, %s, ARRAY[%s])",
                                       (Jsonb({"task": "text-generation", "model": model}), args, prompt)).fetchone()
                    assert out[0][0][0]["generated_text"].startswith(prompt)

                def together(side: str) -> float:
                    """Seconds for every client's --calls calls, all clients at once."""
                    failures = []

                    def client(i):
                        try:
                            for _ in range(opts.calls):
                                call(conns[side][i], sides[side], prompts[i])
                        except Exception as exc:  # noqa: BLE001 - reported below
                            failures.append(exc)

                    threads = [threading.Thread(target=client, args=(i,)) for i in range(opts.clients)]
                    started = time.perf_counter()
                    for t in threads:
                        t.start()
                    for t in threads:
                        t.join()
                    if failures:
                        raise failures[0]
                    return time.perf_counter() - started

                for side in sides:  # warm: every backend has loaded what it needs
                    for i, conn in enumerate(conns[side]):
                        call(conn, sides[side], prompts[i])
                times = {side: [] for side in sides}
                for _ in range(opts.rounds):
                    for side in sides:
                        times[side].append(together(side))
                backends = {side: pss(c.execute("SELECT pg_backend_pid()").fetchone()[0] for c in conns[side])
                            for side in sides}
                engine_bytes = pss(tree(engine.process.pid))
            finally:
                for side in conns.values():
                    for conn in side:
                        conn.close()
                admin.execute("UPDATE pgml.settings SET value = '[]' WHERE name = 'runtimes'")
    finally:
        engine.stop()
        shutil.rmtree(root, ignore_errors=True)

    tokens = opts.clients * opts.calls * opts.tokens
    rate = {side: tokens / statistics.median(t) for side, t in times.items()}
    mb = 1 << 20
    print(f"{opts.clients} clients x {opts.calls} calls x {opts.tokens} tokens, GPT-2 {opts.layers} layers x "
          f"{opts.width} (random weights), {opts.rounds} rounds, {os.cpu_count()} cores")
    print(f"  in-backend (torch_threads 1):           {rate['in-backend']:8.1f} tokens/s (median), "
          f"backends {backends['in-backend'] / mb:7.0f} MB PSS")
    print(f"  routed to transformers serve --cb ({opts.engine_threads} thr): {rate['routed']:8.1f} tokens/s (median), "
          f"backends {backends['routed'] / mb:7.0f} MB + engine {engine_bytes / mb:7.0f} MB = "
          f"{(backends['routed'] + engine_bytes) / mb:7.0f} MB PSS")
    print(f"  throughput routed / in-backend:         {rate['routed'] / rate['in-backend']:8.2f}")
    print(f"  memory routed / in-backend:             {(backends['routed'] + engine_bytes) / backends['in-backend']:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
