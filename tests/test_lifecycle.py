"""Model lifecycle in a backend: loaded_models, unload / clear_cache freeing memory, eviction, preload."""

import pytest
from pgtest import one, rss_kb, sql_error, task

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def loaded(conn):
    return conn.execute("SELECT function, task, model, device, dtype, bytes, hits FROM pgml.loaded_models()").fetchall()


@pytest.fixture
def fresh(conn):
    """The shared backend with an empty model cache (cheaper than a new backend's imports)."""
    conn.execute("SELECT * FROM pgml.clear_cache()")
    yield conn


def test_loaded_models_and_unload_free_memory(fresh, models):
    sentiment = task("text-classification", models["bert-sentiment"])
    one(fresh, "SELECT pgml.transform(%s, inputs => ARRAY['I love it'])", (sentiment,))
    one(fresh, "SELECT pgml.transform(%s, inputs => ARRAY['I hate it'])", (sentiment,))
    one(fresh, "SELECT count(*) FROM pgml.embed(%s, ARRAY['hello'])", (MINILM,))
    rows = loaded(fresh)
    assert ("transform", "text-classification", models["bert-sentiment"], "cpu", "float32") == rows[0][:5]
    assert rows[0][6] == 1  # the second call was a hit
    assert rows[1][:3] == ("embed", "embedding", MINILM) and rows[1][5] > 80_000_000
    before = rss_kb(fresh)
    freed = fresh.execute("SELECT model, bytes FROM pgml.unload(%s)", (MINILM,)).fetchall()
    assert freed == [(MINILM, rows[1][5])]
    assert before - rss_kb(fresh) > 30 << 10  # most of MiniLM's ~87 MB of weights went back
    assert [r[2] for r in loaded(fresh)] == [models["bert-sentiment"]]
    assert fresh.execute("SELECT * FROM pgml.unload('no/such-model')").fetchall() == []
    assert one(fresh, "SELECT count(*) FROM pgml.clear_cache()") == 1
    assert loaded(fresh) == []
    assert one(fresh, "SELECT pgml.clear_gpu_cache()") is False  # no GPU here


def test_eviction_least_recently_used_first(fresh, models, conn):
    conn.execute("UPDATE pgml.settings SET value = '2' WHERE name = 'max_models'")
    try:
        for name in ("bert-sentiment", "bert-nli", "bert-sentiment"):
            one(fresh, "SELECT pgml.transform(%s, inputs => ARRAY['x'])", (task("text-classification", models[name]),))
        one(fresh, "SELECT pgml.transform(%s, inputs => ARRAY['Paris is the [MASK].'])",
            (task("fill-mask", models["bert-mlm"]),))
        assert sorted(r[2] for r in loaded(fresh)) == sorted([models["bert-sentiment"], models["bert-mlm"]])
        conn.execute("UPDATE pgml.settings SET value = '8', description = description WHERE name = 'max_models'")
        conn.execute("UPDATE pgml.settings SET value = '1000000' WHERE name = 'max_model_bytes'")
        one(fresh, "SELECT pgml.transform(%s, inputs => ARRAY['x'])", (task("text-classification", models["bert-nli"]),))
        assert [r[2] for r in loaded(fresh)] == [models["bert-nli"]]  # each tiny model is ~0.6 MB
    finally:
        conn.execute("UPDATE pgml.settings SET value = '8' WHERE name = 'max_models'")
        conn.execute("UPDATE pgml.settings SET value = 'null' WHERE name = 'max_model_bytes'")


def test_preload(fresh, models):
    sentiment = task("text-classification", models["bert-sentiment"])
    row = fresh.execute("SELECT function, task, model, device, hits, load_seconds > 0 FROM pgml.preload(%s)",
                        (sentiment,)).fetchone()
    assert row == ("transform", "text-classification", models["bert-sentiment"], "cpu", 0, True)
    assert fresh.execute("SELECT function, model FROM pgml.preload_embed(%s)", (MINILM,)).fetchone() == (
        "embed", MINILM)
    one(fresh, "SELECT pgml.transform(%s, inputs => ARRAY['I love it'])", (sentiment,))
    assert [r[6] for r in loaded(fresh)] == [1, 0]
    # a task name as TEXT preloads too; a bad one is the same error as in transform
    err = sql_error(fresh, "SELECT * FROM pgml.preload('no-such-task')")
    assert err.sqlstate == "22023"


def test_device_is_checked_and_shown(fresh, models):
    one(fresh, "SELECT pgml.transform(%s, inputs => ARRAY['x'])",
        (task("text-classification", models["bert-sentiment"], device="cpu"),))
    assert loaded(fresh)[0][3] == "cpu"
    err = sql_error(fresh, "SELECT * FROM pgml.preload(%s)",
                    (task("text-classification", models["bert-sentiment"], device="cuda"),))
    assert err.sqlstate == "0A000"


def test_cache_settings_are_validated(conn):
    err = sql_error(conn, "UPDATE pgml.settings SET value = '0' WHERE name = 'max_models'")
    assert err.sqlstate == "22023" and "max_models" in err.diag.message_primary
