"""The shared runtime on Ray Serve (python -m pgml_plpy.serve), through SQL routes.

The module starts the serve command itself (loopback, a token and TLS with a certificate made
here) and a PostgreSQL of its own whose server trusts that certificate (SSL_CERT_FILE), and
compares every kind of call routed there with the same call in a backend.
"""

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import psycopg
import pytest
import tiny_models as tm
from conftest import VENV, local_cluster
from localengine import free_port
from pgtest import eventually, long_gpt2_folder, one, same, sql_error, task
from psycopg.types.json import Jsonb

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

from localserve import LocalServe  # noqa: E402

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
GREEDY = {"do_sample": False, "max_new_tokens": 8}
LONG = {"do_sample": False, "max_new_tokens": 1900, "min_new_tokens": 1900}
MAX_MODELS = 4


def for_postgres(path: Path, mode: int) -> None:
    """Owned by the server's OS user (when the tests run as root), with mode."""
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(path, owner.pw_uid, owner.pw_gid)
    os.chmod(path, mode)


@pytest.fixture(scope="module")
def secrets():
    """A token only the server's OS user (and root, running the runtime) reads; a certificate for 127.0.0.1."""
    root = Path(tempfile.mkdtemp(prefix="pgml_ray_"))
    os.chmod(root, 0o755)
    token = root / "token"
    token.write_text("s3cret-token-for-tests\n")
    for_postgres(token, 0o600)
    wrong = root / "wrong-token"
    wrong.write_text("not-the-token\n")
    for_postgres(wrong, 0o600)
    cert, key = root / "cert.pem", root / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    os.chmod(key, 0o600)
    os.chmod(cert, 0o644)
    yield {"token": str(token), "wrong": str(wrong), "cert": str(cert), "key": str(key), "root": root}
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def runtime(secrets):
    cache = secrets["root"] / "models-cache"
    serve = LocalServe(VENV, ["--port", str(free_port()), "--num-cpus", "2", "--max-models", str(MAX_MODELS),
                              "--token-file", secrets["token"], "--tls-cert", secrets["cert"], "--tls-key",
                              secrets["key"], "--models-cache", str(cache)]).start()
    try:
        yield serve
    finally:
        assert serve.stop() == 0, serve.output()[-3000:]
        assert serve.wait_gone() == [], "the serve command left processes behind"
    assert "pgml_plpy serve: stopping" in serve.output()


@pytest.fixture(scope="module")
def db(secrets, models):
    """A PostgreSQL of this module whose server trusts the runtime's certificate."""
    with local_cluster(env={"SSL_CERT_FILE": secrets["cert"]}) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def admin(db):
    with psycopg.connect(db.dsn, autocommit=True) as c:
        yield c


@pytest.fixture
def connect(db):
    opened = []

    def new():
        c = psycopg.connect(db.dsn, autocommit=True)
        opened.append(c)
        return c

    yield new
    for c in opened:
        c.close()


def ray_route(runtime, secrets, **options) -> dict:
    return {"model": "*", "runtime": "ray", "url": runtime.url, "token_file": secrets["token"], "timeout": 300,
            **options}


@pytest.fixture
def routes(admin):
    def set_routes(value):
        admin.execute("UPDATE pgml.settings SET value = %s WHERE name = 'runtimes'", (Jsonb(value),))

    yield set_routes
    set_routes([])


@pytest.fixture
def routed(routes, runtime, secrets):
    """Every model routed to the runtime."""
    routes([ray_route(runtime, secrets)])


def heavy_modules(conn) -> list[str]:
    """The heavy libraries this backend imported (numpy: 7.5 MB of each routed backend)."""
    seen = []
    conn.add_notice_handler(lambda d: seen.append(d.message_primary))
    conn.execute("DO $$ import sys; plpy.notice(','.join(sorted(m for m in sys.modules if m.split('.')[0] in "
                 "('torch', 'transformers', 'sentence_transformers', 'ray', 'numpy')))) $$ LANGUAGE plpython3u")
    return [m for m in seen[-1].split(",") if m]


def state(conn, app="pgml-r1-c1-g0"):
    """The runtime's state for the application, asked from inside a backend (the route's own client)."""
    seen = []
    conn.add_notice_handler(lambda d: seen.append(d.message_primary))
    conn.execute("SELECT pgml._activate()")
    code = ("import json\nfrom pgml_plpy.server import _settings\nfrom pgml_plpy.runtimes import runtime_of\n"
            f"runtime = [runtime_of(r) for r in _settings(plpy).runtimes if runtime_of(r).app == {app!r}][0]\n"
            "plpy.notice(json.dumps(runtime.state()))")
    conn.execute(f"DO $$\n{code}\n$$ LANGUAGE plpython3u")
    return json.loads(seen[-1])


def through_the_serve_command(conn, app="pgml-r1-c1-g0") -> None:
    """Have this backend call its replica through the serve command's port, as it calls a replica it
    cannot reach on the replica's own port (on another node than a serve command on loopback)."""
    conn.execute("SELECT pgml._activate()")
    code = ("from pgml_plpy.server import _settings\nfrom pgml_plpy.runtimes import runtime_of\n"
            f"runtime = [runtime_of(r) for r in _settings(plpy).runtimes if runtime_of(r).app == {app!r}][0]\n"
            "runtime._replica, runtime._looked_up = runtime.client, float('inf')")
    conn.execute(f"DO $$\n{code}\n$$ LANGUAGE plpython3u")


def qa(question, context):
    return json.dumps({"question": question, "context": context})


CALLS = {
    "text-classification": ("SELECT pgml.transform(%s, inputs => %s::text[])",
                            lambda m: (task("text-classification", m["bert-sentiment"]), ["I love it", "I hate it"])),
    "token-classification": ("SELECT pgml.transform(%s, inputs => %s::text[])",
                             lambda m: (task("token-classification", m["bert-ner"]), ["Anna lives in Paris."])),
    "zero-shot-classification": ("SELECT pgml.transform(%s, %s, ARRAY['I love football'])",
                                 lambda m: (task("zero-shot-classification", m["bert-nli"]),
                                            Jsonb({"candidate_labels": ["sports", "politics"]}))),
    "fill-mask": ("SELECT pgml.transform(%s, inputs => ARRAY[%s])",
                  lambda m: (task("fill-mask", m["bert-mlm"]), "Paris is the [MASK] of France.")),
    "question-answering": ("SELECT pgml.transform(%s, inputs => %s::text[])",
                           lambda m: (task("question-answering", m["bert-qa"]),
                                      [qa("Where does Omar live?", "Omar lives in Paris.")])),
    "text-generation": ("SELECT pgml.transform(%s, %s, ARRAY['The cat', 'The dog'])",
                        lambda m: (task("text-generation", m["gpt2-chat"]), Jsonb(GREEDY))),
    "conversational": ("SELECT pgml.transform(%s, %s, %s::jsonb[])",
                       lambda m: (task("conversational", m["gpt2-chat"]), Jsonb(GREEDY),
                                  [json.dumps({"role": "user", "content": "What is the capital of France?"})])),
    "translation": ("SELECT pgml.transform(%s, %s, ARRAY['the cat', 'the dog'])",
                    lambda m: (task("translation_en_to_fr", m["t5-tiny"]), Jsonb(GREEDY))),
    "summarization": ("SELECT pgml.transform(%s, %s, ARRAY['The cat sat on the mat and looked at the birds.'])",
                      lambda m: (task("summarization", m["t5-tiny"]), Jsonb(GREEDY))),
    "embed": ("SELECT pgml.embed(%s, %s::text[])", lambda m: (MINILM, ["hello world", "a second, longer text"])),
    "embed one": ("SELECT pgml.embed(%s, 'hello', '{\"normalize_embeddings\": true}')", lambda m: (MINILM,)),
    "rank": ("SELECT json_agg(r ORDER BY r.score DESC) FROM pgml.rank(%s, 'food', %s::text[]) r",
             lambda m: (m["bert-reranker"], ["We ate pizza.", "The team won.", "She baked a cake."])),
    "stream": ("SELECT array_agg(p) FROM pgml.transform_stream(%s, %s, 'The cat') p",
               lambda m: (task("text-generation", m["gpt2-chat"]), Jsonb(GREEDY))),
}


@pytest.mark.parametrize("name", list(CALLS))
def test_routed_results_equal_the_backends(name, admin, connect, routes, runtime, secrets, models):
    query, params = CALLS[name]
    in_backend = one(admin, query, params(models))
    routes([ray_route(runtime, secrets)])
    fresh = connect()
    routed = one(fresh, query, params(models))
    same(routed, in_backend, rel=0, abs=1e-5)  # the bound
    assert heavy_modules(fresh) == [], "a backend whose calls go to routes imported torch or numpy"


def test_the_runtime_serves_every_database_with_one_copy(admin, connect, routed, runtime, secrets, db):
    admin.execute("DROP DATABASE IF EXISTS pgml_ray_other")
    admin.execute("CREATE DATABASE pgml_ray_other")
    other_dsn = db.dsn.replace("dbname=postgres", "dbname=pgml_ray_other")
    installed = subprocess.run([str(db.bin / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-v",
                                f"venv={VENV.resolve()}", "-f", str(REPO / "sql" / "install.sql"), other_dsn],
                               capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr
    with psycopg.connect(other_dsn, autocommit=True) as other:
        other.execute("UPDATE pgml.settings SET value = %s WHERE name = 'runtimes'",
                      (Jsonb([ray_route(runtime, secrets)]),))
        a, b = connect(), other
        first = one(a, "SELECT pgml.embed(%s, 'one copy')", (MINILM,))
        before = state(a)
        hits = next(e["hits"] for e in before["loaded"] if e["model"] == MINILM)
        assert one(b, "SELECT pgml.embed(%s, 'one copy')", (MINILM,)) == first
        assert one(connect(), "SELECT pgml.embed(%s, 'one copy')", (MINILM,)) == first
        after = state(a)
        assert after["pid"] == before["pid"]
        copies = [e for e in after["loaded"] if e["model"] == MINILM]
        assert len(copies) == 1 and copies[0]["hits"] == hits + 2
        rows = a.execute("SELECT function, model, runtime FROM pgml.loaded_models()").fetchall()
        assert ("embed", MINILM, f"ray {runtime.url} pgml-r1-c1-g0") in rows
        assert not [r for r in rows if r[2] == "backend"], "the routed backend loaded a model itself"
    admin.execute("DROP DATABASE pgml_ray_other")


def test_least_recently_used_models_are_evicted(connect, routed, models):
    c = connect()
    names = ["bert-sentiment", "bert-nli", "bert-mlm", "bert-ner", "bert-qa"]
    for name in names:  # one more than the runtime keeps
        one(c, "SELECT pgml.transform(%s, inputs => ARRAY['x'])", (task("text-classification", models[name]),))
    loaded = [e["model"] for e in state(c)["loaded"]]
    assert len(loaded) == MAX_MODELS
    assert models["bert-qa"] in loaded and models["bert-sentiment"] not in loaded


def test_concurrent_callers_are_batched(db, routed, connect):
    texts = [f"text number {i} about {w}" for i, w in enumerate(["cats", "rain", "money", "music"] * 2)]
    alone = {t: one(connect(), "SELECT pgml.embed(%s, %s)", (MINILM, t)) for t in texts[:2]}
    conns = [connect() for _ in texts]
    for c in conns:
        one(c, "SELECT pgml.embed(%s, 'warm up')", (MINILM,))
    direct = state(conns[0])["direct"]
    got, start = {}, threading.Barrier(len(conns))

    def call(c, text):
        start.wait()
        for _ in range(5):
            got[text] = one(c, "SELECT pgml.embed(%s, %s)", (MINILM, text))

    workers = [threading.Thread(target=call, args=(c, t)) for c, t in zip(conns, texts)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert state(conns[0])["largest_batch"] > 1, "no two callers' texts ever ran together"
    # the calls went to the replica's own port, not through the serve command
    assert state(conns[0])["direct"] - direct >= 5 * len(conns)
    for t, vector in alone.items():
        same(got[t], vector, rel=0, abs=1e-5)


def new_replica(tmp_path, monkeypatch, environ=None):
    """A Replica made in this process (with environ as the environment, default this process's); the
    process-wide state it sets (the model cache's caps, the environment) is restored after the test."""
    from pgml_plpy.cache import MODELS
    from pgml_plpy.serve import replica

    for name in ("max_models", "max_bytes"):
        monkeypatch.setattr(MODELS, name, getattr(MODELS, name))
    monkeypatch.setattr(os, "environ", dict(os.environ if environ is None else environ))
    return replica.Replica({"torch_threads": 1, "max_models": 8, "max_model_bytes": None,
                            "models_cache": str(tmp_path)})


def test_replica_openmp_threads_spin_briefly_unless_the_operator_says(tmp_path, monkeypatch):
    from pgml_plpy.serve import replica

    new_replica(tmp_path, monkeypatch, environ={})
    assert os.environ["GOMP_SPINCOUNT"] == replica.SPIN
    new_replica(tmp_path, monkeypatch, environ={"GOMP_SPINCOUNT": "500"})
    assert os.environ["GOMP_SPINCOUNT"] == "500"


def test_replica_builds_settings_once_per_policy(tmp_path, monkeypatch):
    from pgml_plpy.runtimes.ray import policy
    from pgml_plpy.settings import Settings

    runtime = new_replica(tmp_path, monkeypatch)
    first = {"policy": json.loads(json.dumps(policy(Settings())))}
    other = {"policy": {**first["policy"], "huggingface_whitelist": ["some/model"]}}
    assert runtime.settings(first) is runtime.settings(json.loads(json.dumps(first)))
    assert runtime.settings(other).huggingface_whitelist == ["some/model"]
    assert runtime.settings(first).huggingface_whitelist == Settings().huggingface_whitelist
    with pytest.raises(Exception, match="policy does not have the fields"):
        runtime.settings({"policy": {"superuser": True}})


def test_callers_that_call_again_join_the_calls_that_waited(tmp_path, monkeypatch):
    """Continuous batching without cohorts: 4 callers whose run is answered call again, and run with
    the 4 calls that waited for that run, not in turns of 4 (the wait is long here: the queue filling
    up, not the clock, ends it)."""
    import asyncio
    from collections import namedtuple

    from pgml_plpy.serve import replica

    monkeypatch.setattr(replica, "GATHER", 1e6)
    monkeypatch.setattr(replica, "GATHER_MAX", 60.0)
    runtime = new_replica(tmp_path, monkeypatch)
    Item = namedtuple("Item", "model n")
    sizes, release = [], threading.Event()

    def run(items):
        sizes.append(len(items))
        if len(sizes) == 1:
            assert release.wait(60)
        return [item.n for item in items]

    async def caller(n: int, times: int) -> None:
        for _ in range(times):
            assert await runtime.batch(Item("m", n), "key", run) == n

    async def main() -> None:
        looping = [asyncio.ensure_future(caller(n, 2)) for n in range(4)]
        while not sizes:
            await asyncio.sleep(0.01)
        waiting = [asyncio.ensure_future(caller(n, 1)) for n in range(4, 8)]
        while len(runtime.queues["key"]) < 4:
            await asyncio.sleep(0.01)
        release.set()
        await asyncio.gather(*looping, *waiting)

    asyncio.run(asyncio.wait_for(main(), 60))  # a failure, not a hang
    assert sizes == [4, 8]


def test_stream_pieces_arrive_as_generated_and_closing_stops_the_work(connect, routed, models):
    c = connect()
    gpt = task("text-generation", long_gpt2_folder(models))
    with c.transaction():
        c.execute("DECLARE s CURSOR FOR SELECT pgml.transform_stream(%s, %s, 'The cat')", (gpt, Jsonb(LONG)))
        assert len(c.execute("FETCH 2 FROM s").fetchall()) == 2
        assert state(connect())["running"] >= 1  # still generating: the first rows came before the end
        c.execute("CLOSE s")
    eventually(lambda: state(c)["running"] == 0, 60, 0.1, "the closed stream's generation stopping")


@pytest.mark.parametrize("how", ["statement_timeout", "pg_cancel_backend"])
def test_a_cancel_stops_the_work_in_the_runtime(how, connect, routed, models):
    c, watcher = connect(), connect()
    gpt = task("text-generation", long_gpt2_folder(models))
    one(c, "SELECT pgml.transform(%s, %s, ARRAY['warm'])", (gpt, Jsonb(GREEDY)))
    cancelled = state(watcher)["cancelled"]
    if how == "statement_timeout":
        c.execute("SET statement_timeout = '2s'")
    else:
        pid = one(c, "SELECT pg_backend_pid()")
        threading.Timer(2, lambda: watcher.execute("SELECT pg_cancel_backend(%s)", (pid,))).start()
    err = sql_error(c, "SELECT pgml.transform(%s, %s, ARRAY['The cat'])", (gpt, Jsonb(LONG)))
    assert err.sqlstate == "57014"
    # the runtime sees the connection go and stops the generation (~1 s; generous on a busy machine)
    eventually(lambda: state(watcher)["running"] == 0, 60, 0.05, "the cancelled generation stopping")
    assert state(watcher)["cancelled"] > cancelled
    c.execute("RESET statement_timeout")
    assert one(c, "SELECT pgml.transform(%s, %s, ARRAY['The cat'])", (gpt, Jsonb(GREEDY)))


def test_calls_through_the_serve_command_stream_and_stop_when_cancelled(connect, routed, models):
    c, watcher = connect(), connect()
    gpt = task("text-generation", long_gpt2_folder(models))
    query = "SELECT pgml.transform(%s, %s, ARRAY['The cat'])"
    expected = one(watcher, query, (gpt, Jsonb(GREEDY)))
    through_the_serve_command(c)
    direct = state(watcher)["direct"]
    assert one(c, query, (gpt, Jsonb(GREEDY))) == expected
    with c.transaction():
        c.execute("DECLARE s CURSOR FOR SELECT pgml.transform_stream(%s, %s, 'The cat')", (gpt, Jsonb(LONG)))
        assert len(c.execute("FETCH 2 FROM s").fetchall()) == 2
        assert state(watcher)["running"] >= 1  # still generating: the first rows came before the end
        c.execute("CLOSE s")
    eventually(lambda: state(watcher)["running"] == 0, 60, 0.1, "the closed stream's generation stopping")
    cancelled = state(watcher)["cancelled"]
    c.execute("SET statement_timeout = '2s'")
    assert sql_error(c, query, (gpt, Jsonb(LONG))).sqlstate == "57014"
    eventually(lambda: state(watcher)["running"] == 0, 60, 0.05, "the cancelled generation stopping")
    assert state(watcher)["cancelled"] > cancelled
    c.execute("RESET statement_timeout")
    assert state(watcher)["direct"] == direct, "a call went to the replica's own port"


def test_failures_are_one_error_of_class_08_with_the_serve_command(connect, routes, runtime, secrets, models):
    c = connect()
    routes([{"model": "*", "runtime": "ray", "url": f"http://127.0.0.1:{free_port()}"}])
    err = sql_error(c, "SELECT pgml.embed(%s, 'x')", (MINILM,))
    assert err.sqlstate == "08001" and "cannot be reached" in err.diag.message_primary
    assert "runtimes[0]" in err.diag.message_hint and "python -m pgml_plpy.serve --port" in err.diag.message_hint
    # too slow: the route's timeout, and nothing falls back to the backend
    routes([ray_route(runtime, secrets, timeout=2)])
    gpt = task("text-generation", long_gpt2_folder(models))
    err = sql_error(c, "SELECT pgml.transform(%s, %s, ARRAY['The cat'])", (gpt, Jsonb(LONG)))
    assert err.sqlstate == "08006" and "timeout" in err.diag.message_primary
    assert "pgml_plpy.serve" in err.diag.message_hint
    assert heavy_modules(c) == []
    # a wrong token, and a token file others can read
    routes([ray_route(runtime, secrets, token_file=secrets["wrong"])])
    err = sql_error(c, "SELECT pgml.embed(%s, 'x')", (MINILM,))
    assert err.sqlstate == "28000" and "token" in err.diag.message_primary
    os.chmod(secrets["wrong"], 0o604)
    try:
        routes([ray_route(runtime, secrets, token_file=secrets["wrong"])])
        err = sql_error(connect(), "SELECT pgml.embed(%s, 'x')", (MINILM,))
        assert err.sqlstate == "28000" and "every OS user" in err.diag.message_primary
    finally:
        os.chmod(secrets["wrong"], 0o600)


@pytest.mark.parametrize("path", ["own port", "serve command"])
def test_a_replica_that_dies_mid_call_leaves_the_backend_usable(path, connect, routed, models):
    c, watcher = connect(), connect()
    gpt = task("text-generation", long_gpt2_folder(models))
    one(c, "SELECT pgml.transform(%s, %s, ARRAY['warm'])", (gpt, Jsonb(GREEDY)))
    if path == "serve command":
        through_the_serve_command(c)
    pid = state(watcher)["pid"]
    threading.Timer(2, lambda: os.kill(pid, 9)).start()
    err = sql_error(c, "SELECT pgml.transform(%s, %s, ARRAY['The cat'])", (gpt, Jsonb(LONG)))
    assert err.sqlstate.startswith("08"), (err.sqlstate, err.diag.message_primary)
    # Ray Serve starts a new replica; calls are answered again
    deadline = time.monotonic() + 240
    while True:
        try:
            assert one(c, "SELECT pgml.transform(%s, %s, ARRAY['The cat'])", (gpt, Jsonb(GREEDY)))
            break
        except psycopg.Error as exc:
            assert exc.sqlstate.startswith("08") and time.monotonic() < deadline, exc
            time.sleep(1)
    assert state(watcher)["pid"] != pid


def test_the_policy_travels_with_each_call(admin, connect, routed, models):
    c = connect()
    admin.execute("DROP ROLE IF EXISTS pgml_ray_user")
    try:
        admin.execute("CREATE ROLE pgml_ray_user LOGIN IN ROLE pgml_user")
        user = psycopg.connect(admin.info.dsn, user="pgml_ray_user", autocommit=True)
        # the runtime refuses a folder outside models_path for a role that is not an administrator ...
        err = sql_error(user, "SELECT pgml.transform(%s, inputs => ARRAY['x'])",
                        (task("text-classification", models["bert-sentiment"]),))
        assert err.sqlstate == "42501" and "outside the folders" in err.diag.message_primary, err.diag.message_primary
        # ... and the whitelist, also for a model it has loaded for another caller
        one(c, "SELECT pgml.embed(%s, 'x')", (MINILM,))
        admin.execute("UPDATE pgml.settings SET value = '[\"other/*\"]' WHERE name = 'huggingface_whitelist'")
        err = sql_error(user, "SELECT pgml.embed(%s, 'x')", (MINILM,))
        assert err.sqlstate == "42501" and "whitelist" in err.diag.message_primary
        err = sql_error(c, "SELECT pgml.transform(%s, inputs => ARRAY['x'])",
                        (task("text-classification", models["bert-sentiment"], trust_remote_code=True),))
        assert err.sqlstate == "42501" and "trust_remote_code" in err.diag.message_primary
        user.close()
    finally:
        admin.execute("UPDATE pgml.settings SET value = 'null' WHERE name = 'huggingface_whitelist'")
        admin.execute("DROP OWNED BY pgml_ray_user")
        admin.execute("DROP ROLE IF EXISTS pgml_ray_user")


def test_only_superusers_change_the_routes(admin, db):
    admin.execute("DROP ROLE IF EXISTS pgml_ray_admin")
    admin.execute("CREATE ROLE pgml_ray_admin LOGIN IN ROLE pgml_admin")
    try:
        with psycopg.connect(db.dsn, user="pgml_ray_admin", autocommit=True) as c:
            err = sql_error(c, "UPDATE pgml.settings SET value = %s WHERE name = 'runtimes'",
                            (Jsonb([{"model": "*", "runtime": "ray", "url": "http://127.0.0.1:1"}]),))
            assert err.sqlstate == "42501" and "superuser" in err.diag.message_primary
    finally:
        admin.execute("DROP ROLE pgml_ray_admin")


def test_validate_checks_each_ray_route(admin, routes, runtime, secrets):
    routes([ray_route(runtime, secrets, model=MINILM, task="embedding"), ray_route(runtime, secrets),
            ray_route(runtime, secrets, token_file=secrets["wrong"]), ray_route(runtime, secrets, model="a_project")])
    report = {item: (ok, detail) for item, ok, detail in admin.execute("SELECT * FROM pgml.validate()")}
    ok, detail = report[f"route 0: {MINILM} -> ray"]
    assert ok and "384 dimensions" in detail and runtime.url in detail, detail
    ok, detail = report["route 1: * -> ray"]
    assert ok and "load on first use" in detail
    ok, detail = report["route 2: * -> ray"]
    assert not ok and "token" in detail
    ok, detail = report["route 3: a_project -> ray"]
    assert ok and "fine for a project name" in detail, detail


# ---------------------------------------------------------------------------------- tuned models


def tune(conn, project, relation, model, hp, task_name="text-generation"):
    return conn.execute("SELECT status, deployed FROM pgml.tune(%s, task => %s, relation_name => %s, "
                        "model_name => %s, hyperparams => %s)", (project, task_name, relation, model, Jsonb(hp))
                        ).fetchone()


def test_tuned_models_are_served_by_project_name(admin, connect, routes, runtime, secrets, models):
    admin.execute("DROP TABLE IF EXISTS ray_corpus")
    admin.execute("CREATE TABLE ray_corpus (body text)")
    admin.execute("INSERT INTO ray_corpus SELECT unnest(%s::text[])", (tm.ENGLISH_CORPUS,))
    quick = {"training_args": {"max_steps": 2, "learning_rate": 1e-9}, "max_seq_length": 32}
    assert tune(admin, "ray_writer", "ray_corpus", models["gpt2-plain"], quick)[0] == "successful"
    admin.execute("DROP TABLE IF EXISTS ray_zebras")
    admin.execute("CREATE TABLE ray_zebras AS SELECT 'The cat ate the zebra food quickly.'::text AS body "
                  "FROM generate_series(1, 64)")
    zebras = {"training_args": {"max_steps": 12, "learning_rate": 5e-3}, "max_seq_length": 16}
    assert tune(admin, "ray_writer", "ray_zebras", models["gpt2-plain"], zebras)[0] == "successful"
    lora = {"training_args": {"max_steps": 2}, "lora_config": {"r": 4}, "max_seq_length": 32}
    assert tune(admin, "ray_lora", "ray_corpus", models["gpt2-plain"], lora) == ("successful", True)
    ids = [r[0] for r in admin.execute("SELECT m.id FROM pgml.models m JOIN pgml.projects p ON p.id = m.project_id "
                                       "WHERE p.name = 'ray_writer' ORDER BY m.id")]
    query = "SELECT pgml.transform(%s, %s, ARRAY['The cat'])"

    def both(project):
        params = (Jsonb({"task": "text-generation", "model": project}), Jsonb(GREEDY))
        routes([])
        in_backend = one(connect(), query, params)
        routes([ray_route(runtime, secrets, model="ray_*")])
        c = connect()
        routed = one(c, query, params)
        assert heavy_modules(c) == []
        return in_backend, routed, c

    outputs = []
    routes([ray_route(runtime, secrets, model="ray_*")])
    for model_id in ids:
        admin.execute("SELECT * FROM pgml.deploy(%s)", (model_id,))
        received = (state(admin) or {"parts_received": 0})["parts_received"]  # None: not deployed yet
        in_backend, routed, c = both("ray_writer")
        assert routed == in_backend  # the new deploy is served on the next call
        outputs.append(routed)
        sent = state(admin)["parts_received"] - received
        assert sent > 0
        assert one(c, query, (Jsonb({"task": "text-generation", "model": "ray_writer"}), Jsonb(GREEDY))) == routed
        assert one(connect(), query, (Jsonb({"task": "text-generation", "model": "ray_writer"}),
                                      Jsonb(GREEDY))) == routed
        assert state(admin)["parts_received"] - received == sent  # the files were sent once
    assert outputs[0] != outputs[1]
    in_backend, routed, _ = both("ray_lora")
    assert routed == in_backend
    admin.execute("DELETE FROM pgml.projects WHERE name IN ('ray_writer', 'ray_lora')")
    admin.execute("DROP TABLE ray_corpus, ray_zebras")


# ------------------------------------------------------------------------------------ the command


def test_the_serve_command_answers_http_itself(runtime):
    """Its own process listens on the port: no Ray Serve HTTP proxy actor, no control replica."""
    port = int(runtime.url.rsplit(":", 1)[1])
    assert [c for c in psutil.Process(runtime.proc.pid).net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port]
    processes = runtime.leftovers()  # every process it started that runs
    assert not [p for p in processes if "ProxyActor" in p or ":Control" in p], processes


@pytest.mark.parametrize("args, message", [
    (["--host", "0.0.0.0"], "--token-file"),
    (["--host", "0.0.0.0", "--token-file", "TOKEN"], "--tls-cert"),
    (["--host", "10.1.2.3", "--tls-cert", "CERT", "--tls-key", "KEY"], "--token-file"),
    (["--token-file", "OPEN"], "can be read by every OS user"),
    (["--tls-cert", "CERT"], "go together"),
])
def test_the_serve_command_refuses_to_start_unsafely(args, message, secrets):
    opened = secrets["root"] / "open-token"
    opened.write_text("x")
    os.chmod(opened, 0o644)
    names = {"TOKEN": secrets["token"], "CERT": secrets["cert"], "KEY": secrets["key"], "OPEN": str(opened)}
    done = subprocess.run([str(VENV / "bin" / "python"), "-m", "pgml_plpy.serve", "--port", "18999",
                           *[names.get(a, a) for a in args]], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and message in done.stderr and "refusing to start" in done.stderr, done.stderr
