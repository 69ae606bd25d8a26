"""Load: 8 clients x a few hundred mixed calls at once give the serial results, with stable memory."""

import json
import random
import threading

import psycopg
import pytest
from pgtest import one, rss_kb, same, task
from psycopg.types.json import Jsonb

pytestmark = pytest.mark.soak

CLIENTS = 8
ROUNDS = 25  # each client runs every call ROUNDS times: 8 x 25 x 12 = 2400 calls


def calls(models):
    qa = json.dumps({"question": "Where does Omar live?", "context": "Omar lives in Paris."})
    greedy = Jsonb({"do_sample": False, "max_new_tokens": 6})
    chat = [json.dumps({"role": "user", "content": "What is the capital of France?"})]
    return [
        ("SELECT pgml.transform(%s, inputs => ARRAY['I love it', 'I hate it'])",
         (task("text-classification", models["bert-sentiment"]),)),
        ("SELECT pgml.transform(%s, inputs => ARRAY['I am Omar and I live in Paris.'])",
         (task("token-classification", models["bert-ner"]),)),
        ("SELECT pgml.transform(%s, inputs => ARRAY[%s])", (task("question-answering", models["bert-qa"]), qa)),
        ("SELECT pgml.transform(%s, inputs => ARRAY['Paris is the [MASK] of France.'])",
         (task("fill-mask", models["bert-mlm"]),)),
        ("SELECT pgml.transform(%s, %s, ARRAY['the cat'])", (task("translation_en_to_fr", models["t5-tiny"]), greedy)),
        ("SELECT pgml.transform(%s, %s, ARRAY['The cat'])", (task("text-generation", models["gpt2-chat"]), greedy)),
        ("SELECT pgml.transform(%s, %s, %s::jsonb[])", (task("conversational", models["gpt2-chat"]), greedy, chat)),
        ("SELECT array_agg(p) FROM (SELECT pgml.transform_stream(%s, %s, 'The dog') p) s",
         (task("text-generation", models["gpt2-chat"]), greedy)),
        ("SELECT pgml.embed('sentence-transformers/all-MiniLM-L6-v2', 'a quiet dinner')", ()),
        ("SELECT array_agg(e) FROM pgml.embed('sentence-transformers/all-MiniLM-L6-v2', ARRAY['a', 'b c']) e", ()),
        ("SELECT array_agg(chunk) FROM pgml.chunk('recursive_character', repeat('word ', 50), "
         "'{\"chunk_size\": 40, \"chunk_overlap\": 5}')", ()),
        ("SELECT pgml.cosine_similarity('{1,2,3}', '{3,2,1}')", ()),
    ]


def test_concurrent_clients_match_serial_results(dsn, conn, models):
    work = calls(models)
    expected = [one(conn, query, params) for query, params in work]
    postmaster = one(conn, "SELECT pg_postmaster_start_time()")
    failures, memory = [], {}

    def client(number):
        order = list(range(len(work)))
        random.Random(number).shuffle(order)
        try:
            with psycopg.connect(dsn, autocommit=True) as c:
                for i in order:  # warm-up: every model loaded once
                    same(one(c, *work[i]), expected[i])
                warm = rss_kb(c)
                for _ in range(ROUNDS - 1):
                    for i in order:
                        try:  # concurrent calls get fewer threads each: floats may round differently
                            same(one(c, *work[i]), expected[i])
                        except AssertionError as differs:
                            failures.append((number, work[i][0], str(differs)))
                memory[number] = (warm, rss_kb(c))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            failures.append((number, repr(exc)))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert one(conn, "SELECT pg_postmaster_start_time()") == postmaster
    growth = {n: (after - warm) / 1024 for n, (warm, after) in memory.items()}
    print(f"\nsoak: {CLIENTS} clients x {ROUNDS * len(work)} calls; RSS after warm-up "
          f"{min(w for w, _ in memory.values()) / 1024:.0f}-{max(w for w, _ in memory.values()) / 1024:.0f} MB, "
          f"growth over the run {min(growth.values()):+.1f} to {max(growth.values()):+.1f} MB")
    assert max(growth.values()) < 40, growth
