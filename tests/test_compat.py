"""PostgresML's own example SQL runs unchanged (postgresml/postgresml, pgml-extension/examples:
transformers.sql, finetune.sql, test_chunking.sql, embedding.sql), with the task names of its LLM page.

The statements below are those files' text. Their hub ids are served from a Hugging Face cache on the
server that holds the tiny test models under those ids (the hub is not reachable here), and the tables
their pgml.load_dataset calls would fetch from the hub are built here in the same shape (squad_v2
through pgml.load_dataset itself, from a parquet file). Only the SQuAD tune differs, and says why.
"""

import os
import shutil
import tempfile

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tiny_models as tm
from pgtest import hf_cache, one, readable_tree, sql_error, task
from psycopg.types.json import Jsonb

# hub id in PostgresML's examples (or a task's default model) -> the tiny model serving it here
HUB_IDS = {
    "google-t5/t5-base": "t5-tiny",                                       # translation_en_to_fr's default
    "sshleifer/distilbart-cnn-12-6": "t5-tiny",                           # summarization's default
    "distilbert/distilbert-base-cased-distilled-squad": "bert-qa",        # question-answering's default
    "roberta-large-mnli": "bert-nli",
    "Helsinki-NLP/opus-mt-en-es": "t5-tiny",
    "distilbert-base-uncased": "bert-mlm",
    "deepset/roberta-base-squad2": "bert-qa",
    "sshleifer/distilbart-xsum-12-1": "t5-tiny",
}


@pytest.fixture(scope="module")
def hub(conn, models):
    """The server's huggingface_cache setting names a cache holding PostgresML's hub ids."""
    root = tempfile.mkdtemp(prefix="hf_compat_", dir=os.path.dirname(models["bert-nli"]))
    for repo, name in HUB_IDS.items():
        hf_cache(root, models[name], [repo])
    conn.execute("UPDATE pgml.settings SET value = to_jsonb(%s::text) WHERE name = 'huggingface_cache'", (root,))
    try:
        yield root
    finally:
        conn.execute("UPDATE pgml.settings SET value = 'null' WHERE name = 'huggingface_cache'")
        shutil.rmtree(root, ignore_errors=True)


def run(conn, sql):
    """One statement of an example file; its first column of every row."""
    return [row[0] for row in conn.execute(sql).fetchall()]


# ------------------------------------------------------------------ transformers.sql: pgml.transform

TRANSLATE = """SELECT pgml.transform(
    'translation_en_to_fr',
    inputs => ARRAY[
        'Welcome to the future!',
        'Where have you been all this time?'
    ]
) AS result;"""

MODEL_ONLY = """SELECT pgml.transform(
    '{"model": "roberta-large-mnli"}'::JSONB,
    inputs => ARRAY[
        'I love how amazingly simple ML has become!', 
        'Some models are painfully slow and expensive ☹️'
    ]
) AS result;"""

QUESTION = """SELECT pgml.transform(
    'question-answering',
    inputs => ARRAY[
        '{"question": "Am I dreaming?", "context": "I got a good nights sleep last night, and started a simple tutorial over my cup of morning coffee. The capabilities seem unreal, compared to what I came to expect from the simple SQL standard I studied so long ago. The answer is staring me in the face, and I feel the uncanny call from beyond the screen calling me to check the results."}'
    ]
) AS result;"""  # noqa: E501 - the example's own line

SUMMARIZE = """SELECT pgml.transform(
    'summarization',
    inputs => ARRAY[
        'Dominic Cobb is the foremost practitioner of the artistic science of extraction, inserting oneself into a subject''s dreams to obtain hidden information without the subject knowing, a concept taught to him by his professor father-in-law, Dr. Stephen Miles. Dom''s associates are Miles'' former students, who Dom requires as he has given up being the dream architect for reasons he won''t disclose.'
    ]
);"""  # noqa: E501 - the example's text, cut to its first two sentences (the tiny model reads 128 tokens)


def test_transform_examples(conn, hub):
    translated = run(conn, TRANSLATE)[0]
    assert len(translated) == 2 and all(set(t) == {"translation_text"} for t in translated)
    # a task JSON with only a model: its config tells the task (a sequence classifier: text-classification)
    classified = run(conn, MODEL_ONLY)[0]
    assert len(classified) == 2
    assert all(c["label"] in ("entailment", "neutral", "contradiction") and 0 < c["score"] <= 1 for c in classified)
    answer = run(conn, QUESTION)[0]
    assert set(answer) == {"answer", "score", "start", "end"}
    summary = run(conn, SUMMARIZE)[0]
    assert len(summary) == 1 and set(summary[0]) == {"summary_text"}


def test_the_model_tells_the_task(conn, hub, models):
    """Offline, from config.json: the head its architecture has, and for an encoder-decoder the task its
    task_specific_params name; a clear error when it cannot be told."""
    def by_model(model, inputs, args=None):
        return one(conn, "SELECT pgml.transform(%s, %s, %s::text[])", (Jsonb({"model": model}), Jsonb(args or {}),
                                                                        inputs))

    def by_task(name, model, inputs, args=None):
        return one(conn, "SELECT pgml.transform(%s, %s, %s::text[])", (task(name, model), Jsonb(args or {}), inputs))

    for name, model, inputs in (("text-classification", "bert-sentiment", ["I love it"]),
                                ("token-classification", "bert-ner", ["I am Omar and I live in Paris ."]),
                                ("fill-mask", "bert-mlm", ["Paris is the [MASK] of France."])):
        assert by_model(models[model], inputs) == by_task(name, models[model], inputs), name
    greedy = {"max_new_tokens": 4, "do_sample": False}
    assert by_model(models["gpt2-plain"], ["The cat"], greedy) == by_task("text-generation", models["gpt2-plain"],
                                                                         ["The cat"], greedy)
    # an NLI model given candidate_labels does zero-shot classification
    labels = {"candidate_labels": ["sports", "politics"]}
    zero_shot = by_model("roberta-large-mnli", ["The team won."], labels)
    assert zero_shot == by_task("zero-shot-classification", models["bert-nli"], ["The team won."], labels)
    # a translation model (M2M100) is translation
    translated = by_model(models["m2m-tiny"], ["Hello"], {"src_lang": "en", "tgt_lang": "fr", "max_new_tokens": 4})
    assert set(translated[0]) == {"translation_text"}
    for model, args, fragment in (
            (models["t5-tiny"], {}, "made for several tasks (summarization, translation_en_to_de"),
            (models["bert-sentiment"], labels, "no entailment label"),
            (models["bert-mlm"] + "/..", {}, "cannot be told from its config (it has no config.json)")):
        err = sql_error(conn, "SELECT pgml.transform(%s, %s, ARRAY['x'])", (Jsonb({"model": model}), Jsonb(args)))
        assert err.sqlstate == "22023" and fragment in err.diag.message_primary, err.diag.message_primary
        assert err.diag.message_hint
    err = sql_error(conn, "SELECT pgml.transform('{\"device\": \"cpu\"}'::jsonb, inputs => ARRAY['x'])")
    assert err.sqlstate == "22023" and '"task" string or a "model"' in err.diag.message_primary


def test_task_names_of_the_llm_page(conn, models):
    """text-to-text-generation and key-mask, as PostgresML's "Supported tasks" table names them."""
    args = Jsonb({"max_new_tokens": 5})
    for alias, name, model, inputs, call_args in (
            ("text-to-text-generation", "text2text-generation", "t5-tiny", ["capital of Paris?"], args),
            ("key-mask", "fill-mask", "bert-mlm", ["Paris is the [MASK] of France."], Jsonb({}))):
        query = "SELECT pgml.transform(%s, %s, %s::text[])"
        assert one(conn, query, (task(alias, models[model]), call_args, inputs)) == one(
            conn, query, (task(name, models[model]), call_args, inputs))


# ------------------------------------------------------------------ finetune.sql: pgml.tune, pgml.predict

KDE4_VIEW = """CREATE OR REPLACE VIEW kde4_en_to_es AS
SELECT translation->>'en' AS "en", translation->>'es' AS "es"
FROM pgml.kde4
LIMIT 10;"""

TUNE_TRANSLATION = """SELECT pgml.tune(
    'Translate English to Spanish',
    task => 'translation',
    relation_name => 'kde4_en_to_es',
    y_column_name => 'es', -- translate into spanish
    model_name => 'Helsinki-NLP/opus-mt-en-es',
    hyperparams => '{
        "learning_rate": 2e-5,
        "per_device_train_batch_size": 16,
        "per_device_eval_batch_size": 16,
        "num_train_epochs": 1,
        "weight_decay": 0.01,
        "max_length": 128
    }',
    test_size => 0.5,
    test_sampling => 'last'
);"""

TUNE_IMDB = """SELECT pgml.tune(
    'IMDB Review Sentiment',
    task => 'text-classification',
    relation_name => 'pgml.imdb',
    y_column_name => 'label',
    model_name => 'distilbert-base-uncased',
    hyperparams => '{
        "learning_rate": 2e-5,
        "per_device_train_batch_size": 16,
        "per_device_eval_batch_size": 16,
        "num_train_epochs": 1,
        "weight_decay": 0.01
    }',
    test_size => 0.5,
    test_sampling => 'last'
);"""

PREDICT = "SELECT pgml.predict('IMDB Review Sentiment', 'I love SQL');"

# The example's test_size is squad_v2's validation split (11873 rows) and its stride fits roberta-base's
# 512-token window; here the table has 120 rows and the tiny model reads 128 tokens.
TUNE_SQUAD = """SELECT pgml.tune(
    'SQuAD Q&A v2',
    'question-answering',
    'pgml.squad_v2',
    'answers',
    'deepset/roberta-base-squad2',
    hyperparams => '{
        "evaluation_strategy": "epoch",
        "learning_rate": 2e-5,
        "per_device_train_batch_size": 16,
        "per_device_eval_batch_size": 16,
        "num_train_epochs": 1,
        "weight_decay": 0.01,
        "max_length": 384,
        "stride": 32
    }',
    test_size => 20,
    test_sampling => 'last'
);"""

BILLSUM_VIEW = """CREATE OR REPLACE VIEW billsum_training_data
AS SELECT title || '\\n' || text AS text, summary FROM pgml.billsum;"""

TUNE_BILLSUM = """SELECT pgml.tune(
    'Legal Summarization',
    task => 'summarization',
    relation_name => 'billsum_training_data',
    y_column_name => 'summary',
    model_name => 'sshleifer/distilbart-xsum-12-1',
    hyperparams => '{
        "learning_rate": 2e-5,
        "per_device_train_batch_size": 2,
        "per_device_eval_batch_size": 2,
        "num_train_epochs": 1,
        "weight_decay": 0.01,
        "max_input_length": 1024,
        "max_summary_length": 128
    }',
    test_size => 0.01,
    test_sampling => 'last'
);"""


def squad_v2_parquet(folder: str) -> str:
    """squad_v2's columns and answers feature ({"text": [...], "answer_start": [...]}, empty lists for
    the unanswerable questions), as a parquet file pgml.load_dataset reads."""
    rows = tm._qa_examples(120, seed=7)
    answers = pa.array([{"text": [a] if a else [], "answer_start": [s] if a else []} for _, _, a, s in rows],
                       pa.struct([("text", pa.list_(pa.string())), ("answer_start", pa.list_(pa.int32()))]))
    path = os.path.join(folder, "squad_v2.parquet")
    pq.write_table(pa.table({"id": [f"q{i}" for i in range(len(rows))], "title": ["People"] * len(rows),
                             "context": [c for _, c, _, _ in rows], "question": [q for q, _, _, _ in rows],
                             "answers": answers}), path)
    return path


@pytest.fixture(scope="module")
def datasets(conn, models):
    """The tables the examples' pgml.load_dataset calls make, in their shapes: kde4 (translation JSONB),
    imdb (text, label with ClassLabel names), squad_v2 (loaded by pgml.load_dataset), billsum."""
    conn.execute("DROP TABLE IF EXISTS pgml.kde4, pgml.imdb, pgml.squad_v2, pgml.billsum CASCADE")
    conn.execute("CREATE TABLE pgml.kde4 (id text, translation jsonb)")
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO pgml.kde4 VALUES (%s, %s)",
                        [(str(i), Jsonb({"en": en, "es": fr})) for i, (en, fr, _) in
                         enumerate(tm._translation_triples()[:10])])
        conn.execute("CREATE TABLE pgml.imdb (text text, label integer)")
        conn.execute("""COMMENT ON COLUMN pgml.imdb.label IS '{"class_label": ["neg", "pos"]}'""")
        reviews = [(p, 1) for p in tm.POS_PHRASES] + [(p, 0) for p in tm.NEG_PHRASES]
        cur.executemany("INSERT INTO pgml.imdb VALUES (%s, %s)", sorted(reviews))  # both classes in both halves
        conn.execute("CREATE TABLE pgml.billsum (text text, summary text, title text)")
        cur.executemany("INSERT INTO pgml.billsum VALUES (%s, %s, %s)",
                        [(f"{a} {b}", a, f"Bill {i}") for i, (a, b) in
                         enumerate(zip(tm.ENGLISH_CORPUS[:20], tm.ENGLISH_CORPUS[20:40]))])
    folder = tempfile.mkdtemp(prefix="squad_", dir=os.path.dirname(models["bert-qa"]))
    try:
        squad_v2_parquet(folder)
        readable_tree(folder)
        assert conn.execute("SELECT * FROM pgml.load_dataset(%s)",
                            (os.path.join(folder, "squad_v2.parquet"),)).fetchone() == ("pgml.squad_v2", 120)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    yield
    conn.execute("DROP TABLE IF EXISTS pgml.kde4, pgml.imdb, pgml.squad_v2, pgml.billsum CASCADE")


@pytest.fixture(scope="module")
def tuned(conn, hub, datasets):
    """finetune.sql's four tunes, as they are written there."""
    conn.execute("DELETE FROM pgml.projects WHERE name IN ('Translate English to Spanish', "
                 "'IMDB Review Sentiment', 'SQuAD Q&A v2', 'Legal Summarization')")
    conn.execute(KDE4_VIEW)
    conn.execute(BILLSUM_VIEW)
    return {name: run(conn, sql)[0] for name, sql in (("translation", TUNE_TRANSLATION), ("imdb", TUNE_IMDB),
                                                     ("squad", TUNE_SQUAD), ("billsum", TUNE_BILLSUM))}


def test_finetune_examples(conn, tuned):
    # in the SELECT list pgml.tune gives a record (status, task, algorithm, deployed): psycopg reads its fields
    assert tuned == {"translation": ("successful", "translation", "transformers", "t"),
                     "imdb": ("successful", "text-classification", "transformers", "t"),
                     "squad": ("successful", "question-answering", "transformers", "t"),
                     "billsum": ("successful", "summarization", "transformers", "t")}
    # the flat hyperparams went where they belong, under their transformers 5 names
    recorded = dict(conn.execute("SELECT p.name, m.hyperparams FROM pgml.models m JOIN pgml.projects p "
                                 "ON p.id = m.project_id").fetchall())
    squad = recorded["SQuAD Q&A v2"]
    assert squad["training_args"]["evaluation_strategy"] == "epoch" and squad["max_seq_length"] == 384
    assert squad["doc_stride"] == 32 and "max_length" not in squad
    assert recorded["Translate English to Spanish"]["max_seq_length"] == 128
    billsum = recorded["Legal Summarization"]
    assert (billsum["max_seq_length"], billsum["max_target_length"]) == (1024, 128)
    assert recorded["IMDB Review Sentiment"]["training_args"]["weight_decay"] == 0.01
    # the QA test split scored both answerable and unanswerable (empty answers) questions
    metrics = one(conn, "SELECT m.metrics FROM pgml.models m JOIN pgml.projects p ON p.id = m.project_id "
                        "WHERE p.name = 'SQuAD Q&A v2'")
    assert {"exact_match", "f1", "eval_loss"} <= set(metrics) and metrics["test_rows"] == 20
    assert one(conn, "SELECT count(*) FROM pgml.squad_v2 WHERE answers->'text' = '[]'") > 0


def test_predict(conn, tuned, models, dsn):
    assert run(conn, PREDICT)[0] in ("neg", "pos")  # imdb's ClassLabel names
    reviews = ["I love it", "it is awful", None]
    labels = one(conn, "SELECT pgml.predict_batch('IMDB Review Sentiment', %s)", (reviews,))
    assert labels[:2] == [one(conn, "SELECT pgml.predict('IMDB Review Sentiment', %s)", (r,)) for r in reviews[:2]]
    assert labels[2] is None and one(conn, "SELECT pgml.predict('IMDB Review Sentiment', NULL)") is None
    # the project serves pgml.transform by name too, its task known from the project
    out = one(conn, "SELECT pgml.transform('{\"model\": \"IMDB Review Sentiment\"}'::jsonb, "
                    "inputs => ARRAY['I love it'])")
    assert out[0]["label"] == labels[0]
    # a text-pair project: pgml.predict(project, text1, text2)
    conn.execute("DROP TABLE IF EXISTS compat_pairs")
    conn.execute("CREATE TABLE compat_pairs (text1 text, text2 text, class text)")
    conn.execute("INSERT INTO compat_pairs SELECT 'Anna lives in ' || c, 'Anna lives in ' || "
                 "CASE WHEN mod(i, 2) = 0 THEN c ELSE 'Rome' END, CASE WHEN mod(i, 2) = 0 THEN 'same' ELSE 'other' END "
                 "FROM unnest(%s::text[]) WITH ORDINALITY AS t(c, i)", (tm.CITIES * 2,))
    conn.execute("DELETE FROM pgml.projects WHERE name = 'compat pairs'")
    conn.execute("SELECT pgml.tune('compat pairs', 'text-pair-classification', 'compat_pairs', 'class', %s, "
                 "'{\"max_steps\": 1}')", (models["bert-nli"],))
    assert one(conn, "SELECT pgml.predict('compat pairs', 'Anna lives in Paris', 'Anna lives in Rome')") in (
        "same", "other")
    for sql, fragment, hint in (
            ("SELECT pgml.predict('compat pairs', 'x')", "is a text-pair-classification project",
             "pgml.predict(project, text1, text2)"),
            ("SELECT pgml.predict('IMDB Review Sentiment', 'x', 'y')", "is a text-classification project",
             "pgml.predict(project, input)"),
            ("SELECT pgml.predict('Legal Summarization', 'x')", "is a summarization project",
             '"task": "summarization", "model": "Legal Summarization"')):
        err = sql_error(conn, sql)
        assert err.sqlstate == "42809" and fragment in err.diag.message_primary, err.diag.message_primary
        assert hint in err.diag.message_hint
    err = sql_error(conn, "SELECT pgml.predict('no such project', 'x')")
    assert err.sqlstate == "42704" and "there is no project" in err.diag.message_primary
    conn.execute("DROP TABLE compat_pairs")


def test_predict_signatures_and_grants(conn):
    rows = conn.execute("""
        SELECT p.oid::regprocedure::text, p.prorettype::regtype::text, p.provolatile, p.proparallel, p.proisstrict,
               p.procost, has_function_privilege('pgml_user', p.oid, 'EXECUTE'),
               has_function_privilege('public', p.oid, 'EXECUTE')
        FROM pg_proc p WHERE p.pronamespace = 'pgml'::regnamespace AND p.proname IN ('predict', 'predict_batch')
        ORDER BY 1""").fetchall()
    assert rows == [("pgml.predict(text,text)", "text", "s", "u", True, 1000000, True, False),
                    ("pgml.predict(text,text,text)", "text", "s", "u", True, 1000000, True, False),
                    ("pgml.predict_batch(text,text[])", "text[]", "s", "u", False, 10000000, True, False)]


def test_flat_hyperparams_errors(conn, hub, datasets):
    for hyperparams, fragment in (
            ({"learning_rate": 2e-5, "training_args": {"learning_rate": 1e-5}},
             "learning_rate both at the top level and in training_args"),
            ({"evaluation_strategy": "epoch", "training_args": {"eval_strategy": "no"}},
             "eval_strategy both at the top level and in training_args"),
            ({"max_length": 128, "max_seq_length": 64}, "max_seq_length twice"),
            ({"stride": 128}, "unknown key in hyperparams: stride"),
            ({"learning_rat": 2e-5}, "unknown key in hyperparams: learning_rat")):
        err = sql_error(conn, "SELECT pgml.tune('compat errors', 'text-classification', 'pgml.imdb', 'label', "
                              "'distilbert-base-uncased', %s)", (Jsonb(hyperparams),))
        assert err.sqlstate == "22023" and fragment in err.diag.message_primary, err.diag.message_primary
    assert one(conn, "SELECT count(*) FROM pgml.projects WHERE name = 'compat errors'") == 0


# ------------------------------------------------------------------ test_chunking.sql, embedding.sql

CHUNKING = """DROP TABLE documents CASCADE;
CREATE TABLE documents (
	id BIGSERIAL PRIMARY KEY,
	document TEXT NOT NULL,
	created_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

DROP TABLE splitters CASCADE;
CREATE TABLE splitters (
	id BIGSERIAL PRIMARY KEY,
	splitter VARCHAR NOT NULL DEFAULT 'recursive_character'
);

DROP TABLE document_chunks CASCADE;
CREATE TABLE document_chunks(
	id BIGSERIAL PRIMARY KEY,
	document_id BIGINT NOT NULL REFERENCES documents(id),
	splitter_id BIGINT NOT NULL REFERENCES splitters(id),
	chunk_index BIGINT NOT NULL,
	chunk VARCHAR
);

INSERT INTO documents VALUES (
	1,
	'It was the best of times, it was the worst of times, it was the age of wisdom, 
	it was the age of foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light, 
	it was the season of Darkness, it was the spring of hope, it was the winter of despair, we had everything before us, 
	we had nothing before us, we were all going direct to Heaven, we were all going direct the other way—in short, the period was so far like
	the present period, that some of its noisiest authorities insisted on its being received, for good or for evil, in the superlative degree of comparison only.',
	NOW()
);

INSERT INTO splitters VALUES (1, 'recursive_character');

WITH document AS (
	SELECT id, document
	FROM documents
	WHERE id = 1
),

splitter AS (
	SELECT id, splitter
	FROM splitters
	WHERE id = 1
)

INSERT INTO document_chunks SELECT
	nextval('document_chunks_id_seq'::regclass),
	(SELECT id FROM document),
	(SELECT id FROM splitter),
	chunk_index,
	chunk
FROM
	pgml.chunk(
		(SELECT splitter FROM splitter),
		(SELECT document FROM document),
		'{"chunk_size": 2, "chunk_overlap": 2}'
	);
"""  # noqa: E501, W291 - the example's own text


def test_chunking_example(conn):
    import langchain_text_splitters

    for statement in (s.strip() for s in CHUNKING.split(";\n")):
        if not statement:
            continue
        try:
            conn.execute(statement)
        except psycopg.errors.UndefinedTable:  # its DROPs on a first run; psql goes on, without ON_ERROR_STOP
            assert statement.startswith("DROP TABLE")
    document = one(conn, "SELECT document FROM documents")
    expected = langchain_text_splitters.RecursiveCharacterTextSplitter(chunk_size=2, chunk_overlap=2).split_text(
        document)
    assert run(conn, "SELECT chunk FROM document_chunks ORDER BY chunk_index") == expected
    conn.execute("DROP TABLE document_chunks, splitters, documents")


def test_embedding_example(conn):
    """embedding.sql's call on the model it names that is not remote code (all-MiniLM-L6-v2 ships as a package)."""
    embedding = run(conn, "SELECT pgml.embed('sentence-transformers/all-MiniLM-L6-v2', 'hi mom');")[0]
    assert len(embedding) == 384


def test_stored_task_names_stay_readable():
    """pgml.tune records the names it always did (PostgresML's conversation, and text2text): projects
    stored before the one task registry read the same (no PostgreSQL needed)."""
    from pgml_plpy.tuning import metrics, params, tasks

    assert params.canonical_task("conversational") == params.canonical_task("chat") == "conversation"
    assert params.canonical_task("text-to-text-generation") == "text2text"
    assert metrics.target("conversation") == ("perplexity", False) and metrics.target("text2text") == ("rougeL", True)
    assert tasks.make("text2text", params.parse({}), None).run_name == "text2text-generation"
