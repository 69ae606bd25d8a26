"""pgml.transform_stream through a real cursor, and cancellation of long work."""

import json
import threading
import time

import psycopg
import pytest
from pgtest import one, readable_tree, sql_error, task
from psycopg.types.json import Jsonb

GREEDY = {"do_sample": False, "max_new_tokens": 12}
MESSAGES = [json.dumps({"role": "user", "content": "What is the capital of France?"})]


def fetch_all(conn, query, params):
    with conn.transaction():
        conn.execute(f"DECLARE s NO SCROLL CURSOR FOR {query}", params)
        rows = []
        while batch := conn.execute("FETCH 3 FROM s").fetchall():
            rows += [piece for (pieces,) in batch for piece in pieces]
        conn.execute("CLOSE s")
    return rows


def test_stream_equals_the_result(conn, models):
    gpt = task("text-generation", models["gpt2-chat"])
    pieces = fetch_all(conn, "SELECT pgml.transform_stream(%s, %s, 'The cat')", (gpt, Jsonb(GREEDY)))
    whole = one(conn, "SELECT pgml.transform(%s, %s, ARRAY['The cat'])", (gpt, Jsonb(GREEDY)))
    assert len(pieces) > 1 and "The cat" + "".join(pieces) == whole[0][0]["generated_text"]


def test_chat_stream_equals_the_reply(conn, models):
    gpt = task("conversational", models["gpt2-chat"])
    query = "SELECT pgml.transform_stream(%s, %s, %s::jsonb[])"
    pieces = fetch_all(conn, query, (gpt, Jsonb(GREEDY), MESSAGES))
    reply = one(conn, "SELECT pgml.transform(%s, %s, %s::jsonb[])", (gpt, Jsonb(GREEDY), MESSAGES))
    assert "".join(pieces) == reply[0]
    stopped = fetch_all(conn, query, (gpt, Jsonb({**GREEDY, "stop": [reply[0].split()[1]]}), MESSAGES))
    assert "".join(stopped) == reply[0][:reply[0].index(reply[0].split()[1])]


LONG = {"do_sample": False, "max_new_tokens": 100, "min_new_tokens": 100}


def threads(conn) -> list[str]:
    names = []
    conn.add_notice_handler(lambda d: names.append(d.message_primary))
    conn.execute("DO $$ import threading; plpy.notice(','.join(t.name for t in threading.enumerate())) $$ "
                 "LANGUAGE plpython3u")
    return names[-1].split(",")


def test_rows_arrive_while_generating_and_closing_stops_it(dsn, models):
    gpt = task("text-generation", models["gpt2-chat"])
    with psycopg.connect(dsn, autocommit=True) as c:
        started = time.perf_counter()
        one(c, "SELECT count(*) FROM (SELECT pgml.transform_stream(%s, %s, 'The cat')) s", (gpt, Jsonb(LONG)))
        whole = time.perf_counter() - started  # includes loading: compare against a warm run
        started = time.perf_counter()
        one(c, "SELECT count(*) FROM (SELECT pgml.transform_stream(%s, %s, 'The cat')) s", (gpt, Jsonb(LONG)))
        whole = time.perf_counter() - started
        with c.transaction():
            c.execute("DECLARE s CURSOR FOR SELECT pgml.transform_stream(%s, %s, 'The cat')", (gpt, Jsonb(LONG)))
            started = time.perf_counter()
            assert len(c.execute("FETCH 1 FROM s").fetchall()) == 1
            first = time.perf_counter() - started
            c.execute("CLOSE s")
            assert "pgml-generate" not in threads(c)
        assert first < whole / 3, (first, whole)


def test_stream_errors(conn, models):
    gpt = task("text-generation", models["gpt2-chat"])
    err = sql_error(conn, "SELECT pgml.transform_stream(%s, %s, 'x')", (gpt, Jsonb({"no_such_flag": 1})))
    assert err.sqlstate == "22023" and "no_such_flag" in err.diag.message_primary
    err = sql_error(conn, "SELECT pgml.transform_stream(%s, %s, 'x')", (gpt, Jsonb({"n": 2, "do_sample": True})))
    assert err.sqlstate == "22023"
    err = sql_error(conn, "SELECT pgml.transform_stream(%s, '{}', 'x')",
                    (task("text-classification", models["bert-sentiment"]),))
    assert err.sqlstate == "0A000" and "transform_stream" in err.diag.message_primary


def timed_out(conn, query, params, timeout="1s") -> float:
    conn.execute(f"SET statement_timeout = '{timeout}'")
    started = time.perf_counter()
    with pytest.raises(psycopg.errors.QueryCanceled):
        conn.execute(query, params)
    elapsed = time.perf_counter() - started
    conn.execute("RESET statement_timeout")
    assert one(conn, "SELECT 42") == 42  # no cancel left pending for the next statement
    return elapsed


@pytest.fixture(scope="module")
def long_gpt2(models):
    """A GPT-2 with random weights and room for 2000 tokens: generations that take seconds."""
    import os
    import shutil

    from transformers import GPT2Config, GPT2LMHeadModel

    folder = os.path.join(os.path.dirname(models["gpt2-chat"]), "gpt2-long-random")
    if not os.path.isdir(folder):
        shutil.copytree(models["gpt2-chat"], folder + ".tmp")
        config = GPT2Config.from_pretrained(models["gpt2-chat"], n_positions=2048, n_layer=4, n_embd=256)
        GPT2LMHeadModel(config).save_pretrained(folder + ".tmp")
        readable_tree(folder + ".tmp")
        os.rename(folder + ".tmp", folder)
    return folder


def test_statement_timeout_stops_a_long_generation(dsn, long_gpt2):
    gpt = task("text-generation", long_gpt2)
    very_long = Jsonb({"do_sample": False, "max_new_tokens": 1900, "min_new_tokens": 1900})
    with psycopg.connect(dsn, autocommit=True) as c:
        one(c, "SELECT pgml.transform(%s, %s, ARRAY['warm'])", (gpt, Jsonb(GREEDY)))
        assert timed_out(c, "SELECT pgml.transform(%s, %s, ARRAY['The cat'])", (gpt, very_long)) < 3
        assert timed_out(c, "SELECT count(*) FROM (SELECT pgml.transform_stream(%s, %s, 'The cat')) s",
                         (gpt, very_long)) < 3
        assert "pgml-generate" not in threads(c)


def test_statement_timeout_stops_a_long_batch_embedding(dsn):
    with psycopg.connect(dsn, autocommit=True) as c:
        one(c, "SELECT count(*) FROM pgml.embed('sentence-transformers/all-MiniLM-L6-v2', ARRAY['warm'])")
        texts = [f"sentence number {i} about something long enough to take a while" for i in range(5000)]
        elapsed = timed_out(c, "SELECT count(*) FROM pgml.embed('sentence-transformers/all-MiniLM-L6-v2', %s::text[])",
                            (texts,))
        assert elapsed < 3


def test_pg_cancel_backend_and_terminate(dsn, models, conn):
    sentiment = task("text-classification", models["bert-sentiment"])
    inputs = [f"sentence {i}" for i in range(9000)]  # within max_inputs, and many seconds of work
    with psycopg.connect(dsn, autocommit=True) as victim:
        pid = one(victim, "SELECT pg_backend_pid()")
        one(victim, "SELECT pgml.transform(%s, inputs => ARRAY['warm'])", (sentiment,))

        def stop_after(seconds, function):
            time.sleep(seconds)
            conn.execute(f"SELECT {function}(%s)", (pid,))

        killer = threading.Thread(target=stop_after, args=(1, "pg_cancel_backend"))
        killer.start()
        started = time.perf_counter()
        with pytest.raises(psycopg.errors.QueryCanceled):
            victim.execute("SELECT pgml.transform(%s, inputs => %s::text[])", (sentiment, inputs))
        killer.join()
        assert time.perf_counter() - started < 3
        assert one(victim, "SELECT 1") == 1

        postmaster = one(conn, "SELECT pg_postmaster_start_time()")
        killer = threading.Thread(target=stop_after, args=(1, "pg_terminate_backend"))
        killer.start()
        started = time.perf_counter()
        with pytest.raises(psycopg.OperationalError):
            victim.execute("SELECT pgml.transform(%s, inputs => %s::text[])", (sentiment, inputs))
        killer.join()
        assert time.perf_counter() - started < 3
    assert one(conn, "SELECT pg_postmaster_start_time()") == postmaster  # the server did not restart
