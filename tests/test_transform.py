"""pgml.transform through SQL for every task, on the suite's tiny models: shapes, chat, cache, errors."""

import json
import os
import shutil
import tempfile

import psycopg
import pytest
from pgtest import hf_cache, one, sql_error, task
from psycopg.types.json import Jsonb

GREEDY = {"do_sample": False, "max_new_tokens": 8}


def transform(conn, task_arg, inputs, args=None):
    return one(conn, "SELECT pgml.transform(task => %s, inputs => %s::text[], args => %s)",
               (task_arg, inputs, Jsonb(args or {})))


def chat(conn, task_arg, messages, args=None):
    return one(conn, "SELECT pgml.transform(task => %s, inputs => %s::jsonb[], args => %s)",
               (task_arg, [json.dumps(m) for m in messages], Jsonb(args or {})))


def test_fill_mask(conn, models):
    out = transform(conn, task("fill-mask", models["bert-mlm"]), ["Paris is the [MASK] of France."])
    assert len(out) == 5
    assert all(set(r) == {"score", "token", "token_str", "sequence"} for r in out)


def test_text_classification(conn, models):
    out = transform(conn, task("text-classification", models["bert-sentiment"]), ["I love it", "I hate it"])
    assert [r["label"] for r in out] == ["POSITIVE", "NEGATIVE"]
    assert all(0 < r["score"] <= 1 for r in out)


def test_token_classification(conn, models):
    out = transform(conn, task("token-classification", models["bert-ner"]),
                    ["I am Omar and I live in New York City.", "Anna lives in Paris."])
    assert len(out) == 2 and all(isinstance(entities, list) for entities in out)
    assert all({"entity", "score", "index", "word", "start", "end"} <= set(e) for e in out[0] + out[1])


def test_question_answering_shapes(conn, models):
    qa = task("question-answering", models["bert-qa"])
    one_input = transform(conn, qa, [json.dumps({"question": "Where does Omar live?",
                                                 "context": "Omar lives in Paris."})])
    assert set(one_input) == {"answer", "score", "start", "end"}
    assert "Omar lives in Paris."[one_input["start"]:one_input["end"]] == one_input["answer"]
    two = transform(conn, qa, [json.dumps({"question": "Who?", "context": "Omar lives in Paris."})] * 2)
    assert isinstance(two, list) and len(two) == 2 and two[0] == two[1]
    top2 = transform(conn, qa, [json.dumps({"question": "Who?", "context": "Omar lives in Paris."})],
                     {"top_k": 2})
    assert isinstance(top2, list) and len(top2) == 2


def test_question_answering_takes_jsonb_too(conn, models):
    out = chat(conn, task("question-answering", models["bert-qa"]),
               [{"question": "Where does Omar live?", "context": "Omar lives in Paris."}])
    assert set(out) == {"answer", "score", "start", "end"}


def test_summarization(conn, models):
    out = transform(conn, task("summarization", models["t5-tiny"]),
                    ["The cat sat on the mat and looked at the birds in the garden all day long."], GREEDY)
    assert len(out) == 1 and set(out[0]) == {"summary_text"} and out[0]["summary_text"]


def test_translation_task_names(conn, models):
    out = transform(conn, task("translation_en_to_fr", models["t5-tiny"]), ["the cat", "the dog"], GREEDY)
    assert len(out) == 2 and all(set(r) == {"translation_text"} for r in out)
    german = transform(conn, task("translation_en_to_de", models["t5-tiny"]), ["the cat", "the dog"], GREEDY)
    assert german != out  # the task's prefix selects the language


def test_translation_with_src_and_tgt_lang(conn, models):
    out = transform(conn, task("translation", models["m2m-tiny"]), ["the cat"],
                    {"src_lang": "en", "tgt_lang": "fr", "max_new_tokens": 8})
    assert len(out) == 1 and set(out[0]) == {"translation_text"}


def test_text2text_generation(conn, models):
    out = transform(conn, task("text2text-generation", models["t5-tiny"]), ["translate English to French: the cat"],
                    GREEDY)
    assert len(out) == 1 and set(out[0]) == {"generated_text"}
    two = transform(conn, task("text2text-generation", models["t5-tiny"]), ["the cat"],
                    {"num_beams": 2, "num_return_sequences": 2, "max_new_tokens": 5})
    assert len(two) == 1 and len(two[0]) == 2


def test_text_generation(conn, models):
    out = transform(conn, task("text-generation", models["gpt2-chat"]), ["The cat", "The dog"], GREEDY)
    assert len(out) == 2 and all(len(r) == 1 for r in out)
    assert out[0][0]["generated_text"].startswith("The cat") and len(out[0][0]["generated_text"]) > len("The cat")
    sampled = transform(conn, task("text-generation", models["gpt2-chat"]), ["The cat"],
                        {"do_sample": True, "num_return_sequences": 3, "max_new_tokens": 4})
    assert len(sampled) == 1 and len(sampled[0]) == 3


def test_zero_shot_classification(conn, models):
    out = transform(conn, task("zero-shot-classification", models["bert-nli"]), ["I love football"],
                    {"candidate_labels": ["sports", "politics", "cooking"]})
    assert len(out) == 1 and set(out[0]) == {"labels", "scores", "sequence"}
    assert sorted(out[0]["labels"]) == ["cooking", "politics", "sports"]
    assert out[0]["scores"] == sorted(out[0]["scores"], reverse=True)
    assert out[0]["sequence"] == "I love football"


MESSAGES = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is the capital of France?"}]


@pytest.mark.parametrize("name", ["conversational", "text-generation"])
def test_chat(conn, models, name):
    out = chat(conn, task(name, models["gpt2-chat"]), MESSAGES, GREEDY)
    assert isinstance(out, list) and len(out) == 1 and isinstance(out[0], str) and out[0].strip()


def test_chat_from_text_array(conn, models):
    texts = [json.dumps(m) for m in MESSAGES]
    assert transform(conn, task("conversational", models["gpt2-chat"]), texts, GREEDY) == chat(
        conn, task("conversational", models["gpt2-chat"]), MESSAGES, GREEDY)


def test_chat_openai_arguments(conn, models):
    gpt = task("conversational", models["gpt2-chat"])
    greedy = chat(conn, gpt, MESSAGES, {"do_sample": False, "max_new_tokens": 12})[0]
    assert chat(conn, gpt, MESSAGES, {"temperature": 0, "max_tokens": 12}) == [greedy]
    short = chat(conn, gpt, MESSAGES, {"temperature": 0, "max_tokens": 2})[0]
    assert greedy.startswith(short) and len(short) < len(greedy)
    word = greedy.split()[1]
    stopped = chat(conn, gpt, MESSAGES, {"temperature": 0, "max_tokens": 12, "stop": [word]})[0]
    assert stopped == greedy[:greedy.index(word)]
    assert len(chat(conn, gpt, MESSAGES, {"n": 2, "temperature": 0.9, "max_tokens": 4})) == 2


def test_chat_template_from_args(conn, models):
    plain = task("conversational", models["gpt2-plain"])
    err = sql_error(conn, "SELECT pgml.transform(%s, inputs => %s::jsonb[])",
                    (plain, [json.dumps(m) for m in MESSAGES]))
    assert err.sqlstate == "22023" and "no chat template" in err.diag.message_primary
    assert "chat_template" in err.diag.message_hint
    template = "{% for m in messages %}{{ m.content }}\n{% endfor %}"
    out = chat(conn, plain, MESSAGES, {"chat_template": template, "do_sample": False, "max_new_tokens": 4})
    assert len(out) == 1 and isinstance(out[0], str)


def test_named_and_positional_calls(conn, models):
    t = task("text-classification", models["bert-sentiment"])
    named = one(conn, "SELECT pgml.transform(task => %s, args => '{}', inputs => ARRAY['I love it'])", (t,))
    positional = one(conn, "SELECT pgml.transform(%s, '{}', ARRAY['I love it'])", (t,))
    text_task = one(conn, "SELECT pgml.transform(%s::text, '{}'::jsonb, ARRAY['I love it'], true)",
                    (json.dumps(t.obj),))
    assert named == positional == text_task


def test_cache_reuse_and_key(dsn, models):
    """A backend keeps the model: it serves calls after its folder is gone; other loader options reload."""
    root = tempfile.mkdtemp(prefix="cache_test_", dir=os.path.dirname(models["bert-sentiment"]))
    os.chmod(root, 0o755)
    folder = os.path.join(root, "sentiment")
    shutil.copytree(models["bert-sentiment"], folder)
    try:
        with psycopg.connect(dsn, autocommit=True) as c:
            first = transform(c, task("text-classification", folder), ["I love it"])
            shutil.rmtree(folder)
            assert transform(c, task("text-classification", folder), ["I love it"]) == first
            err = sql_error(c, "SELECT pgml.transform(%s, inputs => ARRAY['x'])",
                            (task("text-classification", folder, torch_dtype="float32"),))
            assert err.sqlstate == "58P01"
        with psycopg.connect(dsn, autocommit=True) as fresh:
            err = sql_error(fresh, "SELECT pgml.transform(%s, inputs => ARRAY['x'])",
                            (task("text-classification", folder),))
            assert err.sqlstate == "58P01"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_hub_id_from_the_servers_hugging_face_cache(conn, models):
    """A hub id resolves offline from the HF cache named by the huggingface_cache setting."""
    cache = tempfile.mkdtemp(prefix="hf_cache_", dir=os.path.dirname(models["bert-sentiment"]))
    hf_cache(cache, models["bert-sentiment"], ["acme/tiny-sentiment"])
    conn.execute("UPDATE pgml.settings SET value = to_jsonb(%s::text) WHERE name = 'huggingface_cache'", (cache,))
    try:
        by_id = transform(conn, task("text-classification", "acme/tiny-sentiment"), ["I love it"])
        assert by_id == transform(conn, task("text-classification", models["bert-sentiment"]), ["I love it"])
        err = sql_error(conn, "SELECT pgml.transform(%s, inputs => ARRAY['x'])",
                        (task("text-classification", "acme/other-model"),))
        assert err.sqlstate == "58P01" and cache in err.diag.message_primary
        assert "hub_downloads" in err.diag.message_hint
    finally:
        conn.execute("UPDATE pgml.settings SET value = 'null' WHERE name = 'huggingface_cache'")
        shutil.rmtree(cache, ignore_errors=True)


def test_device_map_places_the_model(conn, models):
    out = transform(conn, task("text-classification", models["bert-sentiment"], device_map="auto"), ["I love it"])
    assert out[0]["label"] == "POSITIVE"


def test_text_pair_classification(conn, models):
    pair = json.dumps({"text": "The team won the match.", "text_pair": "The players scored goals."})
    out = one(conn, "SELECT pgml.transform(%s, inputs => ARRAY[%s::jsonb])",
              (task("text-classification", models["bert-nli"]), pair))
    assert len(out) == 1 and out[0]["label"] in ("entailment", "neutral", "contradiction")


def test_calls_in_a_query_planned_parallel(dsn, models):
    """Every PL/Python routine is PARALLEL UNSAFE: forcing parallel plans leaves its queries serial, and working
    (PL/Python cannot run SPI in parallel mode, not even in the leader)."""
    with psycopg.connect(dsn, autocommit=True) as c:  # a fresh backend: its first call activates the package
        major = one(c, "SELECT current_setting('server_version_num')::int / 10000")
        c.execute(f"SET {'debug_parallel_query' if major >= 16 else 'force_parallel_mode'} = on")
        for name in ("parallel_setup_cost", "parallel_tuple_cost", "min_parallel_table_scan_size"):
            c.execute(f"SET {name} = 0")
        c.execute("CREATE TEMP TABLE many AS SELECT g AS id, 'text number ' || g AS body FROM generate_series(1, 50) g")
        assert one(c, "SELECT count(*) FROM many, pgml.chunk('recursive_character', body)") == 50
        assert one(c, "SELECT count(pgml.embed(%s, body)) FROM many", (models["bert-mlm"],)) == 50
        assert one(c, "SELECT count(pgml.transform(%s, inputs => ARRAY[body])) FROM many",
                   (task("text-classification", models["bert-sentiment"]),)) == 50
