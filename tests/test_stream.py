"""pgml.transform_stream through a real cursor, and cancellation of long work."""

import json
import threading
import time

import psycopg
import pytest
from pgtest import long_gpt2_folder, one, sql_error, task, threads
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


def seconds(conn, query, params) -> float:
    started = time.perf_counter()
    conn.execute(query, params).fetchall()
    return time.perf_counter() - started


def timed_out(conn, query, params, timeout: float) -> float:
    """Seconds until a statement_timeout of timeout seconds stopped the statement."""
    conn.execute(f"SET statement_timeout = {max(1, round(timeout * 1000))}")
    started = time.perf_counter()
    with pytest.raises(psycopg.errors.QueryCanceled):
        conn.execute(query, params)
    elapsed = time.perf_counter() - started
    conn.execute("RESET statement_timeout")
    assert one(conn, "SELECT 42") == 42  # no cancel left pending for the next statement
    return elapsed


# How long a stop may take is measured against the work itself, on this machine, now: a tenth of
# the work is timed warm; a stop must come within 5 tenths (the whole would take more than 10, as
# later tokens cost more), however fast or busy the machine is.


@pytest.fixture(scope="module")
def long_gpt2(models):
    return long_gpt2_folder(models)


def test_statement_timeout_stops_a_long_generation(dsn, long_gpt2):
    gpt = task("text-generation", long_gpt2)

    def tokens(n):
        return Jsonb({"do_sample": False, "max_new_tokens": n, "min_new_tokens": n})

    with psycopg.connect(dsn, autocommit=True) as c:
        one(c, "SELECT pgml.transform(%s, %s, ARRAY['warm'])", (gpt, Jsonb(GREEDY)))
        tenth = seconds(c, "SELECT pgml.transform(%s, %s, ARRAY['The cat'])", (gpt, tokens(190)))
        for query in ("SELECT pgml.transform(%s, %s, ARRAY['The cat'])",
                      "SELECT count(*) FROM (SELECT pgml.transform_stream(%s, %s, 'The cat')) s"):
            elapsed = timed_out(c, query, (gpt, tokens(1900)), timeout=tenth)
            assert elapsed < 5 * tenth, (query, elapsed, tenth)
        assert "pgml-generate" not in threads(c)


def test_statement_timeout_stops_a_long_batch_embedding(dsn):
    query = "SELECT count(*) FROM pgml.embed('sentence-transformers/all-MiniLM-L6-v2', %s::text[])"
    texts = [f"sentence number {i} about something long enough to take a while" for i in range(5000)]
    with psycopg.connect(dsn, autocommit=True) as c:
        one(c, query, (["warm"],))
        tenth = seconds(c, query, (texts[:500],))
        elapsed = timed_out(c, query, (texts,), timeout=tenth)
        assert elapsed < 5 * tenth, (elapsed, tenth)


def stop_while_running(conn, victim, function, query, params, after: float):
    """Run query on victim; once it has run for `after` seconds, call function (pg_cancel_backend or
    pg_terminate_backend) on it from conn. The error it ended with, and seconds from the request to the end."""
    pid = one(victim, "SELECT pg_backend_pid()")
    outcome = {}

    def run():
        try:
            victim.execute(query, params)
        except psycopg.Error as exc:
            outcome["error"] = exc
        outcome["ended"] = time.perf_counter()

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 300
    while not one(conn, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND state = 'active' "
                        "AND clock_timestamp() - query_start > make_interval(secs => %s)", (pid, after)):
        assert worker.is_alive() and time.monotonic() < deadline, "the statement never got going"
        time.sleep(0.02)
    asked = time.perf_counter()
    conn.execute(f"SELECT {function}(%s)", (pid,))
    worker.join()
    return outcome.get("error"), outcome["ended"] - asked


def test_pg_cancel_backend_and_terminate(dsn, models, conn):
    sentiment = task("text-classification", models["bert-sentiment"])
    query = "SELECT pgml.transform(%s, inputs => %s::text[])"
    inputs = [f"sentence {i}" for i in range(9000)]  # within max_inputs
    with psycopg.connect(dsn, autocommit=True) as victim:
        one(victim, "SELECT pgml.transform(%s, inputs => ARRAY['warm'])", (sentiment,))
        tenth = seconds(victim, query, (sentiment, inputs[:900]))
        # stopped while the model runs (after half a tenth), and within 4 tenths of the request
        error, took = stop_while_running(conn, victim, "pg_cancel_backend", query, (sentiment, inputs), tenth / 2)
        assert isinstance(error, psycopg.errors.QueryCanceled) and took < 4 * tenth, (error, took, tenth)
        assert one(victim, "SELECT 1") == 1

        postmaster = one(conn, "SELECT pg_postmaster_start_time()")
        error, took = stop_while_running(conn, victim, "pg_terminate_backend", query, (sentiment, inputs), tenth / 2)
        assert isinstance(error, psycopg.OperationalError) and took < 4 * tenth, (error, took, tenth)
    assert one(conn, "SELECT pg_postmaster_start_time()") == postmaster  # the server did not restart
