"""Roles, what a role may load, and the limits: a DBA can give analysts pgml without the server."""

import os
import shutil
import tempfile

import psycopg
import pytest
from pgtest import hf_cache, one, sql_error, task
from psycopg.types.json import Jsonb

USER, ADMIN, NOBODY = "pgml_test_user", "pgml_test_admin", "pgml_test_nobody"


@pytest.fixture(scope="module")
def roles(conn):
    for name, grant in ((USER, "IN ROLE pgml_user"), (ADMIN, "IN ROLE pgml_admin"), (NOBODY, "")):
        conn.execute(f"DROP OWNED BY {name}") if one(conn, "SELECT count(*) FROM pg_roles WHERE rolname = %s",
                                                   (name,)) else None
        conn.execute(f"DROP ROLE IF EXISTS {name}")
        conn.execute(f"CREATE ROLE {name} LOGIN PASSWORD 'pw' {grant}")
    yield
    for name in (USER, ADMIN, NOBODY):
        conn.execute(f"DROP OWNED BY {name}")
        conn.execute(f"DROP ROLE {name}")


@pytest.fixture
def as_role(dsn, roles):
    opened = []

    def connect(name):
        c = psycopg.connect(dsn, user=name, password="pw", autocommit=True)
        opened.append(c)
        return c

    yield connect
    for c in opened:
        c.close()


@pytest.fixture
def setting(conn):
    """Change settings for one test; they come back afterwards."""
    saved = dict(conn.execute("SELECT name, value FROM pgml.settings").fetchall())

    def change(name, value):
        conn.execute("UPDATE pgml.settings SET value = %s WHERE name = %s", (Jsonb(value), name))

    yield change
    for name, value in saved.items():
        conn.execute("UPDATE pgml.settings SET value = %s WHERE name = %s AND value <> %s",
                     (Jsonb(value), name, Jsonb(value)))


def test_nothing_is_executable_by_public(conn):
    public = conn.execute("""
        SELECT p.oid::regprocedure::text FROM pg_proc p
        WHERE p.pronamespace = 'pgml'::regnamespace AND has_function_privilege('public', p.oid, 'EXECUTE')
    """).fetchall()
    assert public == []


def test_schema_usage_alone_calls_nothing(conn, as_role):
    conn.execute(f"GRANT USAGE ON SCHEMA pgml TO {NOBODY}")
    try:
        c = as_role(NOBODY)
        for query in ("SELECT pgml.version()", "SELECT pgml.transform('text-classification', '{}', ARRAY['x'])",
                      "SELECT pgml.embed('x', 'y')", "SELECT * FROM pgml.loaded_models()"):
            assert sql_error(c, query).sqlstate == "42501"
    finally:
        conn.execute(f"REVOKE USAGE ON SCHEMA pgml FROM {NOBODY}")


def test_pgml_user_runs_models_but_administers_nothing(conn, as_role, models, setting):
    setting("models_path", [os.path.dirname(models["bert-sentiment"])])
    c = as_role(USER)
    out = one(c, "SELECT pgml.transform(%s, inputs => ARRAY['I love it'])",
              (task("text-classification", models["bert-sentiment"]),))
    assert out[0]["label"] == "POSITIVE"
    assert len(one(c, "SELECT pgml.embed('sentence-transformers/all-MiniLM-L6-v2', 'hi')")) == 384
    assert one(c, "SELECT count(*) FROM pgml.chunk('character', 'a b c', '{\"chunk_size\": 2, \"chunk_overlap\": 0}')")
    assert one(c, "SELECT count(*) FROM pgml.loaded_models()") >= 2
    assert one(c, "SELECT value FROM pgml.settings WHERE name = 'max_inputs'") == 10000
    for query in ("SELECT * FROM pgml.tune('p', 'text-classification', 'pg_class', 'relname')",
                  "SELECT * FROM pgml.load_dataset('/etc/passwd')",
                  "SELECT * FROM pgml.deploy(1)",
                  "CALL pgml.embed_table('pg_class', 'relname', 'e')",
                  "SELECT pgml.activate_venv('/tmp')",
                  "UPDATE pgml.settings SET value = 'true' WHERE name = 'hub_downloads'",
                  "INSERT INTO pgml.projects (name, task) VALUES ('x', 'y')"):
        assert sql_error(c, query).sqlstate == "42501", query


def test_pgml_admin_changes_settings_but_not_the_venv(as_role, setting):
    c = as_role(ADMIN)
    c.execute("UPDATE pgml.settings SET value = '5' WHERE name = 'max_inputs'")
    assert one(c, "SELECT value FROM pgml.settings WHERE name = 'max_inputs'") == 5
    assert sql_error(c, "UPDATE pgml.settings SET value = '\"many\"' WHERE name = 'max_inputs'").sqlstate == "55000"
    assert sql_error(c, "SELECT pgml.activate_venv('/tmp')").sqlstate == "42501"
    assert sql_error(c, "CREATE OR REPLACE FUNCTION pgml._venv() RETURNS text LANGUAGE sql AS $$ SELECT '/tmp' $$"
                     ).sqlstate == "42501"


def test_gucs_decide_nothing(as_role, models):
    c = as_role(USER)
    for name in ("models_path", "huggingface_trust_remote_code", "hub_downloads", "venv"):
        c.execute(f"SET pgml.{name} = 'true'")
    err = sql_error(c, "SELECT pgml.transform(%s, inputs => ARRAY['x'])",
                    (task("text-classification", models["bert-sentiment"]),))
    assert err.sqlstate == "42501" and "models_path" in err.diag.message_hint


@pytest.fixture
def folders(models):
    """allowed/ holding a model, a link from allowed/ to a model outside it, and outside/."""
    root = tempfile.mkdtemp(prefix="paths_", dir=os.path.dirname(models["bert-sentiment"]))
    os.chmod(root, 0o755)
    for name in ("allowed", "outside"):
        os.mkdir(os.path.join(root, name))
        os.chmod(os.path.join(root, name), 0o755)
    shutil.copytree(models["bert-sentiment"], os.path.join(root, "allowed", "model"))
    shutil.copytree(models["bert-sentiment"], os.path.join(root, "outside", "model"))
    os.symlink(os.path.join(root, "outside", "model"), os.path.join(root, "allowed", "link"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_models_path_is_enforced_for_users(as_role, conn, folders, setting):
    setting("models_path", [os.path.join(folders, "allowed")])
    c = as_role(USER)
    query = "SELECT pgml.transform(%s, inputs => ARRAY['I love it'])"
    assert one(c, query, (task("text-classification", os.path.join(folders, "allowed", "model")),))
    for trick in ("outside/model", "allowed/../outside/model", "allowed/link", "allowed/./../outside/model"):
        err = sql_error(c, query, (task("text-classification", os.path.join(folders, trick)),))
        assert err.sqlstate == "42501", trick
    assert one(conn, query, (task("text-classification", os.path.join(folders, "outside", "model")),))  # admins
    assert one(as_role(ADMIN), query, (task("text-classification", os.path.join(folders, "outside", "model")),))


def test_huggingface_whitelist(conn, models, setting, folders):
    cache = os.path.join(folders, "hf")
    hf_cache(cache, models["bert-sentiment"], ["acme/sentiment", "other/sentiment"])
    setting("huggingface_cache", cache)
    setting("huggingface_whitelist", ["acme/*"])
    query = "SELECT pgml.transform(%s, inputs => ARRAY['I love it'])"
    assert one(conn, query, (task("text-classification", "acme/sentiment"),))[0]["label"] == "POSITIVE"
    err = sql_error(conn, query, (task("text-classification", "other/sentiment"),))
    assert err.sqlstate == "42501" and "huggingface_whitelist" in err.diag.message_primary


def test_trust_remote_code_whitelist(conn, models, setting):
    setting("huggingface_trust_remote_code", True)
    setting("huggingface_trust_remote_code_whitelist", ["acme/trusted"])
    err = sql_error(conn, "SELECT pgml.transform(%s, inputs => ARRAY['x'])",
                    (task("text-classification", models["bert-sentiment"], trust_remote_code=True),))
    assert err.sqlstate == "42501" and "may not run its own code" in err.diag.message_primary


def test_pickle_weights_only_where_allowed(conn, models, folders, setting):
    import torch
    from safetensors.torch import load_file

    folder = os.path.join(folders, "allowed", "pickled")
    shutil.copytree(models["bert-sentiment"], folder)
    weights = load_file(os.path.join(folder, "model.safetensors"))
    os.remove(os.path.join(folder, "model.safetensors"))
    torch.save(weights, os.path.join(folder, "pytorch_model.bin"))
    os.chmod(os.path.join(folder, "pytorch_model.bin"), 0o644)
    query = "SELECT pgml.transform(%s, inputs => ARRAY['I love it'])"
    err = sql_error(conn, query, (task("text-classification", folder),))
    assert err.sqlstate == "42501" and "safetensors" in err.diag.message_primary
    assert "allow_pickle" in err.diag.message_hint
    setting("allow_pickle", True)
    assert one(conn, query, (task("text-classification", folder),))[0]["label"] == "POSITIVE"


@pytest.mark.parametrize("name, value, call", [
    ("max_inputs", 3, "SELECT pgml.transform(%s, inputs => ARRAY['a', 'b', 'c', 'd'])"),
    ("max_input_chars", 10, "SELECT pgml.transform(%s, inputs => ARRAY['a', repeat('b', 11)])"),
    ("max_new_tokens", 8, "SELECT pgml.transform(%s, '{\"max_new_tokens\": 9}', ARRAY['a'])"),
    ("max_new_tokens", 8, "SELECT pgml.transform(%s, '{\"max_tokens\": 1000000000}', ARRAY['a'])"),
    ("max_sequences", 4, "SELECT pgml.transform(%s, '{\"num_beams\": 5}', ARRAY['a'])"),
    ("max_sequences", 4, "SELECT pgml.transform(%s, '{\"n\": 5, \"do_sample\": true}', ARRAY['a'])"),
])
def test_limits(conn, models, setting, name, value, call):
    setting(name, value)
    err = sql_error(conn, call, (task("text-generation", models["gpt2-chat"]),))
    assert err.sqlstate == "54000" and name in err.diag.message_primary and name in err.diag.message_hint


def test_limits_apply_to_embeddings(conn, setting):
    setting("max_inputs", 2)
    err = sql_error(conn, "SELECT pgml.embed('sentence-transformers/all-MiniLM-L6-v2', ARRAY['a', 'b', 'c'])")
    assert err.sqlstate == "54000"
