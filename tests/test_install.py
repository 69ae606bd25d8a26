"""The install contract: one SQL script, re-runnable as an upgrade, venv recorded safely."""

import subprocess
from pathlib import Path

import psycopg
import pytest
from pgtest import install, one, sql_error
from psycopg.types.json import Jsonb

import pgml_plpy

REPO = Path(__file__).resolve().parent.parent


def test_version_and_dependencies(conn):
    assert one(conn, "SELECT pgml.version()") == pgml_plpy.__version__
    assert one(conn, "SELECT pgml.python_version()").startswith("3.")
    packages = dict(conn.execute("SELECT * FROM pgml.validate_python_dependencies()").fetchall())
    assert {"torch", "transformers"} <= set(packages)
    assert one(conn, "SELECT pgml.python_package_version('transformers')") == packages["transformers"]
    assert one(conn, "SELECT pgml.python_package_version('no-such-package')") is None


def test_every_function_pins_search_path(conn):
    """Functions pin it with SET; a procedure that commits cannot, and sets it in each transaction; the
    similarity functions' SQL bodies are inlined (a SET clause would prevent it) and name only pgml's
    functions, pgml._array_bytes is C code that looks nothing up, and pgml._similarity, called once per
    row, runs no SQL but the schema-qualified activation."""
    unpinned = conn.execute("""
        SELECT p.oid::regprocedure::text FROM pg_proc p
        WHERE p.pronamespace = 'pgml'::regnamespace
          AND NOT coalesce(p.proconfig::text LIKE '%search_path=%', false)""").fetchall()
    assert sorted(unpinned) == [  # pgml.tune resolves relation_name in the caller's search_path (see tune.sql)
        ("pgml._array_bytes(anyarray)",),
        ("pgml._similarity(text,bytea,bytea)",),
        ("pgml.cosine_distance(real[],real[])",),
        ("pgml.cosine_similarity(real[],real[])",),
        ("pgml.dot_product(real[],real[])",),
        ("pgml.embed_table(regclass,text,text,text,jsonb,integer)",),
        ("pgml.run_vectorizer(text)",),
        ("pgml.tune(text,text,text,text,text,jsonb,real,pgml.sampling,boolean,boolean)",),
        ("pgml.tune_run(text,text,text,text,text,jsonb,real,pgml.sampling,boolean,boolean,bigint,text,boolean)",)]


def test_reinstall_is_an_upgrade(dsn, conn):
    venv = one(conn, "SELECT pgml._venv()")
    before = one(conn, "SELECT value FROM pgml.settings WHERE name = 'torch_threads'")
    conn.execute("UPDATE pgml.settings SET value = '2' WHERE name = 'torch_threads'")
    try:
        result = install(dsn, venv)
        assert result.returncode == 0, result.stderr
        # a DBA's setting survives the upgrade
        assert one(conn, "SELECT value FROM pgml.settings WHERE name = 'torch_threads'") == 2
    finally:
        conn.execute("UPDATE pgml.settings SET value = %s WHERE name = 'torch_threads'", (Jsonb(before),))


def test_install_without_venv_fails_cleanly(dsn):
    result = subprocess.run(["psql", "-X", "-q", "-d", dsn, "-f", str(REPO / "sql" / "install.sql")],
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "venv" in result.stderr and "-v venv=" in result.stderr


def test_a_wrong_venv_is_refused_and_nothing_changes(dsn, conn):
    before = one(conn, "SELECT pgml._venv()")
    result = install(dsn, "/nonexistent")
    assert result.returncode != 0 and "does not exist" in result.stderr
    assert one(conn, "SELECT pgml._venv()") == before


@pytest.fixture
def analyst(conn):
    conn.execute("DROP ROLE IF EXISTS pgml_test_analyst")
    conn.execute("CREATE ROLE pgml_test_analyst LOGIN PASSWORD 'analyst' IN ROLE pgml_user")
    yield "pgml_test_analyst"
    conn.execute("DROP ROLE pgml_test_analyst")


def test_only_a_superuser_can_change_the_venv_or_settings(dsn, analyst):
    with psycopg.connect(dsn, user=analyst, password="analyst", autocommit=True) as c:
        err = sql_error(c, "SELECT pgml.activate_venv('/tmp')")
        assert err.sqlstate == "42501"
        err = sql_error(c, "CREATE OR REPLACE FUNCTION pgml._venv() RETURNS text LANGUAGE sql AS $$SELECT '/tmp'$$")
        assert err.sqlstate == "42501"
        err = sql_error(c, "UPDATE pgml.settings SET value = 'true' WHERE name = 'hub_downloads'")
        assert err.sqlstate == "42501"
        # a GUC placeholder is settable by anyone, and decides nothing
        c.execute("SET pgml.venv = '/tmp/evil'")
        assert one(c, "SELECT pgml.version()") == pgml_plpy.__version__


def test_package_and_sql_version_mismatch_is_explained(dsn, conn):
    define = ("CREATE OR REPLACE FUNCTION pgml._sql_version() RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE "
              "SET search_path = pg_catalog, pg_temp AS $$ SELECT '{}'::text $$")
    conn.execute(define.format("0.0.1"))
    try:
        # activation happens once per backend: a new one sees the mismatch
        with psycopg.connect(dsn, autocommit=True) as fresh:
            err = sql_error(fresh, "SELECT pgml.version()")
            assert err.sqlstate == "55000"
            assert "0.0.1" in err.diag.message_primary and "install.sql" in err.diag.message_hint
    finally:
        conn.execute(define.format(pgml_plpy.__version__))
