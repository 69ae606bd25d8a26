"""Hostile and broken input: thousands of generated calls at every function.

Every call must end in a result or an SQL error with a SQLSTATE: no backend crash (the
postmaster never restarts), no lost connection, and nothing written by a call that failed.
The calls run as a pgml_admin role (the widest surface that is not a superuser's), which must
also fail to change a trust setting, write the registry, or create anything in schema pgml,
whatever it calls the registry's own functions with.
Examples are derandomized, so CI runs the same calls every time.
"""

import json
import os

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.slow

ROLE = "pgml_test_fuzzer"
EXAMPLES = 300  # per function
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))

texts = st.one_of(st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=40),
                  st.sampled_from(["", " ", "I love it", "[MASK]", "<|endoftext|>", "é" * 300, "\u202e\ufeff",
                                   "x" * 100_001, "🙂" * 50, "'; DROP TABLE pgml.settings; --"]))
numbers = st.one_of(st.integers(-2**63, 2**63 - 1), st.sampled_from([0, -1, 1, 2**31, 10**9]),
                    st.floats(allow_nan=False, allow_infinity=False))
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                            st.dictionaries(texts, inner, max_size=3)),
                           max_leaves=8)
ARG_NAMES = ["max_new_tokens", "max_tokens", "min_new_tokens", "max_length", "num_beams", "num_return_sequences",
             "n", "do_sample", "temperature", "top_p", "top_k", "stop", "batch_size", "candidate_labels",
             "src_lang", "tgt_lang", "chat_template", "doc_stride", "max_seq_len", "handle_impossible_answer",
             "aggregation_strategy", "truncation", "prompt", "normalize_embeddings", "truncate_dim", "device",
             "chunk_size", "chunk_overlap", "separators", "return_documents", "model_kwargs"]
args = st.dictionaries(st.one_of(st.sampled_from(ARG_NAMES), texts), json_values, max_size=4)
TASKS = ["text-classification", "token-classification", "question-answering", "fill-mask", "summarization",
         "translation", "translation_en_to_fr", "text2text-generation", "text-generation", "conversational",
         "zero-shot-classification", "sentiment-analysis", "ner", "feature-extraction"]
LOADER = ["device", "device_map", "torch_dtype", "dtype", "revision", "trust_remote_code", "token",
          "load_in_8bit", "load_in_4bit", "attn_implementation", "model_kwargs"]


def model_names(models):
    root = os.path.dirname(next(iter(models.values())))
    return st.one_of(st.sampled_from(list(models.values())), texts,
                     st.sampled_from([root + "/../../etc", "/etc", "/proc/self", "../../etc/passwd", "~postgres",
                                      "sentence-transformers/all-MiniLM-L6-v2", "acme/x", "a" * 200, "/", "./"]))


# Tasks with a model that can run them, so that generated args and inputs reach the models.
RUNNABLE = [("text-classification", "bert-sentiment"), ("token-classification", "bert-ner"),
            ("question-answering", "bert-qa"), ("fill-mask", "bert-mlm"), ("summarization", "t5-tiny"),
            ("translation_en_to_fr", "t5-tiny"), ("translation", "m2m-tiny"), ("text2text-generation", "t5-tiny"),
            ("text-generation", "gpt2-chat"), ("conversational", "gpt2-chat"),
            ("zero-shot-classification", "bert-nli")]


def tasks(models):
    spec = st.fixed_dictionaries({"task": st.one_of(st.sampled_from(TASKS), json_values)},
                                 optional={"model": st.one_of(model_names(models), json_values),
                                           **{k: json_values for k in LOADER}})
    runnable = st.sampled_from(RUNNABLE).map(lambda pair: json.dumps({"task": pair[0], "model": models[pair[1]]}))
    return st.one_of(runnable, runnable, runnable, st.sampled_from(TASKS), texts, spec.map(json.dumps),
                     json_values.map(json.dumps))


messages = st.fixed_dictionaries({}, optional={"role": st.one_of(st.sampled_from(["user", "system", "assistant"]),
                                                                 json_values),
                                               "content": st.one_of(texts, json_values)})
text_arrays = st.lists(st.one_of(st.none(), texts), max_size=5)


@pytest.fixture(scope="module")
def fuzzer(dsn, conn):
    conn.execute(f"DROP ROLE IF EXISTS {ROLE}")
    conn.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD 'pw' IN ROLE pgml_admin")
    with psycopg.connect(dsn, user=ROLE, password="pw", autocommit=True) as c:
        c.execute("SET statement_timeout = '30s'")
        yield c
    conn.execute(f"DROP OWNED BY {ROLE}")
    conn.execute(f"DROP ROLE {ROLE}")


@pytest.fixture(scope="module")
def untouched(conn):
    """What no failed call may change, checked once all the calls have run."""
    def state():
        return conn.execute("""
            SELECT (SELECT md5(string_agg(name || value::text, ',' ORDER BY name)) FROM pgml.settings),
                   (SELECT count(*) FROM pgml.projects),
                   (SELECT md5(string_agg(concat_ws('/', id, base_model, lora, files_mac), ',' ORDER BY id))
                    FROM pgml.models),
                   (SELECT md5(string_agg(concat_ws('/', model_id, path, part, sha256), ',' ORDER BY id))
                    FROM pgml.files),
                   (SELECT array_agg(relname ORDER BY relname) FROM pg_class
                    WHERE relnamespace = 'pgml'::regnamespace AND relkind = 'r'),
                   (SELECT count(*) FROM pg_proc WHERE pronamespace = 'pgml'::regnamespace),
                   pg_postmaster_start_time()""").fetchone()
    before = state()
    yield
    assert state() == before


def call(conn, query, params):
    """Run one generated call: a result or an SQL error with a SQLSTATE; the backend lives on."""
    pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    try:
        conn.execute(query, params).fetchall()
    except psycopg.DataError as exc:
        # rejected before it reached the server (e.g. a JSON number PostgreSQL cannot hold) or by it
        assert exc.sqlstate is None or len(exc.sqlstate) == 5
    except psycopg.Error as exc:
        assert exc.sqlstate and len(exc.sqlstate) == 5, exc
        assert exc.sqlstate[:2] not in ("XX", "58") or exc.sqlstate in ("58P01", "58030"), exc
    assert conn.execute("SELECT pg_backend_pid()").fetchone()[0] == pid


def test_transform(fuzzer, untouched, models):
    @FUZZ
    @given(task=tasks(models), arguments=args.map(json.dumps), inputs=text_arrays)
    def run(task, arguments, inputs):
        call(fuzzer, "SELECT pgml.transform(%s::text, %s::jsonb, %s::text[])", (task, arguments, inputs))
    run()


def test_transform_chat_and_stream(fuzzer, untouched, models):
    @FUZZ
    @given(task=tasks(models), arguments=args.map(json.dumps),
           inputs=st.lists(st.one_of(messages, json_values).map(json.dumps), max_size=4), text=texts)
    def run(task, arguments, inputs, text):
        call(fuzzer, "SELECT pgml.transform(%s::text, %s::jsonb, %s::jsonb[])", (task, arguments, inputs))
        call(fuzzer, "SELECT pgml.transform_stream(%s::text, %s::jsonb, %s::text)", (task, arguments, text))
    run()


def test_embed_and_rank(fuzzer, untouched, models):
    @FUZZ
    @given(model=model_names(models), inputs=text_arrays, kwargs=args.map(json.dumps), query=st.none() | texts)
    def run(model, inputs, kwargs, query):
        call(fuzzer, "SELECT pgml.embed(%s, %s::text[], %s::jsonb)", (model, inputs, kwargs))
        call(fuzzer, "SELECT * FROM pgml.rank(%s, %s, %s::text[], %s::jsonb)", (model, query, inputs, kwargs))
    run()


@pytest.fixture(scope="module")
def vector_table(conn, fuzzer):
    """Vectors of 0 to 3 elements, some NULL or with NULL elements, for pgml.nearest."""
    conn.execute("DROP TABLE IF EXISTS fuzz_vectors")
    conn.execute("CREATE TABLE fuzz_vectors AS SELECT (ARRAY['{1,2,3}', '{-1,0,2.5}', '{0,0,0}', NULL, '{1,NULL,3}', "
                 "'{1,2}', '{}', '{NaN,1,1}'])[1 + i % 8]::real[] AS e FROM generate_series(0, 40) i")
    conn.execute(f"GRANT SELECT ON fuzz_vectors TO {ROLE}")
    yield "fuzz_vectors"
    conn.execute("DROP TABLE fuzz_vectors")


def test_chunk_and_similarity(fuzzer, untouched, vector_table):
    vectors = st.lists(st.one_of(st.none(), st.floats(width=32)), max_size=6)

    @FUZZ
    @given(splitter=st.one_of(st.sampled_from(["recursive_character", "character", "markdown", "python",
                                               "latex", "nltk", "spacy"]), texts),
           text=st.none() | texts, kwargs=args.map(json.dumps), a=vectors, b=vectors,
           relation=st.one_of(st.none(), st.sampled_from([vector_table, "pg_class", "pgml.settings"]), texts),
           column=st.one_of(st.none(), st.sampled_from(["e", "relname", "value"]), texts),
           k=st.one_of(st.none(), st.integers(-2, 50), st.just(2**31 - 1)),
           metric=st.one_of(st.none(), st.sampled_from(["cosine", "l2", "inner_product"]), texts),
           raw=st.binary(max_size=48))
    def run(splitter, text, kwargs, a, b, relation, column, k, metric, raw):
        call(fuzzer, "SELECT * FROM pgml.chunk(%s, %s, %s::jsonb)", (splitter, text, kwargs))
        call(fuzzer, "SELECT pgml.cosine_similarity(%s::real[], %s::real[])", (a, b))
        call(fuzzer, "SELECT * FROM pgml.nearest(%s, %s, %s::real[], %s, %s)", (relation, column, a, k, metric))
        call(fuzzer, "SELECT pgml._similarity('cosine_distance', %s, pgml._array_bytes(%s::real[]))", (raw, b))
    run()


def test_admin_functions(fuzzer, untouched, models):
    @FUZZ
    @given(name=texts, task=st.one_of(st.sampled_from(TASKS), texts), relation=texts, column=st.none() | texts,
           model=model_names(models), hyperparams=json_values.map(json.dumps), size=numbers,
           source=st.one_of(texts, st.sampled_from(["/etc/passwd", "/proc/self/environ", "csv", "imdb"])),
           number=st.integers(-10, 10**6))
    def run(name, task, relation, column, model, hyperparams, size, source, number):
        call(fuzzer, "SELECT * FROM pgml.tune(%s, %s, %s, %s, %s, %s::jsonb, %s::real)",
             (name, task, relation, column, model, hyperparams, size if abs(size) < 1e38 else 0.25))
        call(fuzzer, "SELECT * FROM pgml.load_dataset(%s, %s, %s, %s::jsonb)", (source, column, number, hyperparams))
        call(fuzzer, "SELECT * FROM pgml.deploy(%s::bigint)", (number,))
        call(fuzzer, "CALL pgml.embed_table(%s, %s, %s, %s, %s::jsonb, %s)",
             (relation, column, name, model, hyperparams, number))
    run()


TRUST = ["allow_pickle", "huggingface_trust_remote_code", "huggingface_trust_remote_code_whitelist", "models_path",
         "hub_downloads", "huggingface_cache", "models_cache", "huggingface_whitelist", "secrets_path"]


def refused(conn, query, params, *, unless_unchanged=False):
    """A statement that must be refused for lack of privilege (or, with unless_unchanged, change
    nothing: a trust setting rewritten with its own value), the backend living on."""
    try:
        conn.execute(query, params)
    except psycopg.Error as exc:
        assert exc.sqlstate == "42501", (query, params, exc)
    else:
        assert unless_unchanged, f"not refused: {query} {params}"


def test_trust_settings_and_the_registry(fuzzer, untouched):
    model_ids = st.one_of(st.integers(-10, 10**6), st.none())
    owners = st.one_of(texts, st.sampled_from(["postgres", "pgml_user", "PUBLIC", "pg_read_server_files"]))

    @FUZZ
    @given(name=st.sampled_from(TRUST), value=json_values.map(json.dumps), model=model_ids, path=texts,
           part=st.integers(-1, 2**31 - 1), data=st.binary(max_size=64), table=texts,
           columns=st.lists(texts, max_size=3), owner=owners)
    def run(name, value, model, path, part, data, table, columns, owner):
        refused(fuzzer, "UPDATE pgml.settings SET value = %s::jsonb WHERE name = %s", (value, name),
                unless_unchanged=True)
        refused(fuzzer, "INSERT INTO pgml.files (model_id, path, part, sha256, data) VALUES (%s, %s, %s, 'x', %s)",
                (model, path, part, data))
        refused(fuzzer, "UPDATE pgml.models SET base_model = %s WHERE id = %s", (path, model))
        # the registry's functions write only the run of the backend calling them, and it has none
        refused(fuzzer, "SELECT pgml._registry_file(%s, %s, %s, 'x', %s)", (model, path, part, data))
        for helper in ("_registry_progress(%s, '{}')", "_registry_finish(%s, '{}', '{}', 'x')",
                       "_registry_fail(%s, 'failed', 'x')"):
            refused(fuzzer, "SELECT pgml." + helper, (model,))
        call(fuzzer, "SELECT pgml._create_table(%s, %s, %s::regtype[], %s)",
             (table, columns, ["text"] * len(columns), owner))
    run()


def test_vectorizers(fuzzer, untouched, conn, models):
    """The vectorizer API, and the bookkeeping's own functions against a vectorizer of another role."""
    conn.execute("DROP TABLE IF EXISTS fuzz_vec_src CASCADE")
    conn.execute("CREATE TABLE fuzz_vec_src (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO fuzz_vec_src VALUES (1, 'one'), (2, 'two')")
    conn.execute("SELECT pgml.create_vectorizer('fuzz_vec', 'fuzz_vec_src', 'body', 'acme/x')")
    target = conn.execute("SELECT id FROM pgml._vectorizers WHERE name = 'fuzz_vec'").fetchone()[0]

    def bookkeeping():
        return conn.execute("SELECT (SELECT array_agg((name, model, chunking, building) ORDER BY id) "
                            "FROM pgml._vectorizers), (SELECT array_agg((vectorizer_id, key, error) ORDER BY id) "
                            "FROM pgml._vectorizer_queue)").fetchone()

    before = bookkeeping()
    ids = st.one_of(st.just(target), st.integers(-10, 10**6), st.none())

    @FUZZ
    @given(name=st.one_of(st.just("fuzz_vec"), texts, st.none()),
           relation=st.one_of(st.sampled_from(["fuzz_vec_src", "pgml.settings", "pg_class", "fuzz_vec_embeddings"]),
                              texts),
           column=st.none() | texts, model=model_names(models), chunking=json_values.map(json.dumps),
           kwargs=args.map(json.dumps), schedule=st.none() | texts, vectorizer=ids,
           numbers=st.lists(st.one_of(st.none(), st.integers(-10, 10**6)), max_size=3),
           keys=st.lists(st.one_of(st.none(), texts), max_size=3), flag=st.none() | st.booleans())
    def run(name, relation, column, model, chunking, kwargs, schedule, vectorizer, numbers, keys, flag):
        call(fuzzer, "SELECT pgml.create_vectorizer(%s, %s, %s, %s, %s::jsonb, %s::jsonb, %s)",
             (name, relation, column, model, chunking, kwargs, schedule))
        call(fuzzer, "SELECT pgml.alter_vectorizer(%s, %s, %s::jsonb, %s::jsonb)", (name, model, chunking, kwargs))
        call(fuzzer, "CALL pgml.run_vectorizer(%s)", (name,))
        call(fuzzer, "SELECT pgml.drop_vectorizer(%s, %s)", (name, flag))
        call(fuzzer, "SELECT * FROM pgml._vectorizer_claim(%s, %s, %s)", (vectorizer, 10**6, 10))
        call(fuzzer, "SELECT pgml._vectorizer_done(%s, %s::bigint[], %s::bigint[], %s::text[])",
             (vectorizer, numbers, numbers, keys))
        call(fuzzer, "SELECT pgml._vectorizer_register(%s, %s, %s, 2::int2, '{1}', %s, %s, '{}', '{}', %s)",
             (name, column, vectorizer, vectorizer, model, schedule))
        for helper in ("_vectorizer_retry(%s)", "_vectorizer_swapped(%s)", "* FROM pgml._vectorizer_finish(%s, NULL)",
                       "* FROM pgml._vectorizer_unregister(%s)", "* FROM pgml._vectorizer_config(%s)"):
            call(fuzzer, "SELECT " + ("" if helper.startswith("*") else "pgml.") + helper, (vectorizer,))
    try:
        run()
        assert bookkeeping() == before
    finally:
        conn.execute("SELECT pgml.drop_vectorizer('fuzz_vec', true)")
        conn.execute("DROP TABLE fuzz_vec_src")
