"""Roles, what a role may load, and the limits: a DBA can give analysts pgml without the server."""

import hashlib
import os
import shutil
import tempfile

import psycopg
import pytest
from pgtest import hf_cache, install, one, sql_error, task
from psycopg.types.json import Jsonb

from pgml_plpy import settings

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


def test_pgml_admin_changes_the_limits_but_not_the_venv(as_role, setting):
    c = as_role(ADMIN)
    c.execute("UPDATE pgml.settings SET value = '5' WHERE name = 'max_inputs'")
    assert one(c, "SELECT value FROM pgml.settings WHERE name = 'max_inputs'") == 5
    assert sql_error(c, "UPDATE pgml.settings SET value = '\"many\"' WHERE name = 'max_inputs'").sqlstate == "22023"
    c.execute("UPDATE pgml.settings SET value = value")  # rewriting a trust setting unchanged changes nothing
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
    # only superusers skip models_path: a pgml_admin member is held to it like everyone else
    assert one(conn, query, (task("text-classification", os.path.join(folders, "outside", "model")),))
    err = sql_error(as_role(ADMIN), query, (task("text-classification", os.path.join(folders, "outside", "model")),))
    assert err.sqlstate == "42501" and "superuser" in err.diag.message_hint


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


# ------------------------------------------------------------------ pgml_admin cannot run code as the server


def test_settings_declare_what_they_protect():
    """Trust settings decide what code or weights are loaded, and from where: superusers only."""
    assert settings.TRUST_SETTINGS == {"allow_pickle", "huggingface_trust_remote_code",
                                       "huggingface_trust_remote_code_whitelist", "models_path", "hub_downloads",
                                       "huggingface_cache", "models_cache", "huggingface_whitelist", "runtimes",
                                       "secrets_path"}
    assert settings.LIMIT_SETTINGS == {"max_inputs", "max_models", "max_model_bytes", "torch_threads",
                                       "max_input_chars", "max_new_tokens", "max_sequences"}
    assert set(settings.DESCRIPTIONS) == settings.TRUST_SETTINGS | settings.LIMIT_SETTINGS


def snapshot(conn):
    """What a refused write must leave as it was: settings, the registry and its files, schema pgml."""
    return conn.execute("""
        SELECT (SELECT string_agg(name || '=' || value::text || '/' || coalesce(description, ''), ',' ORDER BY name)
                FROM pgml.settings),
               (SELECT string_agg(concat_ws('/', f.model_id, f.path, f.part, f.sha256, md5(f.data)), ','
                                  ORDER BY f.id) FROM pgml.files f),
               (SELECT string_agg(m::text, ',' ORDER BY m.id) FROM pgml.models m),
               (SELECT string_agg(d::text, ',' ORDER BY d.id) FROM pgml.deployments d),
               (SELECT string_agg(p::text, ',' ORDER BY p.id) FROM pgml.projects p),
               (SELECT count(*) FROM pgml.snapshots), (SELECT count(*) FROM pgml.logs),
               (SELECT count(*) FROM pg_class WHERE relnamespace = 'pgml'::regnamespace),
               (SELECT count(*) FROM pg_proc WHERE pronamespace = 'pgml'::regnamespace),
               (SELECT count(*) FROM pg_type WHERE typnamespace = 'pgml'::regnamespace),
               (SELECT nspacl::text FROM pg_namespace WHERE nspname = 'pgml')""").fetchone()


def refused(c, query, params=None):
    err = sql_error(c, query, params)
    assert err.sqlstate == "42501", (query, err.sqlstate, err.diag.message_primary)
    return err


@pytest.mark.parametrize("role", [ADMIN, USER])
def test_trust_settings_are_the_superusers(conn, as_role, role, setting):
    c = as_role(role)
    before = snapshot(conn)
    for name in sorted(settings.TRUST_SETTINGS):
        for query in ("UPDATE pgml.settings SET value = 'true' WHERE name = %s",
                      "UPDATE pgml.settings SET value = '[\"/\"]' WHERE name = %s",
                      "UPDATE pgml.settings SET value = '\"/elsewhere\"' WHERE name = %s",
                      "UPDATE pgml.settings SET name = name || '_old' WHERE name = %s",
                      "DELETE FROM pgml.settings WHERE name = %s",
                      "INSERT INTO pgml.settings (name, value) VALUES (%s, 'true') ON CONFLICT (name) DO NOTHING"):
            refused(c, query, (name,))
    refused(c, "UPDATE pgml.settings SET name = 'allow_pickle' WHERE name = 'max_inputs'")
    refused(c, "TRUNCATE pgml.settings")
    refused(c, "UPDATE pgml.settings SET description = 'x' WHERE name = 'max_inputs'")
    err = refused(as_role(ADMIN), "UPDATE pgml.settings SET value = 'true' WHERE name = 'allow_pickle'")
    assert "only a superuser" in err.diag.message_primary and "max_inputs" in err.diag.message_hint
    assert snapshot(conn) == before
    # a superuser changes them
    setting("hub_downloads", True)
    assert one(conn, "SELECT value FROM pgml.settings WHERE name = 'hub_downloads'") is True


@pytest.mark.parametrize("role", [ADMIN, USER])
def test_no_role_creates_objects_in_schema_pgml(conn, as_role, role):
    c = as_role(role)
    before = snapshot(conn)
    assert not one(c, "SELECT has_schema_privilege('pgml', 'CREATE')")
    for query in ("CREATE FUNCTION pgml.embed(varchar, varchar, jsonb) RETURNS real[] LANGUAGE sql "
                  "AS $$ SELECT ARRAY[1]::real[] $$",
                  "CREATE TABLE pgml.mine (a int)", "CREATE VIEW pgml.mine AS SELECT 1",
                  "CREATE TYPE pgml.mine AS ENUM ('a')",
                  "CREATE OPERATOR pgml.=== (FUNCTION = texteq, LEFTARG = text, RIGHTARG = text)",
                  "SELECT pgml._create_table('mine', ARRAY['a'], ARRAY['text']::regtype[], 'postgres')",
                  "SELECT pgml._create_table('mine', ARRAY['a'], ARRAY['text']::regtype[], 'pgml_user')"):
        refused(c, query)
    assert snapshot(conn) == before


def test_the_install_refuses_objects_planted_in_pgml(conn, dsn):
    """Earlier releases let pgml_admin create in schema pgml: an upgrade finds what it planted."""
    venv = one(conn, "SELECT pgml._venv()")
    conn.execute("CREATE FUNCTION pgml.embed(transformer varchar, text varchar, kwargs jsonb DEFAULT '{}') "
                 "RETURNS real[] LANGUAGE sql AS $$ SELECT ARRAY[1]::real[] $$")
    conn.execute(f"ALTER FUNCTION pgml.embed(varchar, varchar, jsonb) OWNER TO {ADMIN}")
    try:
        result = install(dsn, venv)
        assert result.returncode != 0
        assert f"pgml.embed(character varying,character varying,jsonb) (owner {ADMIN})" in result.stderr
    finally:
        conn.execute("DROP FUNCTION pgml.embed(varchar, varchar, jsonb)")
    assert install(dsn, venv).returncode == 0


def test_security_definer_functions_are_the_owners(conn):
    rows = conn.execute("""
        SELECT p.oid::regprocedure::text, r.rolsuper, coalesce(p.proconfig::text LIKE '%search_path=%', false),
               has_function_privilege('pgml_user', p.oid, 'EXECUTE') AND NOT pg_has_role('pgml_user', 'pgml_admin',
                                                                                           'USAGE')
        FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner
        WHERE p.pronamespace = 'pgml'::regnamespace AND p.prosecdef""").fetchall()
    assert {name.split("(")[0] for name, *_ in rows} >= {"pgml._create_table", "pgml._registry_file",
                                                          "pgml._registry_deploy"}
    # pgml_user runs none of them but the vectorizers' bookkeeping, each checking that the session may act
    # as the vectorizer's owner (tests/test_vectorizer.py tries them as another role)
    for name, superuser, pinned, by_users in rows:
        assert superuser and pinned and (not by_users or name.startswith("pgml._vectorizer_")), name
    assert {name.split("(")[0] for name, *_, by_users in rows if by_users} == {
        f"pgml._vectorizer_{n}" for n in ("get", "name_taken", "register", "config", "due", "claim", "done", "finish",
                                          "swapped", "rebuild", "retry", "unregister")}


def test_the_key_is_the_servers(conn):
    seen = []
    conn.add_notice_handler(lambda diag: seen.append(diag.message_primary))
    conn.execute("DO LANGUAGE plpython3u $$\nimport os\nplpy.notice(oct(os.stat('pgml_plpy.key').st_mode & 0o777))\n$$")
    assert seen[-1] == "0o600"


def legacy_files(folder):
    """(path, data) of a model folder's files, as earlier releases stored them (one part each)."""
    return [(name, open(os.path.join(folder, name), "rb").read()) for name in sorted(os.listdir(folder))
            if not name.startswith(".")]


@pytest.fixture(scope="module")
def legacy(conn, dsn, models, roles):
    """A tuned model stored the way earlier releases did (no files_mac column, no MAC), then the install
    re-run as the upgrade: its id."""
    conn.execute("DELETE FROM pgml.projects WHERE name = 'legacy'")
    conn.execute("ALTER TABLE pgml.models DROP COLUMN files_mac")
    project = one(conn, "INSERT INTO pgml.projects (name, task) VALUES ('legacy', 'text-classification') RETURNING id")
    model = one(conn, "INSERT INTO pgml.models (project_id, task, base_model, status, metrics) VALUES "
                      "(%s, 'text-classification', %s, 'successful', '{\"f1\": 1.0}') RETURNING id",
                (project, models["bert-sentiment"]))
    for path, data in legacy_files(models["bert-sentiment"]):
        conn.execute("INSERT INTO pgml.files (model_id, path, part, sha256, data) VALUES (%s, %s, 0, %s, %s)",
                     (model, path, hashlib.sha256(data).hexdigest(), data))
    conn.execute("INSERT INTO pgml.deployments (project_id, model_id, strategy) VALUES (%s, %s, 'new_score')",
                 (project, model))
    conn.execute("UPDATE pgml.settings SET value = '3' WHERE name = 'max_models'")
    try:
        result = install(dsn, one(conn, "SELECT pgml._venv()"))
        assert result.returncode == 0, result.stderr
        assert one(conn, "SELECT value FROM pgml.settings WHERE name = 'max_models'") == 3
    finally:
        conn.execute("UPDATE pgml.settings SET value = '8' WHERE name = 'max_models'")
    yield model
    conn.execute("DELETE FROM pgml.projects WHERE name = 'legacy'")


def serve_legacy(c):
    return one(c, "SELECT pgml.transform(task => %s, inputs => ARRAY['I love it'])",
               (Jsonb({"task": "text-classification", "model": "legacy"}),))


def test_the_upgrade_signs_the_models_stored_before(legacy, conn, as_role):
    assert one(conn, "SELECT files_mac FROM pgml.models WHERE id = %s", (legacy,))
    assert serve_legacy(as_role(USER))[0]["label"] == "POSITIVE"


@pytest.mark.parametrize("role", [ADMIN, USER])
def test_the_registry_is_written_only_by_the_server(legacy, conn, as_role, role):
    c = as_role(role)
    before = snapshot(conn)
    for query in (
            "INSERT INTO pgml.files (model_id, path, part, sha256, data) VALUES (%(m)s, 'evil.py', 0, 'x', 'x')",
            "UPDATE pgml.files SET data = 'x' WHERE model_id = %(m)s",
            "DELETE FROM pgml.files WHERE model_id = %(m)s",
            "TRUNCATE pgml.files",
            "UPDATE pgml.models SET base_model = '/tmp' WHERE id = %(m)s",
            "UPDATE pgml.models SET lora = true WHERE id = %(m)s",
            "UPDATE pgml.models SET files_mac = NULL WHERE id = %(m)s",
            "INSERT INTO pgml.models (project_id, task, base_model, status) SELECT project_id, task, base_model, "
            "'successful' FROM pgml.models WHERE id = %(m)s",
            "INSERT INTO pgml.deployments (project_id, model_id, strategy) SELECT project_id, id, 'specific' "
            "FROM pgml.models WHERE id = %(m)s",
            "DELETE FROM pgml.deployments WHERE model_id = %(m)s",
            "INSERT INTO pgml.projects (name, task) VALUES ('other', 'text-classification')",
            "UPDATE pgml.projects SET name = 'other' WHERE name = 'legacy'",
            "INSERT INTO pgml.logs (model_id, logs) VALUES (%(m)s, '{}')",
            "INSERT INTO pgml.snapshots (relation_name, test_size, test_sampling) VALUES ('x', 0.25, 'random')",
            "SELECT pgml._registry_file(%(m)s, 'evil.py', 1, 'x', 'x')",
            "SELECT pgml._registry_finish(%(m)s, '{}', '{}', 'x')",
            "SELECT pgml._registry_progress(%(m)s, '{}')",
            "SELECT pgml._registry_fail(%(m)s, 'failed', 'x')",
            "SELECT pgml._registry_run(%(m)s)",
            "SELECT pgml._sign_models()"):
        refused(c, query, {"m": legacy})
    assert snapshot(conn) == before


def failing(c, query, params=None) -> psycopg.Error:
    """The error of a statement inside a transaction (which it aborts)."""
    with pytest.raises(psycopg.Error) as info:
        c.execute(query, params)
    return info.value


def test_a_model_written_by_hand_is_never_served(legacy, dsn, conn, models):
    """Even through the registry functions themselves, a pgml_admin gets no weights of its choosing
    served: only the server's own tuning code can sign them."""
    with psycopg.connect(dsn, user=ADMIN, password="pw") as c:  # one transaction, rolled back
        project = one(c, "SELECT pgml._registry_project('forged', 'text-classification')")
        model = one(c, "SELECT pgml._registry_start(%s, NULL, 'text-classification', 'x', '{}', false)", (project,))
        for path, data in legacy_files(models["bert-sentiment"]):
            c.execute("SELECT pgml._registry_file(%s, %s, 0, %s, %s)",
                      (model, path, hashlib.sha256(data).hexdigest(), data))
        c.execute("SELECT pgml._registry_finish(%s, '{}', '{}', repeat('0', 64))", (model,))
        assert c.execute("SELECT * FROM pgml._registry_deploy(%s, 'specific')", (model,)).fetchone()[0] == "forged"
        err = failing(c, "SELECT pgml.transform(task => %s, inputs => ARRAY['x'])",
                      (Jsonb({"task": "text-classification", "model": "forged"}),))
        assert err.sqlstate == "XX001" and "MAC does not match" in err.diag.message_primary
        c.rollback()
    # a run's rows are written only by the backend tuning it
    with psycopg.connect(dsn, user=ADMIN, password="pw") as runner, \
            psycopg.connect(dsn, user=ADMIN, password="pw", autocommit=True) as other:
        project = one(runner, "SELECT pgml._registry_project('forged', 'text-classification')")
        model = one(runner, "SELECT pgml._registry_start(%s, NULL, 'text-classification', 'x', '{}', false)",
                    (project,))
        runner.commit()
        try:
            for query in ("SELECT pgml._registry_file(%s, 'x', 0, 'x', 'x')",
                          "SELECT pgml._registry_finish(%s, '{}', '{}', 'x')"):
                assert sql_error(other, query, (model,)).sqlstate == "42501"
        finally:
            conn.execute("DELETE FROM pgml.projects WHERE name = 'forged'")


@pytest.mark.parametrize("tamper, sqlstate, message", [
    # a file replaced along with its checksum
    ("UPDATE pgml.files SET data = convert_to('[PAD]', 'UTF8'), "
     "sha256 = encode(sha256(convert_to('[PAD]', 'UTF8')), 'hex') WHERE model_id = %(m)s AND path = 'vocab.txt'",
     "XX001", "MAC does not match"),
    ("INSERT INTO pgml.files (model_id, path, part, sha256, data) VALUES (%(m)s, 'extra.json', 0, "
     "encode(sha256('{}'::bytea), 'hex'), '{}'::bytea)", "XX001", "MAC does not match"),
    ("UPDATE pgml.models SET base_model = '/tmp' WHERE id = %(m)s", "XX001", "MAC does not match"),
    ("UPDATE pgml.models SET files_mac = NULL WHERE id = %(m)s", "55000", "is not signed"),
])
def test_a_forged_model_is_refused(legacy, dsn, tamper, sqlstate, message):
    """Rows a superuser (or a restored dump) changed: checksums that match are not enough."""
    with psycopg.connect(dsn) as c:  # a new backend, which has not loaded the model; rolled back
        c.execute(tamper, {"m": legacy})
        err = failing(c, "SELECT pgml.transform(task => %s, inputs => ARRAY['x'])",
                      (Jsonb({"task": "text-classification", "model": "legacy"}),))
        assert err.sqlstate == sqlstate and message in err.diag.message_primary, err.diag.message_primary
        assert "install.sql" in err.diag.message_hint or "pgml.tune" in err.diag.message_hint
        c.rollback()
    with psycopg.connect(dsn, autocommit=True) as c:
        assert serve_legacy(c)[0]["label"] == "POSITIVE"


def test_pgml_admin_deletes_projects_and_models(legacy, conn, as_role):
    c = as_role(ADMIN)
    project = one(conn, "INSERT INTO pgml.projects (name, task) VALUES ('doomed', 'text-classification') RETURNING id")
    conn.execute("INSERT INTO pgml.models (project_id, task, base_model, status) VALUES (%s, 'x', 'x', 'failed')",
                 (project,))
    c.execute("DELETE FROM pgml.models WHERE project_id = %s", (project,))
    c.execute("DELETE FROM pgml.projects WHERE id = %s", (project,))
    assert one(conn, "SELECT count(*) FROM pgml.projects WHERE id = %s", (project,)) == 0
    assert refused(as_role(USER), "DELETE FROM pgml.projects WHERE name = 'legacy'")
