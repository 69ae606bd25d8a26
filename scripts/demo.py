"""The demo: every pgml.transform task from SQL, on tiny models built on the spot.

Run it through scripts/demo.sh, which sets everything up and starts a local cluster.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import tiny_models  # noqa: E402


def main(dsn: str) -> int:
    print("building the demo's tiny models ...", flush=True)
    models = tiny_models.build_all(Path(tempfile.gettempdir()) / "pgml_plpy_test_models")
    qa = json.dumps({"question": "Where does Omar live?", "context": "Omar lives in Paris."})
    chat = [json.dumps({"role": "user", "content": "What is the capital of France?"})]
    calls = [
        ("text-classification", "bert-sentiment", ["I love it", "I hate it"], {}),
        ("token-classification", "bert-ner", ["I am Omar and I live in New York City."], {}),
        ("question-answering", "bert-qa", [qa], {}),
        ("fill-mask", "bert-mlm", ["Paris is the [MASK] of France."], {"top_k": 2}),
        ("zero-shot-classification", "bert-nli", ["I love football"], {"candidate_labels": ["sports", "food"]}),
        ("translation_en_to_fr", "t5-tiny", ["the cat"], {"max_new_tokens": 8}),
        ("summarization", "t5-tiny", ["The cat sat on the mat and looked at the birds all day."],
         {"max_new_tokens": 8}),
        ("text-generation", "gpt2-chat", ["The cat"], {"do_sample": False, "max_new_tokens": 8}),
    ]
    with psycopg.connect(dsn, autocommit=True) as conn:
        print("pgml", conn.execute("SELECT pgml.version()").fetchone()[0])
        for name, model, inputs, args in calls:
            task = Jsonb({"task": name, "model": str(models[model])})
            out = conn.execute("SELECT pgml.transform(task => %s, inputs => %s::text[], args => %s)",
                               (task, inputs, Jsonb(args))).fetchone()[0]
            print(f"\n{name}: {inputs}\n  -> {json.dumps(out)}")
        task = Jsonb({"task": "conversational", "model": str(models["gpt2-chat"])})
        out = conn.execute("SELECT pgml.transform(task => %s, inputs => %s::jsonb[], args => %s)",
                           (task, chat, Jsonb({"max_tokens": 10, "temperature": 0}))).fetchone()[0]
        print(f"\nconversational: {chat}\n  -> {json.dumps(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
