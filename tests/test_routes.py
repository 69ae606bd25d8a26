"""Routes (the `runtimes` setting): parsing, matching, and calls through the runtime seam."""

import pytest
from pgtest import one, sql_error, task
from psycopg.types.json import Jsonb

from pgml_plpy import errors, settings
from pgml_plpy.runtimes import routes, runtime_for


def parse(value):
    return settings.from_rows([("runtimes", value)]).runtimes


def test_first_match_wins_and_globs_cross_slashes():
    found = parse([{"model": "sentence-transformers/*", "task": "embedding", "runtime": "backend"},
                   {"model": "*", "runtime": "backend"}])
    assert routes.match(found, "sentence-transformers/all-MiniLM-L6-v2", "embedding").index == 0
    assert routes.match(found, "sentence-transformers/all-MiniLM-L6-v2", "rank").index == 1
    assert routes.match(found, "/models/a/b", "text-generation").index == 1
    assert routes.match(parse([{"model": "org/*", "runtime": "backend"}]), "other/x", "rank") is None
    assert routes.match(parse([{"model": "my_project", "runtime": "backend"}]), "my_project", "rank").index == 0
    assert parse(None) == () and parse([]) == ()


@pytest.mark.parametrize("value, message", [
    ({}, "JSON array"),
    (["x"], "route 0 must be a JSON object"),
    ([{"model": "x"}], 'runtime null, not one of'),
    ([{"model": "x", "runtime": "elsewhere"}], '"elsewhere", not one of'),
    ([{"runtime": "backend"}], "needs model"),
    ([{"model": "", "runtime": "backend"}], "model is"),
    ([{"model": "x", "runtime": "backend", "url": "http://h"}], "unknown key url"),
    ([{"model": "x", "runtime": "backend", "task": "embed"}], "not a canonical task name"),
    ([{"model": "x", "runtime": "backend", "task": "sentiment-analysis"}], "not a canonical task name"),
])
def test_bad_routes_are_named(value, message):
    with pytest.raises(errors.InvalidSetting, match=message):
        parse(value)


def test_unrouted_models_run_in_the_backend():
    assert runtime_for("any/model", "fill-mask", settings.Settings()).name == "backend"


@pytest.fixture
def routed(conn):
    def route(value):
        conn.execute("UPDATE pgml.settings SET value = %s WHERE name = 'runtimes'", (Jsonb(value),))

    yield route
    conn.execute("UPDATE pgml.settings SET value = '[]' WHERE name = 'runtimes'")


def test_the_setting_is_checked_when_written(conn, routed):
    err = sql_error(conn, "UPDATE pgml.settings SET value = '[{\"model\": \"x\", \"runtime\": \"backend\", "
                          "\"port\": 1}]' WHERE name = 'runtimes'")
    assert err.sqlstate == "22023" and "unknown key port" in err.diag.message_primary
    assert one(conn, "SELECT value FROM pgml.settings WHERE name = 'runtimes'") == []


def test_backend_routes_serve_every_kind_of_call(conn, routed, models):
    routed([{"model": "*", "runtime": "backend"}])
    out = one(conn, "SELECT pgml.transform(%s, inputs => ARRAY['I love it'])",
              (task("text-classification", models["bert-sentiment"]),))
    assert out[0]["label"] == "POSITIVE"
    assert len(one(conn, "SELECT pgml.embed('sentence-transformers/all-MiniLM-L6-v2', 'hello')")) == 384


def test_validate_checks_every_route(conn, routed):
    routed([{"model": "org/*", "task": "embedding", "runtime": "backend"}])
    report = {item: (ok, detail) for item, ok, detail in conn.execute("SELECT * FROM pgml.validate()")}
    assert report["route 0: org/* -> backend"] == (True, "runs in each backend")
