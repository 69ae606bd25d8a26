"""The four tasks transformers 5 removed return what the transformers 4.x pipelines returned.

tests/tf4_reference.py runs the 4.x pipelines (transformers 4.57 from the overlay in
.venv/tf4, on the venv's torch) over tests/reference_cases.py; the same cases then go
through pgml.transform in the database on the same tiny models.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pgtest import same, sql_error
from psycopg.types.json import Jsonb
from reference_cases import CASES

REPO = Path(__file__).resolve().parent.parent
OVERLAY = Path(os.environ.get("PGML_TF4_OVERLAY", REPO / ".venv" / "tf4"))


@pytest.fixture(scope="session")
def reference(models, tmp_path_factory):
    assert (OVERLAY / "transformers").is_dir(), f"no transformers 4.x overlay in {OVERLAY}: run scripts/setup.sh --tests"
    out = tmp_path_factory.mktemp("tf4") / "reference.json"
    root = Path(next(iter(models.values()))).parent
    env = {**os.environ, "PYTHONPATH": str(OVERLAY)}
    done = subprocess.run([sys.executable, str(REPO / "tests" / "tf4_reference.py"), str(root), str(out)],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_same_as_transformers_4(conn, models, reference, case):
    task = Jsonb({"task": case["task"], "model": models[case["model"]]})
    inputs = [json.dumps(i) if isinstance(i, dict) else i for i in case["inputs"]]
    query = "SELECT pgml.transform(task => %s, inputs => %s::text[], args => %s)"
    expected = reference[case["id"]]
    if "error" in expected:
        err = sql_error(conn, query, (task, inputs, Jsonb(case["args"])))
        assert err.sqlstate == "22023" and expected["message"] in err.diag.message_primary
        return
    same(conn.execute(query, (task, inputs, Jsonb(case["args"]))).fetchone()[0], expected)


def test_explicit_max_length_is_honoured(conn, models):
    """4.57's pipelines let their max_new_tokens=256 default override max_length; pgml_plpy does not."""
    query = "SELECT pgml.transform(task => %s, inputs => %s::text[], args => %s)"
    task = Jsonb({"task": "summarization", "model": models["t5-tiny"]})
    text = ["The moon shines in the sky at night. The library has many old books. The cat sat on the mat."]
    full = conn.execute(query, (task, text, Jsonb({"num_beams": 1}))).fetchone()[0][0]["summary_text"]
    short = conn.execute(query, (task, text, Jsonb({"num_beams": 1, "max_length": 4}))).fetchone()[0]
    assert len(short[0]["summary_text"]) < len(full)
