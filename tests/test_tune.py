"""pgml.tune: every task tuned end-to-end on tiny models and generated tables, each served by its project
name from a backend that did not train it; the registry, deploying, progress, cancel, and the errors that
come before any training."""

import json
import random
import threading
import time
from pathlib import Path

import psycopg
import pytest
import tiny_models as tm
from pgtest import in_backend, install, notices, one, sql_error
from psycopg.types.json import Jsonb

from pgml_plpy.errors import InvalidParameter, PgmlError
from pgml_plpy.tuning import data, metrics, params
from pgml_plpy.tuning.registry import files as stored

# ------------------------------------------------------------------ unit tests, no PostgreSQL


def test_hyperparams_are_checked_and_split():
    hp = params.parse({"training_args": {"num_train_epochs": 1, "evaluation_strategy": "epoch",
                                         "output_dir": "x", "push_to_hub": False, "report_to": "none"},
                       "dataset_args": {"text_column": "body"}, "max_seq_length": 64, "device": "cpu",
                       "use_auth_token": "t", "lora_config": {"r": 2}, "model_name": "m", "project_name": "p"})
    assert hp.loader == {"device": "cpu", "token": "t"}
    assert hp.extras == {"max_seq_length": 64, "lora_config": {"r": 2}}
    assert hp.model_name == "m"
    assert params.training_args(hp) == {"num_train_epochs": 1, "eval_strategy": "epoch"}
    assert hp.notices == ["training_args.output_dir is ignored: checkpoints go to a temporary folder and the "
                          "model into pgml.files"]
    assert "token" not in json.dumps(hp.record("m", "p"))
    for bad in ({"trainig_args": {}}, {"dataset_args": {"text_column": 1}}, {"max_seq_length": 0},
                {"lora_config": 3}, {"training_args": []}, "[1]", "{"):
        with pytest.raises(InvalidParameter):
            params.parse(bad)
    assert params.canonical_task("conversational") == "conversation"
    assert params.canonical_task("translation_en_to_fr") == "translation"
    with pytest.raises(InvalidParameter, match="cannot tune task"):
        params.canonical_task("fill-mask")


def test_split():
    labels = ["a"] * 60 + ["b"] * 30 + ["c"] * 10
    train, test = data.split(100, 0.2, "stratified", labels, seed=1)
    assert len(test) == 20 and sorted(train + test) == list(range(100))
    assert [labels[i] for i in test].count("a") == 12 and [labels[i] for i in test].count("c") == 2
    assert data.split(100, 0.2, "stratified", labels, seed=1) == (train, test)  # seeded
    assert data.split(10, 3, "last", None, seed=1) == (list(range(7)), [7, 8, 9])
    train, test = data.split(10, 0.25, "random", None, seed=2)
    assert len(test) == 3 and not set(train) & set(test)
    # stratified without labels (not a classification): random
    assert data.split(10, 0.25, "stratified", None, seed=2) == (train, test)
    for size in (0, -1, 10, float("nan")):
        with pytest.raises(InvalidParameter):
            data.test_count(10, size)


def test_metrics():
    assert metrics.classification([0, 1, 1, 2], [0, 1, 2, 2], 3)["accuracy"] == 0.75
    ner = metrics.tokens([["B-PER", "I-PER", "O"]], [["B-PER", "I-PER", "O"]])
    assert ner["f1"] == 1.0 and ner["accuracy"] == 1.0
    assert metrics.tokens([["B-PER", "O"]], [["O", "O"]])["f1"] == 0.0
    assert metrics.tokens([["1", "0"]], [["1", "1"]])["accuracy"] == 0.5  # not IOB: tag-level
    assert metrics.squad(["the Paris", "x"], [["Paris"], [""]]) == {"exact_match": 50.0, "f1": 50.0}
    s2s = metrics.seq2seq(["the cat sat on the mat"], ["the cat sat on the mat"])
    assert s2s["rougeL"] == pytest.approx(1.0) and s2s["bleu"] == pytest.approx(100.0)
    assert metrics.better("text-classification", {"f1": 0.9}, {"f1": 0.8})
    assert not metrics.better("conversation", {"perplexity": 9.0}, {"perplexity": 8.0})
    assert metrics.better("conversation", {"perplexity": 9.0}, None)


def test_stored_paths_stay_inside_the_model_folder():
    assert stored.check_path("tokenizer.json") == "tokenizer.json"
    for bad in ("../x", "/etc/passwd", "a/../../b", ".pgml_files.json", "a/./b", "", "pytorch_model.bin"):
        with pytest.raises(PgmlError):
            stored.check_path(bad)


# ------------------------------------------------------------------ helpers


def tune(conn, project, task=None, relation=None, model=None, hyperparams=None, **kwargs):
    """SELECT * FROM pgml.tune(...): its one row (status, task, algorithm, deployed)."""
    casts = {"test_size": "::real", "test_sampling": "::pgml.sampling"}
    names = ", ".join(f"{k} => %({k})s{casts.get(k, '')}" for k in kwargs)
    rows = conn.execute(
        "SELECT * FROM pgml.tune(%(project)s, task => %(task)s, relation_name => %(relation)s, "
        f"model_name => %(model)s, hyperparams => %(hp)s{', ' + names if names else ''})",
        {"project": project, "task": task, "relation": relation, "model": model, "hp": Jsonb(hyperparams or {}),
         **kwargs}).fetchall()
    assert len(rows) == 1
    return rows[0]


def latest(conn, project):
    """The project's latest model: (id, status, metrics, hyperparams, base_model, lora)."""
    return conn.execute("SELECT m.id, m.status, m.metrics, m.hyperparams, m.base_model, m.lora FROM pgml.models m "
                        "JOIN pgml.projects p ON p.id = m.project_id WHERE p.name = %s ORDER BY m.id DESC LIMIT 1",
                        (project,)).fetchone()


def deployed_id(conn, project):
    row = conn.execute("SELECT id FROM pgml.deployed_models WHERE name = %s", (project,)).fetchone()
    return row and row[0]


def serve(conn, task, project, inputs, args=None, json_inputs=False):
    cast = "jsonb[]" if json_inputs else "text[]"
    return one(conn, f"SELECT pgml.transform(task => %s, inputs => %s::{cast}, args => %s)",
               (Jsonb({"task": task, "model": project}), inputs, Jsonb(args or {})))


def fill(conn, table, columns, rows):
    conn.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
    conn.execute(f"CREATE TABLE {table} ({columns})")
    names = ", ".join(c.split()[0] for c in columns.split(", "))
    with conn.cursor() as cur:
        cur.executemany(f"INSERT INTO {table} ({names}) VALUES ({', '.join(['%s'] * len(columns.split(', ')))})",
                        rows)


def server_python(conn, code: str):
    """Run Python in the server (as the superuser) with pgml_plpy importable; the NOTICEs it raised. The code
    has json, Settings, the registry's files module as stored and the database as db."""
    conn.execute("SELECT pgml._activate()")
    return in_backend(conn, "import json\nfrom pgml_plpy.server import PlpyDatabase\nfrom pgml_plpy.settings import "
                            "Settings\nfrom pgml_plpy.tuning.registry import files as stored\ndb = PlpyDatabase(plpy)\n"
                      + code)


def models_cache(conn) -> str:
    """The server's folder of restored tuned models (the suite gives each server its own)."""
    return one(conn, "SELECT value #>> '{}' FROM pgml.settings WHERE name = 'models_cache'")


def clear_restored(conn):
    server_python(conn, f"import shutil\nshutil.rmtree({models_cache(conn)!r}, ignore_errors=True)")


@pytest.fixture(scope="module")
def fresh(dsn):
    """A backend that trains nothing: it serves tuned models by project name, restored from pgml.files."""
    with psycopg.connect(dsn, autocommit=True) as c:
        yield c


@pytest.fixture(scope="module")
def conn(conn):
    """The session's backend, with an empty registry before this module's first database test (the unit
    tests above start no server)."""
    conn.execute("DELETE FROM pgml.projects")
    conn.execute("DELETE FROM pgml.snapshots")
    return conn


# ------------------------------------------------------------------ text classification

SENTIMENT_HP = {"training_args": {"num_train_epochs": 15, "learning_rate": 1e-3, "per_device_train_batch_size": 16,
                                  "warmup_steps": 10},
                "dataset_args": {"text_column": "review"}}


def sentiment_rows():
    rows = []
    for phrases, label in ((tm.POS_PHRASES, "positive"), (tm.NEG_PHRASES, "negative")):
        for p in phrases:
            rows += [(p, label), (p.capitalize() + ".", label), (p.capitalize() + "!", label)]
    return rows


HELD_OUT = ([("honestly " + p, "positive") for p in tm.POS_PHRASES]
            + [("honestly " + p, "negative") for p in tm.NEG_PHRASES])


@pytest.fixture(scope="module")
def sentiment(conn, models):
    """The 'sentiment' project: bert-mlm tuned on a generated review table (function form)."""
    fill(conn, "reviews", "review text, sentiment text", sentiment_rows() + [(None, "positive"), ("meh", None)])
    seen = notices(conn)
    row = tune(conn, "sentiment", "text-classification", "reviews", models["bert-mlm"], SENTIMENT_HP,
               y_column_name="sentiment", test_size=0.25)
    return {"row": row, "notices": seen, "model": latest(conn, "sentiment")}


def base_accuracy(model_folder, texts, truth, names):
    """The untrained base (bert-mlm with a fresh classification head, seeded) on texts, in this process."""
    import torch
    import transformers

    transformers.set_seed(42)
    tok = transformers.AutoTokenizer.from_pretrained(model_folder)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(model_folder, num_labels=len(names))
    with torch.inference_mode():
        logits = model(**tok(texts, padding=True, return_tensors="pt")).logits
    return sum(names[i] == t for i, t in zip(logits.argmax(-1).tolist(), truth)) / len(truth)


@pytest.mark.slow
def test_text_classification_tunes_serves_and_beats_the_base(sentiment, fresh, models, conn):
    assert sentiment["row"] == ("successful", "text-classification", "transformers", True)
    model_id, status, m, hp, base, lora = sentiment["model"]
    assert status == "successful" and base == models["bert-mlm"] and not lora
    assert {"accuracy", "f1", "precision", "recall", "eval_loss", "train_loss", "train_runtime"} <= set(m)
    assert m["test_rows"] == 33 and m["train_rows"] == 96 and m["f1"] > 0.8
    assert hp["model_name"] == models["bert-mlm"] and hp["project_name"] == "sentiment"
    assert hp["dataset_args"] == {"text_column": "review"}
    # NULLs skipped and counted, and said so
    analysis = one(conn, "SELECT s.analysis FROM pgml.snapshots s JOIN pgml.models m ON m.snapshot_id = s.id "
                         "WHERE m.id = %s", (model_id,))
    assert analysis["rows"] == 131 and analysis["skipped"] == 2
    assert analysis["nulls"] == {"review": 1, "sentiment": 1}
    assert analysis["classes"] == {"negative": 63, "positive": 66}
    assert any("2 skipped: 1 with NULL review, 1 with NULL sentiment" in n for n in sentiment["notices"])
    assert any("deployed" in n and "f1" in n for n in sentiment["notices"])
    # served by project name from a backend that did not train it; labels are the table's classes
    texts = [t for t, _ in HELD_OUT]
    out = serve(fresh, "text-classification", "sentiment", texts)
    assert {o["label"] for o in out} <= {"positive", "negative"}
    tuned = sum(o["label"] == y for o, (_, y) in zip(out, HELD_OUT)) / len(HELD_OUT)
    base = base_accuracy(models["bert-mlm"], texts, [y for _, y in HELD_OUT], ["negative", "positive"])
    assert tuned >= 0.75 and tuned > base + 0.15, (tuned, base)
    assert one(conn, "SELECT count(*) FROM pgml.logs WHERE model_id = %s", (model_id,)) >= 1


@pytest.mark.slow
def test_a_second_tune_is_a_new_version_deployed_only_if_better(sentiment, conn, fresh):
    first = sentiment["model"][0]
    # the project remembers its task, base model and data (its snapshot): a worse run is not deployed
    row = tune(conn, "sentiment", hyperparams={"training_args": {"max_steps": 1, "learning_rate": 1e-9}})
    assert row == ("successful", "text-classification", "transformers", False)
    worse = latest(conn, "sentiment")
    assert worse[0] > first and worse[3]["model_name"] == sentiment["model"][3]["model_name"]
    assert deployed_id(conn, "sentiment") == first
    # automatic_deploy false: not deployed, whatever its metrics; materialize_snapshot: a copy of the data
    row = tune(conn, "sentiment", relation="reviews", hyperparams=SENTIMENT_HP, y_column_name="sentiment",
               automatic_deploy=False, materialize_snapshot=True)
    assert row[3] is False and deployed_id(conn, "sentiment") == first
    snapshot = one(conn, "SELECT snapshot_id FROM pgml.models WHERE id = %s", (latest(conn, "sentiment")[0],))
    assert one(conn, f"SELECT count(*) FROM pgml.snapshot_{snapshot}") == 131
    # ... which the project's next tune without relation_name reads
    tune(conn, "sentiment", hyperparams={"training_args": {"max_steps": 1, "learning_rate": 1e-9}})
    assert one(conn, "SELECT s.relation_name FROM pgml.snapshots s JOIN pgml.models m ON m.snapshot_id = s.id "
                     "WHERE m.id = %s", (latest(conn, "sentiment")[0],)) == f"pgml.snapshot_{snapshot}"
    # deploy a chosen model by id, then roll back; pgml.transform follows at once, in any backend
    assert conn.execute("SELECT * FROM pgml.deploy(%s)", (worse[0],)).fetchall() == [
        ("sentiment", "specific", "transformers")]
    assert deployed_id(conn, "sentiment") == worse[0]
    out_worse = serve(fresh, "text-classification", "sentiment", ["I love it"])
    assert conn.execute("SELECT * FROM pgml.deploy('sentiment', 'rollback')").fetchall() == [
        ("sentiment", "rollback", "transformers")]
    assert deployed_id(conn, "sentiment") == first
    out_first = serve(fresh, "text-classification", "sentiment", ["I love it"])
    assert out_first != out_worse
    conn.execute("SELECT * FROM pgml.deploy('sentiment', 'best_score')")
    best = conn.execute("SELECT model_id FROM pgml.tune_runs WHERE project = 'sentiment' "
                        "ORDER BY (metrics->>'f1')::float8 DESC, model_id LIMIT 1").fetchone()[0]
    assert deployed_id(conn, "sentiment") == best
    conn.execute("SELECT * FROM pgml.deploy('sentiment', 'most_recent')")
    assert deployed_id(conn, "sentiment") == latest(conn, "sentiment")[0]
    runs = conn.execute("SELECT status, deployed FROM pgml.tune_runs WHERE project = 'sentiment'").fetchall()
    assert len(runs) == 4 and sum(d for _, d in runs) == 1
    conn.execute("SELECT * FROM pgml.deploy(%s)", (first,))


# ------------------------------------------------------------------ the other tasks


@pytest.mark.slow
def test_text_pair_classification(conn, fresh, models):
    rng = random.Random(3)
    rows = []
    for _ in range(120):
        name, city, other = rng.choice(tm.NAMES), *rng.sample(tm.CITIES, 2)
        same = rng.random() < 0.5
        rows.append((f"{name} lives in {city}.", f"{name} lives in {city if same else other}.", int(same)))
    fill(conn, "pairs", "premise text, hypothesis text, entails integer", rows)
    hp = {"training_args": {"num_train_epochs": 3, "learning_rate": 1e-3, "per_device_train_batch_size": 16},
          "dataset_args": {"text1_column": "premise", "text2_column": "hypothesis"}}
    row = tune(conn, "pairs", "text-pair-classification", "pairs", models["bert-nli"], hp, y_column_name="entails",
               test_sampling="last", test_size=30)
    assert row[:3] == ("successful", "text-pair-classification", "transformers")
    m = latest(conn, "pairs")[2]
    assert {"accuracy", "f1"} <= set(m) and m["test_rows"] == 30
    out = serve(fresh, "text-classification", "pairs", ["Omar lives in Paris."])
    assert out[0]["label"] in ("0", "1")  # the integer classes of the table, as text
    # an integer column that load_dataset made from a ClassLabel: its names are the labels; a second
    # tune of the project reads its last data (relation, columns, y column) again
    conn.execute("""COMMENT ON COLUMN pairs.entails IS '{"class_label": ["different", "same"]}'""")
    assert tune(conn, "pairs", hyperparams={"training_args": {"max_steps": 1}})[0] == "successful"
    classes = one(conn, "SELECT s.analysis->'classes' FROM pgml.snapshots s JOIN pgml.models m "
                        "ON m.snapshot_id = s.id WHERE m.id = %s", (latest(conn, "pairs")[0],))
    assert set(classes) == {"different", "same"}


@pytest.mark.slow
def test_token_classification(conn, fresh, models):
    examples = tm._ner_examples(120, seed=5)
    fill(conn, "ner", "tokens text[], tags jsonb",
         [([w for w, _ in ex], Jsonb([t for _, t in ex])) for ex in examples])
    hp = {"training_args": {"num_train_epochs": 4, "learning_rate": 3e-3, "per_device_train_batch_size": 16}}
    row = tune(conn, "ner", "token-classification", "ner", models["bert-mlm"], hp, y_column_name="tags")
    assert row[:2] == ("successful", "token-classification")
    m = latest(conn, "ner")[2]
    assert {"f1", "precision", "recall", "accuracy"} <= set(m) and m["f1"] > 0.3
    out = serve(fresh, "token-classification", "ner", ["I am Omar and I live in Paris ."],
                {"aggregation_strategy": "simple"})
    assert {e["entity_group"] for e in out[0]} <= {"PER", "LOC"} and out[0]


@pytest.mark.slow
def test_question_answering(conn, fresh, models):
    examples = tm._qa_examples(160, seed=21)
    fill(conn, "squad", "question text, context text, answers jsonb",
         [(q, c, Jsonb({"text": [a] if a else [], "answer_start": [s] if a else []})) for q, c, a, s in examples]
         + [("Who?", "Nobody is here.", Jsonb({"text": ["Zoe"], "answer_start": [0]})), ("Who?", "x", None)])
    hp = {"training_args": {"num_train_epochs": 2, "learning_rate": 1e-3, "per_device_train_batch_size": 16},
          "max_seq_length": 96}
    row = tune(conn, "qa", "question-answering", "squad", models["bert-qa"], hp, test_size=40)
    assert row[:2] == ("successful", "question-answering")
    model_id, _, m, _, _, _ = latest(conn, "qa")
    assert {"exact_match", "f1"} <= set(m) and m["f1"] > 30
    analysis = one(conn, "SELECT s.analysis FROM pgml.snapshots s JOIN pgml.models m ON m.snapshot_id = s.id "
                         "WHERE m.id = %s", (model_id,))
    assert analysis["nulls"] == {"answers": 1} and analysis["other_skips"] == {"with an answer not in context": 1}
    out = serve(fresh, "question-answering", "qa",
                [json.dumps({"question": "Where does Anna live?", "context": "Anna lives in Tokyo. Peter is 8."})])
    assert set(out) == {"answer", "score", "start", "end"}


@pytest.mark.slow
def test_seq2seq_tasks(conn, fresh, models):
    triples = tm._translation_triples()
    rng = random.Random(13)
    summaries = []
    for _ in range(60):
        a, b = rng.sample(tm.ENGLISH_CORPUS, 2)
        summaries.append((f"{a} {b}", a))
    fill(conn, "en_fr", "english text, french text", [(en, fr) for en, fr, _ in triples])
    fill(conn, "docs", "document text, summary text", summaries)
    fill(conn, "qa_pairs", "text text, target text", [(f"capital of {c}?", c) for c in tm.CITIES * 4])
    hp = {"training_args": {"num_train_epochs": 2, "learning_rate": 1e-3, "per_device_train_batch_size": 16},
          "max_target_length": 24, "dataset_args": {"text_column": "english"}}
    assert tune(conn, "en_fr", "translation_en_to_fr", "en_fr", models["t5-tiny"], hp, y_column_name="french",
                test_size=20)[:2] == ("successful", "translation")
    m = latest(conn, "en_fr")[2]
    assert {"bleu", "chrf", "rougeL", "eval_loss"} <= set(m) and m["bleu"] > 5
    out = serve(fresh, "translation_en_to_fr", "en_fr", ["The cat is big."], {"max_new_tokens": 10})
    assert "chat" in out[0]["translation_text"]
    hp["dataset_args"] = {"text_column": "document"}
    assert tune(conn, "sums", "summarization", "docs", models["t5-tiny"], hp, test_size=10)[1] == "summarization"
    assert {"rouge1", "rouge2", "rougeL", "rougeLsum", "bleu"} <= set(latest(conn, "sums")[2])
    assert "summary_text" in serve(fresh, "summarization", "sums", [summaries[0][0]], {"max_new_tokens": 12})[0]
    # text2text: the columns' default names (text, target), and a prefix the served model keeps
    hp = {"training_args": {"num_train_epochs": 1, "per_device_train_batch_size": 16}, "prefix": "answer: "}
    assert tune(conn, "t2t", "text2text", "qa_pairs", models["t5-tiny"], hp)[1] == "text2text"
    assert "generated_text" in serve(fresh, "text2text-generation", "t2t", ["capital of Paris?"],
                                     {"max_new_tokens": 5})[0]
    config = server_python(conn, "from pgml_plpy.tuning.registry import serving\n"
                                 "f = serving.restore(db, serving.lookup(db, 't2t'), Settings())\n"
                                 "plpy.notice(json.dumps(json.loads((f / 'config.json').read_text()).get('prefix')))")
    assert json.loads(config[-1]) == "answer: "


@pytest.mark.slow
def test_text_generation(conn, fresh, models):
    fill(conn, "corpus", "body text", [(t,) for t in tm.ENGLISH_CORPUS])
    hp = {"training_args": {"num_train_epochs": 2, "learning_rate": 1e-3, "per_device_train_batch_size": 8},
          "max_seq_length": 64}
    assert tune(conn, "writer", "text-generation", "corpus", models["gpt2-plain"], hp)[:2] == (
        "successful", "text-generation")  # the only text column is the text
    m = latest(conn, "writer")[2]
    assert m["perplexity"] > 1 and m["eval_loss"] > 0
    out = serve(fresh, "text-generation", "writer", ["The cat"], {"max_new_tokens": 5, "do_sample": False})
    assert out[0][0]["generated_text"].startswith("The cat")


def chat_rows():
    rows = []
    for dialogue in tm.CHAT_DIALOGUES * 4:
        system = next((c for r, c in dialogue if r == "system"), None)
        user = [c for r, c in dialogue if r == "user"][-1]
        assistant = [c for r, c in dialogue if r == "assistant"][-1]
        rows.append((system, user, assistant))
    return rows


@pytest.mark.slow
def test_conversation_with_lora(conn, fresh, models):
    fill(conn, "chats", "system text, \"user\" text, assistant text", chat_rows())
    hp = {"training_args": {"num_train_epochs": 2, "learning_rate": 1e-3, "per_device_train_batch_size": 8},
          "max_seq_length": 96}
    assert tune(conn, "chatbot", "conversation", "chats", models["gpt2-chat"], hp)[:2] == (
        "successful", "conversation")
    model_id, _, m, hp_recorded, base, lora = latest(conn, "chatbot")
    assert lora and base == models["gpt2-chat"] and m["perplexity"] > 1
    assert hp_recorded["lora_config"]["task_type"] == "CAUSAL_LM" and hp_recorded["lora_config"]["r"] == 8
    files = dict(conn.execute("SELECT path, sum(octet_length(data)) FROM pgml.files WHERE model_id = %s "
                              "GROUP BY path", (model_id,)).fetchall())
    # the adapter and the tokenizer (with its chat template), not the base model's weights
    assert "adapter_model.safetensors" in files and "adapter_config.json" in files
    assert "model.safetensors" not in files and files["adapter_model.safetensors"] < 100_000
    reply = serve(fresh, "conversational", "chatbot", [json.dumps({"role": "user", "content": "Hello!"})],
                  {"max_new_tokens": 12, "do_sample": False}, json_inputs=True)
    assert isinstance(reply, list) and isinstance(reply[0], str) and reply[0].strip()


@pytest.mark.slow
def test_lora_for_seq2seq_and_text_generation(conn, fresh, models):
    fill(conn, "lora_en_fr", "text text, translation text", [(en, fr) for en, fr, _ in tm._translation_triples()])
    fill(conn, "lora_corpus", "text text", [(t,) for t in tm.ENGLISH_CORPUS])
    hp = {"training_args": {"num_train_epochs": 1}, "lora_config": {"r": 4}}
    assert tune(conn, "lora_t5", "translation_en_to_fr", "lora_en_fr", models["t5-tiny"], hp)[3] is True
    assert tune(conn, "lora_gen", "text-generation", "lora_corpus", models["gpt2-plain"], hp)[3] is True
    for project in ("lora_t5", "lora_gen"):
        model_id, _, m, _, _, lora = latest(conn, project)
        paths = {p for (p,) in conn.execute("SELECT path FROM pgml.files WHERE model_id = %s", (model_id,))}
        assert lora and "adapter_model.safetensors" in paths and "model.safetensors" not in paths, paths
    out = serve(fresh, "translation_en_to_fr", "lora_t5", ["The cat is big."], {"max_new_tokens": 10})
    assert "chat" in out[0]["translation_text"]
    out = serve(fresh, "text-generation", "lora_gen", ["The cat"], {"max_new_tokens": 5, "do_sample": False})
    assert out[0][0]["generated_text"].startswith("The cat")


# ------------------------------------------------------------------ the registry travels with the database


@pytest.mark.slow
def test_restored_from_pgml_files_with_checksums(conn, dsn, sentiment):
    # the local copy is gone: a new backend restores it from pgml.files
    clear_restored(conn)
    with psycopg.connect(dsn, autocommit=True) as c:
        first = serve(c, "text-classification", "sentiment", ["I love it"])
    # a local copy that no longer matches is restored again
    server_python(conn, f"import pathlib\nfor f in pathlib.Path({models_cache(conn)!r}).glob('*/model.safetensors'):\n"
                        "    f.write_bytes(b'garbage')")
    with psycopg.connect(dsn, autocommit=True) as c:
        assert serve(c, "text-classification", "sentiment", ["I love it"]) == first
    # a damaged part in the database is refused (in a transaction rolled back afterwards)
    deployed = deployed_id(conn, "sentiment")
    clear_restored(conn)
    with psycopg.connect(dsn) as c:
        c.execute("UPDATE pgml.files SET data = 'x'::bytea || data WHERE model_id = %s AND "
                  "path = 'model.safetensors' AND part = 0", (deployed,))
        with pytest.raises(psycopg.Error) as info:
            c.execute("SELECT pgml.transform(task => %s, inputs => ARRAY['x'])",
                      (Jsonb({"task": "text-classification", "model": "sentiment"}),))
        assert info.value.sqlstate == "XX001" and "SHA-256" in info.value.diag.message_primary
        c.rollback()


@pytest.mark.slow
def test_dump_and_restore_carry_the_models(conn, dsn, sentiment):
    import subprocess

    from localpg import pg_bindir

    info = psycopg.conninfo.conninfo_to_dict(dsn)
    target = "pgml_restored"
    conn.execute(f"DROP DATABASE IF EXISTS {target}")
    conn.execute(f"CREATE DATABASE {target}")
    try:
        base = [f"--host={info.get('host')}", f"--port={info.get('port')}", f"--username={info.get('user')}"]
        env = {"PGPASSWORD": info["password"]} if info.get("password") else None
        dump = subprocess.run([str(pg_bindir() / "pg_dump"), *base, "--dbname=postgres", "--schema=pgml"],
                              capture_output=True, check=True, env=env)
        setup = b"CREATE EXTENSION plpython3u;\n"
        subprocess.run([str(pg_bindir() / "psql"), *base, f"--dbname={target}", "-X", "-q", "-v", "ON_ERROR_STOP=1"],
                       input=setup + dump.stdout, capture_output=True, check=True, env=env)
        clear_restored(conn)
        here = serve(conn, "text-classification", "sentiment", ["I love it", "it is awful"])
        with psycopg.connect(dsn.replace("dbname=postgres", f"dbname={target}"), autocommit=True) as c:
            assert serve(c, "text-classification", "sentiment", ["I love it", "it is awful"]) == here
    finally:
        conn.execute(f"DROP DATABASE IF EXISTS {target} WITH (FORCE)")


@pytest.mark.slow
def test_reinstall_keeps_the_registry(conn, dsn, sentiment):
    before = conn.execute("SELECT count(*) FROM pgml.models").fetchone()[0]
    macs = conn.execute("SELECT id, files_mac FROM pgml.models ORDER BY id").fetchall()
    result = install(dsn, one(conn, "SELECT pgml._venv()"))
    assert result.returncode == 0, result.stderr
    assert one(conn, "SELECT count(*) FROM pgml.models") == before > 0
    assert deployed_id(conn, "sentiment") is not None
    # the tunes' own MACs stay: the install signs only models that have none
    assert conn.execute("SELECT id, files_mac FROM pgml.models ORDER BY id").fetchall() == macs


# ------------------------------------------------------------------ while it runs: progress, cancel


LONG_HP = {"training_args": {"max_steps": 100000, "learning_rate": 1e-3}, "dataset_args": {"text_column": "review"}}


@pytest.mark.slow
def test_procedure_commits_progress_and_a_cancel_marks_the_run(dsn, conn, models, sentiment):
    with psycopg.connect(dsn, autocommit=True) as runner:
        pid = one(runner, "SELECT pg_backend_pid()")
        seen = notices(runner)
        outcome = {}

        def run():
            try:
                runner.execute("CALL pgml.tune_run('long', 'text-classification', 'reviews', 'sentiment', %s, %s)",
                               (models["bert-mlm"], Jsonb(LONG_HP)))
            except psycopg.Error as exc:
                outcome["error"] = exc
            outcome["ended"] = time.monotonic()

        thread = threading.Thread(target=run)
        thread.start()
        progress = None
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and progress is None:
            time.sleep(0.5)
            progress = conn.execute("SELECT model_id, status, step, total_steps, loss, learning_rate, eta_seconds "
                                    "FROM pgml.tune_runs WHERE project = 'long' AND step > 0").fetchone()
        assert progress is not None, seen
        model_id, status, step, total, loss, lr, eta = progress
        assert status == "in_progress" and 0 < step < total == 100000 and loss > 0 and lr > 0 and eta > 0
        asked = time.monotonic()
        conn.execute("SELECT pg_cancel_backend(%s)", (pid,))
        thread.join(300)
        assert not thread.is_alive()
        # stopped within a minute, however busy the machine: the 100000 steps would take hours
        assert outcome["error"].sqlstate == "57014" and outcome["ended"] - asked < 60
        assert any(f"step {step}/100000" in n and "steps/s" in n and "s left" in n for n in seen), seen
    status, error = conn.execute("SELECT status, error FROM pgml.models WHERE id = %s", (model_id,)).fetchone()
    assert status == "cancelled" and "cancel" in error
    assert one(conn, "SELECT count(*) FROM pgml.files WHERE model_id = %s", (model_id,)) == 0
    assert deployed_id(conn, "long") is None
    err = sql_error(conn, "SELECT * FROM pgml.deploy(%s)", (model_id,))
    assert err.sqlstate == "55000"
    err = sql_error(conn, "SELECT pgml.transform(task => %s, inputs => ARRAY['x'])",
                    (Jsonb({"task": "text-classification", "model": "long"}),))
    assert err.sqlstate == "55000" and "no deployed model" in err.diag.message_primary


@pytest.mark.slow
def test_procedure_returns_its_model(conn, models, sentiment):
    hp = {"training_args": {"max_steps": 2}, "dataset_args": {"text_column": "review"}}
    row = conn.execute("CALL pgml.tune_run('quick', 'text-classification', 'reviews', 'sentiment', %s, %s)",
                       (models["bert-mlm"], Jsonb(hp))).fetchone()
    assert row == (latest(conn, "quick")[0], "successful", True)
    assert one(conn, "SHOW search_path") == '"$user", public'


@pytest.mark.slow
def test_terminated_run_is_marked_failed_by_the_next_tune(dsn, conn, models, sentiment):
    runner = psycopg.connect(dsn, autocommit=True)
    pid = one(runner, "SELECT pg_backend_pid()")
    thread = threading.Thread(target=lambda: pytest.raises(psycopg.Error, runner.execute,
                                                            "CALL pgml.tune_run('killed', 'text-classification', "
                                                            "'reviews', 'sentiment', %s, %s)",
                                                            (models["bert-mlm"], Jsonb(LONG_HP))))
    thread.start()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not one(conn, "SELECT count(*) FROM pgml.tune_runs "
                                                        "WHERE project = 'killed'"):
        time.sleep(0.5)
    assert one(conn, "SELECT pg_terminate_backend(%s, 300000)", (pid,))  # true: the backend has exited
    thread.join(300)
    assert not thread.is_alive()
    runner.close()
    assert one(conn, "SELECT status FROM pgml.tune_runs WHERE project = 'killed'") == "in_progress"
    tune(conn, "killed", hyperparams={"training_args": {"max_steps": 1}})
    assert conn.execute("SELECT status FROM pgml.tune_runs WHERE project = 'killed' ORDER BY model_id").fetchall() \
        == [("failed",), ("successful",)]


@pytest.mark.slow
def test_function_form_rolls_back_on_timeout(dsn, models, sentiment):
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("SELECT pgml.version()")  # activated: the timeout hits training, not imports
        c.execute("SET statement_timeout = '6s'")
        started = time.monotonic()
        err = sql_error(c, "SELECT * FROM pgml.tune('timed_out', 'text-classification', 'reviews', 'sentiment', %s, "
                           "%s)", (models["bert-mlm"], Jsonb(LONG_HP)))
        # stopped within a minute of the timeout, however busy the machine: the 100000 steps would take hours
        assert err.sqlstate == "57014" and time.monotonic() - started < 6 + 60
        c.execute("RESET statement_timeout")
        assert one(c, "SELECT count(*) FROM pgml.projects WHERE name = 'timed_out'") == 0


# ------------------------------------------------------------------ clear errors before any training


@pytest.fixture(scope="module")
def error_tables(conn):
    fill(conn, "empty_reviews", "review text, sentiment text", [])
    fill(conn, "one_class", "review text, sentiment text", [("good", "pos"), ("fine", "pos"), ("great", "pos")])
    fill(conn, "typed", "review integer, sentiment real, body text", [(1, 1.0, "a"), (2, 2.0, "b")])
    fill(conn, "nulls", "review text, sentiment text", [(None, "a"), ("x", None)])


@pytest.mark.slow
@pytest.mark.parametrize("call, sqlstate, fragment", [
    ("'e1', 'text-classification', 'empty_reviews', 'sentiment', {m}", "22023", "no rows to train on"),
    ("'e2', 'text-classification', 'nulls', 'sentiment', {m}", "22023", "2 skipped (1 with NULL review, "),
    ("'e3', 'text-classification', 'one_class', 'sentiment', {m}", "22023", "one class only"),
    ("'e4', 'text-classification', 'one_class', 'nope', {m}", "42703", "column text (text_column) does not"),
    ("'e4b', 'text-classification', 'one_class', 'nope', {m}, "
     "hyperparams => '{{\"dataset_args\": {{\"text_column\": \"review\"}}}}'", "42703",
     "column nope (class_column, y_column_name) does not exist in public.one_class"),
    ("'e5', 'text-classification', 'typed', 'sentiment', {m}", "42804", "sentiment of public.typed is real"),
    ("'e6', 'text-classification', 'no_such_table', 'sentiment', {m}", "42P01", "no_such_table"),
    ("'e7', 'fill-mask', 'one_class', 'sentiment', {m}", "22023", "cannot tune task"),
    ("'e8', 'text-classification', 'one_class', 'sentiment', NULL", "22023", "model_name is required"),
    ("'e9', 'text-classification', NULL, 'sentiment', {m}", "22023", "relation_name is required"),
    ("'e10'", "22023", "does not exist: pass task"),
    ("'e11', 'text-classification', 'reviews', 'sentiment', '/no/such/model'", "58P01", "does not exist"),
    ("'e12', 'text-classification', 'reviews', 'sentiment', {m}, test_size => 500", "22023", "leaves no rows"),
    ("'e13', 'text-classification', 'reviews', 'sentiment', {m}, hyperparams => '{{\"lora_config\": {{}}}}'",
     "0A000", "LoRA"),
    ("'e14', 'text-classification', 'reviews', 'sentiment', {m}, hyperparams => '{{\"epochs\": 1}}'",
     "22023", "unknown key in hyperparams: epochs"),
    ("'e15', 'text-classification', 'reviews', 'sentiment', {m}, "
     "hyperparams => '{{\"training_args\": {{\"epochz\": 1}}}}'", "22023", "epochz"),
    ("'sentiment', 'summarization', 'reviews', 'sentiment', {m}", "22023", "is a text-classification project"),
    ("'e16', 'text-classification', 'reviews', 'sentiment', {m}, "
     "hyperparams => '{{\"dataset_args\": {{\"class_column\": \"review\"}}}}'", "22023", "name different columns"),
])
def test_errors_before_training(conn, models, sentiment, error_tables, call, sqlstate, fragment):
    err = sql_error(conn, "SELECT * FROM pgml.tune(" + call.format(m=f"'{models['bert-mlm']}'") + ")")
    assert err.sqlstate == sqlstate and fragment in err.diag.message_primary, err.diag.message_primary
    assert one(conn, "SELECT count(*) FROM pgml.models WHERE status = 'in_progress'") == 0


@pytest.mark.slow
def test_procedure_needs_its_own_transactions(dsn, models, sentiment):
    with psycopg.connect(dsn) as c:
        with pytest.raises(psycopg.Error) as info:
            c.execute("CALL pgml.tune_run('tx', 'text-classification', 'reviews', 'sentiment', %s)",
                      (models["bert-mlm"],))
        assert info.value.sqlstate == "2D000" and "CALL it on its own" in info.value.diag.message_hint


@pytest.mark.slow
def test_tuning_is_for_pgml_admin(dsn, conn, models, sentiment):
    conn.execute("DROP ROLE IF EXISTS pgml_test_tuner")
    conn.execute("CREATE ROLE pgml_test_tuner LOGIN PASSWORD 'tuner' IN ROLE pgml_user")
    conn.execute("GRANT SELECT ON reviews TO pgml_test_tuner")
    call = ("SELECT * FROM pgml.tune('granted', 'text-classification', 'reviews', 'sentiment', %s, %s, "
            "materialize_snapshot => true)", (models["bert-mlm"], Jsonb({"training_args": {"max_steps": 1}})))
    # local model folders are limited for roles that are not admins (models_path): allow the test models
    before = conn.execute("SELECT value FROM pgml.settings WHERE name = 'models_path'").fetchone()
    conn.execute("UPDATE pgml.settings SET value = %s WHERE name = 'models_path'",
                 (Jsonb([str(Path(models["bert-mlm"]).parent)]),))
    try:
        with psycopg.connect(dsn, user="pgml_test_tuner", password="tuner", autocommit=True) as c:
            assert sql_error(c, *call).sqlstate == "42501"
            # serving is for pgml_user
            assert serve(c, "text-classification", "sentiment", ["I love it"])[0]["label"] == "positive"
        conn.execute("GRANT pgml_admin TO pgml_test_tuner")
        with psycopg.connect(dsn, user="pgml_test_tuner", password="tuner", autocommit=True) as c:
            assert c.execute(*call).fetchone() == ("successful", "text-classification", "transformers", True)
            # the registry was written for it (it writes no registry table itself), the model signed, and
            # the snapshot copied with its privileges into a table of its own
            model_id, snapshot = c.execute("SELECT id, snapshot_id FROM pgml.models WHERE project_id = "
                                           "(SELECT id FROM pgml.projects WHERE name = 'granted')").fetchone()
            assert one(c, "SELECT files_mac FROM pgml.models WHERE id = %s", (model_id,))
            assert one(c, "SELECT tableowner FROM pg_tables WHERE schemaname = 'pgml' AND tablename = %s",
                       (f"snapshot_{snapshot}",)) == "pgml_test_tuner"
            assert one(c, f"SELECT count(*) FROM pgml.snapshot_{snapshot}") == one(c, "SELECT count(*) FROM reviews")
            assert serve(c, "text-classification", "granted", ["I love it"])[0]["label"] in ("positive", "negative")
    finally:
        if before is not None:
            conn.execute("UPDATE pgml.settings SET value = %s WHERE name = 'models_path'", (Jsonb(before[0]),))
        conn.execute("DROP OWNED BY pgml_test_tuner")
        conn.execute("DROP ROLE pgml_test_tuner")
