"""Every class of bad input gets one readable SQL error with a fitting SQLSTATE, and the backend lives on."""

import json

import pytest
from pgtest import one, sql_error, task
from psycopg.types.json import Jsonb


def cases(models):
    sentiment = task("text-classification", models["bert-sentiment"])
    qa = task("question-answering", models["bert-qa"])
    gpt = task("text-generation", models["gpt2-chat"])
    msg = json.dumps({"role": "user", "content": "hi"})
    return {
        "unknown task": ("SELECT pgml.transform('image-clustering', inputs => ARRAY['x'])", None,
                         "22023", "unknown task"),
        "NULL task": ("SELECT pgml.transform(NULL::text, inputs => ARRAY['x'])", None, "22004", "task"),
        "task JSON without task or model": ("SELECT pgml.transform('{\"device\": \"cpu\"}'::jsonb, "
                                            "inputs => ARRAY['x'])", None, "22023", '"task" string or a "model"'),
        "model whose task cannot be told": ("SELECT pgml.transform('{\"model\": \"x\"}'::jsonb, "
                                            "inputs => ARRAY['x'])", None, "22023", "the task of model x cannot be "
                                                                                   "told"),
        "malformed task JSON as text": ("SELECT pgml.transform('{\"task\": ', inputs => ARRAY['x'])", None,
                                        "22P02", "not valid JSON"),
        "unknown loader option": ("SELECT pgml.transform(%s, inputs => ARRAY['x'])",
                                  (task("fill-mask", models["bert-mlm"], device_mapp="auto"),), "22023",
                                  "device_mapp"),
        "missing model folder": ("SELECT pgml.transform(%s, inputs => ARRAY['x'])",
                                 (task("fill-mask", "/nonexistent/model"),), "58P01", "does not exist"),
        "hub id not cached": ("SELECT pgml.transform(%s, inputs => ARRAY['x'])",
                              (task("fill-mask", "acme/no-such-model"),), "58P01", "Hugging Face cache"),
        "invalid hub id": ("SELECT pgml.transform(%s, inputs => ARRAY['x'])",
                           (task("fill-mask", "not a model id!"),), "22023", "hub id"),
        "model without the task's head": ("SELECT pgml.transform(%s, inputs => ARRAY['x'])",
                                          (task("fill-mask", models["gpt2-chat"]),), "22023",
                                          "cannot do fill-mask"),
        "unusable device": ("SELECT pgml.transform(%s, inputs => ARRAY['x'])",
                            (task("fill-mask", models["bert-mlm"], device="cuda:0"),), "0A000", "cuda"),
        "bad dtype": ("SELECT pgml.transform(%s, inputs => ARRAY['x'])",
                      (task("fill-mask", models["bert-mlm"], torch_dtype="float17"),), "22023", "float17"),
        "quantization without bitsandbytes": ("SELECT pgml.transform(%s, inputs => ARRAY['x'])",
                                              (task("fill-mask", models["bert-mlm"], load_in_4bit=True),),
                                              "0A000", "bitsandbytes"),
        "trust_remote_code off": ("SELECT pgml.transform(%s, inputs => ARRAY['x'])",
                                  (task("fill-mask", models["bert-mlm"], trust_remote_code=True),), "42501",
                                  "trust_remote_code"),
        "NULL input element": ("SELECT pgml.transform(%s, inputs => ARRAY['a', NULL])", (sentiment,), "22004",
                               "inputs[2]"),
        "NULL inputs": ("SELECT pgml.transform(%s, inputs => NULL::text[])", (sentiment,), "22004", "inputs"),
        "empty inputs": ("SELECT pgml.transform(%s, inputs => ARRAY[]::text[])", (sentiment,), "22023", "empty"),
        "two-dimensional inputs": ("SELECT pgml.transform(%s, inputs => ARRAY[['a'], ['b']])", (sentiment,),
                                   "22023", "one-dimensional"),
        "args not an object": ("SELECT pgml.transform(%s, inputs => ARRAY['x'], args => '[1]')", (sentiment,),
                               "22023", "args must be a JSON object"),
        "args the model rejects": ("SELECT pgml.transform(%s, inputs => ARRAY['x'], args => %s)",
                                   (gpt, Jsonb({"no_such_flag": 1, "max_new_tokens": 2})), "22023",
                                   "no_such_flag"),
        "wrong input type for the task": ("SELECT pgml.transform(%s, inputs => ARRAY['{\"a\": 1}'::jsonb])",
                                          (sentiment,), "22023", "takes text"),
        "QA input not JSON": ("SELECT pgml.transform(%s, inputs => ARRAY['where?'])", (qa,), "22P02",
                              "inputs[1] is not valid JSON"),
        "QA input without context": ("SELECT pgml.transform(%s, inputs => ARRAY['{\"question\": \"q\"}'])", (qa,),
                                     "22023", "context"),
        "QA unknown argument": ("SELECT pgml.transform(%s, inputs => ARRAY[%s], args => '{\"topk\": 1, \"x\": 2}')",
                                (qa, json.dumps({"question": "q", "context": "c"})), "22023", "x"),
        "zero-shot without labels": ("SELECT pgml.transform(%s, inputs => ARRAY['x'])",
                                     (task("zero-shot-classification", models["bert-nli"]),), "22023",
                                     "candidate_labels"),
        "chat message without content": ("SELECT pgml.transform(%s, inputs => ARRAY['{\"role\": \"user\"}'::jsonb])",
                                         (gpt,), "22023", "chat message"),
        "OpenAI and HF length both given": ("SELECT pgml.transform(%s, inputs => ARRAY[%s::jsonb], args => %s)",
                                            (gpt, msg, Jsonb({"max_tokens": 2, "max_new_tokens": 3})), "22023",
                                            "max_tokens"),
        "greedy with n > 1": ("SELECT pgml.transform(%s, inputs => ARRAY[%s::jsonb], args => %s)",
                              (gpt, msg, Jsonb({"n": 2, "do_sample": False, "max_tokens": 2})), "22023",
                              "num_return_sequences"),
    }


CASES = list(cases({name: f"/{name}" for name in ("bert-sentiment", "bert-qa", "gpt2-chat", "bert-mlm",
                                                  "bert-nli")}))


@pytest.mark.parametrize("case", CASES)
def test_bad_input(conn, models, case):
    pid = one(conn, "SELECT pg_backend_pid()")
    query, params, sqlstate, fragment = cases(models)[case]
    err = sql_error(conn, query, params)
    message = err.diag.message_primary
    assert err.sqlstate == sqlstate, message
    assert fragment in message, message
    assert "\n" not in message and message.startswith("pgml: ")
    # the same backend carries on
    assert one(conn, "SELECT pg_backend_pid()") == pid
