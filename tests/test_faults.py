"""Faults: kill -9 during work, a missing venv, an unwritable model cache. The server recovers,
committed data and the registry stay intact, and what is broken is said clearly.

These run on a private cluster (they crash its backends)."""

import os
import re
import signal
import tempfile
import threading
import time

import psycopg
import pytest
from pgtest import one, sql_error, task
from psycopg.types.json import Jsonb

pytestmark = pytest.mark.faults


def connect(cluster):
    return psycopg.connect(cluster.dsn, autocommit=True)


def crash_and_restart(cluster, pid):
    """kill -9 the backend pid, and return once the server has restarted after that crash.

    The postmaster reacts to a killed backend by ending every other backend, then runs crash
    recovery: a connection made before it has done so is ended with the others. So wait for the
    server log to say, after the kill: this backend was killed, all processes ended, ready again."""
    steps = [f"server process (PID {pid}) was terminated by signal 9",
             "all server processes terminated; reinitializing",
             "database system is ready to accept connections"]
    after_the_kill = re.compile(".*".join(map(re.escape, steps)), re.S)
    with open(cluster.log, encoding="utf-8", errors="replace") as log:
        log.seek(0, os.SEEK_END)
        os.kill(pid, signal.SIGKILL)
        written = ""
        deadline = time.monotonic() + 300
        while not after_the_kill.search(written := written + log.read()):
            assert time.monotonic() < deadline, f"the server did not restart; {cluster.log} says:\n{written}"
            time.sleep(0.1)


def kill_while(cluster, statement, params, ready):
    """Run statement in a new backend, kill -9 it once ready(admin connection) is true and wait for the
    server to restart; the statement's error."""
    victim = connect(cluster)
    pid = one(victim, "SELECT pg_backend_pid()")
    failure = []

    def run():
        try:
            victim.execute(statement, params)
        except psycopg.Error as exc:
            failure.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    with connect(cluster) as admin:
        deadline = time.monotonic() + 300
        while not ready(admin):
            assert time.monotonic() < deadline and worker.is_alive(), "the work never got going"
            time.sleep(0.2)
    crash_and_restart(cluster, pid)
    worker.join()
    victim.close()
    return failure[0]


@pytest.fixture(scope="module")
def db(private_cluster, models):
    with connect(private_cluster) as c:
        c.execute("CREATE TABLE kept (id int PRIMARY KEY)")
        c.execute("INSERT INTO kept SELECT generate_series(1, 1000)")
        c.execute("CREATE TABLE reviews (body text, label text)")
        c.execute("INSERT INTO reviews SELECT b, l FROM (VALUES ('I love it', 'pos'), ('great fun', 'pos'), "
                  "('I hate it', 'neg'), ('awful and boring', 'neg')) v(b, l), generate_series(1, 50)")
        c.execute("SELECT * FROM pgml.tune('kept_project', 'text-classification', 'reviews', 'label', %s, %s)",
                  (models["bert-mlm"], Jsonb({"training_args": {"max_steps": 2}})))
    return private_cluster


def intact(cluster):
    with connect(cluster) as c:
        assert one(c, "SELECT count(*) FROM kept") == 1000
        assert one(c, "SELECT count(*) FROM pgml.projects WHERE name = 'kept_project'") == 1
        out = one(c, "SELECT pgml.transform('{\"task\": \"text-classification\", \"model\": \"kept_project\"}', "
                     "'{}', ARRAY['I love it'])")
        assert out[0]["label"] in ("pos", "neg")


def test_kill_9_during_a_transform(db, models):
    postmaster = db.psql("-At", "-c", "SELECT pg_postmaster_start_time()", capture=True).stdout
    sentiment = task("text-classification", models["bert-sentiment"])
    error = kill_while(db, "SELECT pgml.transform(%s, inputs => %s::text[])",
                       (sentiment, [f"sentence {i}" for i in range(9000)]),
                       lambda admin: one(admin, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE "
                                                "'SELECT pgml.transform(%%' AND state = 'active'") == 1)
    assert isinstance(error, psycopg.OperationalError)
    intact(db)
    with connect(db) as c:  # the postmaster itself lives on; a re-run succeeds
        assert one(c, "SELECT pg_postmaster_start_time()::text") == postmaster.strip()
        assert one(c, "SELECT pgml.transform(%s, inputs => ARRAY['I love it'])", (sentiment,))[0]["label"] == \
            "POSITIVE"


def test_kill_9_during_a_tune(db, models):
    call = ("CALL pgml.tune_run('killed', 'text-classification', 'reviews', 'label', %s, %s)",
            (models["bert-mlm"], Jsonb({"training_args": {"max_steps": 100000}})))
    error = kill_while(db, *call, lambda admin: one(
        admin, "SELECT count(*) FROM pgml.tune_runs WHERE project = 'killed' AND status = 'in_progress' "
               "AND step IS NOT NULL") == 1)
    assert isinstance(error, psycopg.OperationalError)
    intact(db)
    with connect(db) as c:
        rerun = c.execute(call[0], (models["bert-mlm"], Jsonb({"training_args": {"max_steps": 2}}))).fetchone()
        assert rerun[1] == "successful"
        statuses = [s for (s,) in c.execute("SELECT status FROM pgml.tune_runs WHERE project = 'killed' "
                                            "ORDER BY model_id").fetchall()]
        assert statuses == ["failed", "successful"]


def test_a_missing_venv_is_explained(db):
    empty = tempfile.mkdtemp(prefix="not_a_venv_")  # in /tmp: the server's OS user can see it
    os.chmod(empty, 0o755)
    with connect(db) as c:
        venv = one(c, "SELECT pgml._venv()")
        c.execute("SELECT pgml.activate_venv(%s)", (str(empty),))
        try:
            with connect(db) as fresh:
                err = sql_error(fresh, "SELECT pgml.version()")
                assert err.sqlstate == "55000" and "site-packages" in err.diag.message_primary
                assert "install.sql" in err.diag.message_hint
        finally:
            c.execute("SELECT pgml.activate_venv(%s)", (venv,))
            os.rmdir(empty)


def test_an_unwritable_model_cache_is_explained(db):
    readonly = tempfile.mkdtemp(prefix="readonly_cache_")
    os.chmod(readonly, 0o555)  # the server's OS user (never root) cannot write it
    with connect(db) as c:
        before = one(c, "SELECT value FROM pgml.settings WHERE name = 'models_cache'")
        c.execute("UPDATE pgml.settings SET value = to_jsonb(%s::text) WHERE name = 'models_cache'", (str(readonly),))
        try:
            with connect(db) as fresh:
                err = sql_error(fresh, "SELECT pgml.transform('{\"task\": \"text-classification\", \"model\": "
                                       "\"kept_project\"}', '{}', ARRAY['I love it'])")
                assert err.sqlstate == "58030" and "models_cache" in err.diag.message_hint
                report = dict((item, ok) for item, ok, _ in fresh.execute("SELECT * FROM pgml.validate()"))
                assert report["models cache"] is False and report["venv"] is True
        finally:
            c.execute("UPDATE pgml.settings SET value = %s WHERE name = 'models_cache'", (Jsonb(before),))
            os.rmdir(readonly)
