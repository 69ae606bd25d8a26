"""pgml.load_dataset: type mapping and argument checks without PostgreSQL, then files and a
Hugging Face datasets cache through SQL.

Data files live under the tiny models' root (the test server, in a container or not, can read
it). The hub dataset's cache is built on the server's side by a DO block, because the datasets
library writes lock files in its cache and the models root may be mounted read-only there.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pgtest import one, sql_error
from psycopg.types.json import Jsonb

from pgml_plpy import datasets_loader as dl
from pgml_plpy import errors, jsontext
from pgml_plpy.datasets_loader import sqltypes, writing

# ------------------------------------------------------------------ unit tests, no PostgreSQL


def test_feature_types_map_to_postgresql_types():
    import datasets as d

    cases = [
        (d.Value("string"), "text"), (d.Value("large_string"), "text"),
        (d.Value("int8"), "smallint"), (d.Value("int16"), "smallint"), (d.Value("uint8"), "smallint"),
        (d.Value("int32"), "integer"), (d.Value("uint16"), "integer"),
        (d.Value("int64"), "bigint"), (d.Value("uint32"), "bigint"), (d.Value("uint64"), "numeric"),
        (d.Value("float16"), "real"), (d.Value("float32"), "real"), (d.Value("float64"), "double precision"),
        (d.Value("bool"), "boolean"), (d.Value("binary"), "bytea"), (d.Value("date32"), "date"),
        (d.Value("timestamp[s]"), "timestamp"), (d.Value("timestamp[us, tz=UTC]"), "timestamptz"),
        (d.Value("time64[us]"), "time"), (d.Value("duration[s]"), "interval"),
        (d.Value("decimal128(10, 2)"), "numeric"), (d.Value("null"), "text"),
        (d.ClassLabel(names=["neg", "pos"]), "integer"),
        (d.List(d.Value("int32")), "jsonb"), (d.Sequence(d.Value("string")), "jsonb"),
        (d.LargeList(d.Value("string")), "jsonb"), (d.Translation(languages=["en", "fr"]), "jsonb"),
        (d.Array2D((2, 2), "float32"), "jsonb"), (d.Image(), "jsonb"),
    ]
    for feature, expected in cases:
        assert sqltypes.column_type(feature) == expected, feature
    assert sqltypes.column_type({"a": d.Value("string")}) == "jsonb"


def test_json_values_are_valid_jsonb_text():
    import datetime

    assert jsontext.dumps(None) is None
    assert json.loads(jsontext.dumps({"a": [1, 2.5, "é"], "b": None})) == {"a": [1, 2.5, "é"], "b": None}
    assert json.loads(jsontext.dumps([1.0, float("nan"), float("inf")])) == [1.0, None, None]
    assert json.loads(jsontext.dumps({"bytes": b"\x00\x01", "path": None})) == {"bytes": "AAE=", "path": None}
    assert json.loads(jsontext.dumps([datetime.date(2024, 1, 2)])) == ["2024-01-02"]
    assert sqltypes.converter("interval")([datetime.timedelta(days=1, seconds=5), None]) == [
        "1 days 5 seconds 0 microseconds", None]
    assert sqltypes.converter("bigint") is None


def test_sources_are_classified_without_reading_anything():
    hub = dl.plan("stanfordnlp/imdb", "plain_text", 10, '{"split": "test"}')
    assert (hub.kind, hub.path, hub.table, hub.subset, hub.limit, hub.split) == (
        "hub", "hf://datasets/stanfordnlp/imdb", "stanfordnlp/imdb", "plain_text", 10, "test")
    assert not hub.reads_server_files
    # a hub name is never a folder in the server's working directory (the data directory)
    assert dl.plan("base").path == "hf://datasets/base"
    local = dl.plan("/srv/data/Reviews.csv.gz")
    assert (local.kind, local.table, local.reads_server_files) == ("path", "Reviews", True)
    assert dl.plan("/srv/data/x.parquet", kwargs={"table_name": "mine"}).table == "mine"
    builder = dl.plan("csv", kwargs={"data_files": {"train": "/srv/a.csv"}})
    assert (builder.kind, builder.table, builder.reads_server_files) == ("builder", "csv", True)
    # data_files for a hub dataset may name server files too
    assert dl.plan("acme/x", kwargs={"data_files": "/etc/passwd"}).reads_server_files
    assert dl.plan("acme/x", kwargs={"cache_dir": "/tmp/c"}).writes_server_files


@pytest.mark.parametrize("source, subset, limit, kwargs, error, fragment", [
    (None, None, None, None, errors.NullValue, "source must not be NULL"),
    ("  ", None, None, None, errors.InvalidParameter, "source must not be empty"),
    ("data/train.csv", None, None, None, errors.InvalidParameter, "need an absolute path"),
    ("reviews.csv", None, None, None, errors.InvalidParameter, "need an absolute path"),
    ("~/x.csv", None, None, None, errors.InvalidParameter, "need an absolute path"),
    ("a/b/c", None, None, None, errors.InvalidParameter, "neither an absolute file path nor a Hugging Face"),
    ("https://example.com/x", None, None, None, errors.InvalidParameter, "neither an absolute file path"),
    ("csv", None, None, None, errors.InvalidParameter, "the csv builder needs data_files or data_dir"),
    ("acme/x", None, -1, None, errors.InvalidParameter, "limit must not be negative"),
    ("acme/x", None, None, "[1]", errors.InvalidParameter, "kwargs must be a JSON object"),
    ("acme/x", None, None, "{bad", errors.InvalidJson, "kwargs is not valid JSON"),
    ("acme/x", None, None, {"split": 3}, errors.InvalidParameter, "split must be a non-empty string"),
    ("acme/x", None, None, {"keep_in_memory": "yes"}, errors.InvalidParameter, "keep_in_memory must be true"),
    ("acme/x", None, None, {"data_files": 3}, errors.InvalidParameter, "data_files must be a path"),
    ("acme/x", None, None, {"download_mode": "sometimes"}, errors.InvalidParameter, "download_mode must be one of"),
    ("acme/x", None, None, {"features": {"a": {"_type": "Nope"}}}, errors.InvalidParameter, "features"),
    ("acme/x", None, None, {"name": "cfg"}, errors.InvalidParameter, "kwargs must not contain name"),
    ("acme/x", None, None, {"streaming": True}, errors.NotSupported, "streaming"),
    ("acme/x", None, None, {"num_proc": 4}, errors.NotSupported, "fork"),
    ("acme/x", None, None, {"trust_remote_code": True}, errors.NotSupported, "loading scripts"),
    ("acme/x", None, None, {"table_name": ""}, errors.InvalidParameter, "table_name must be a non-empty string"),
    ("acme/x", None, None, {"table_name": "t" * 64}, errors.InvalidParameter, "longer than PostgreSQL's 63 bytes"),
    ("/srv/x.csv", None, None, {"data_files": "/srv/y.csv"}, errors.InvalidParameter, "cannot be combined"),
])
def test_bad_arguments(source, subset, limit, kwargs, error, fragment):
    with pytest.raises(error) as info:
        dl.plan(source, subset, limit, kwargs)
    assert fragment in info.value.message


def test_offline_means_no_socket_and_no_wait(tmp_path):
    """With hub_downloads off, an uncached hub dataset fails at once and nothing opens a connection."""
    csv_file = tmp_path / "people.csv"
    csv_file.write_text("name,age\nann,3\nbob,\n")
    code = textwrap.dedent("""
        import sys, time
        def hook(event, args):
            if event in ("socket.connect", "socket.getaddrinfo"):
                raise RuntimeError("network used: %s %r" % (event, args))
        sys.addaudithook(hook)
        from pgml_plpy import datasets_loader as dl
        from pgml_plpy.errors import UndefinedFile
        from pgml_plpy.settings import Settings
        settings = Settings(huggingface_cache=sys.argv[1])
        import datasets  # imported first: the time below is the lookup's alone
        start = time.time()
        try:
            dl.read(dl.plan("acme/not-cached"), settings)
        except UndefinedFile as exc:
            print("uncached:", exc.sqlstate, round(time.time() - start, 1), exc.message)
        loaded = dl.read(dl.plan(sys.argv[2]), settings, cache_dir=sys.argv[1])
        print("local:", loaded["train"].num_rows, dict(loaded["train"].features))
    """)
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "cache"), str(csv_file)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    uncached = next(line for line in lines if line.startswith("uncached:"))
    assert "58P01" in uncached and "not in the database server's datasets cache" in uncached
    assert float(uncached.split()[2]) < 10
    assert any(line.startswith("local: 2 ") for line in lines), done.stdout


def test_limit_caps_rows_across_splits_in_batches():
    import datasets

    a = datasets.Dataset.from_dict({"x": list(range(5))})
    b = datasets.Dataset.from_dict({"x": list(range(5, 9))})
    columns = sqltypes.columns_of([a, b])
    assert columns[0][:2] == ("x", "bigint")
    got = [v[0] for v in writing.batches([a, b], None, columns, max_rows=3)]
    assert got == [[0, 1, 2], [3, 4], [5, 6, 7], [8]]
    got = [v[0] for v in writing.batches([a, b], 7, columns, max_rows=3)]
    assert sum(got, []) == list(range(7))
    assert list(writing.batches([a, b], 0, columns)) == []
    with pytest.raises(errors.InvalidParameter, match="different columns"):
        sqltypes.columns_of([a, datasets.Dataset.from_dict({"y": [1]})])
    with pytest.raises(errors.InvalidParameter, match="system column"):
        sqltypes.columns_of([datasets.Dataset.from_dict({"ctid": [1]})])
    with pytest.raises(errors.InvalidParameter, match="63 bytes"):
        sqltypes.columns_of([datasets.Dataset.from_dict({"c" * 64: [1]})])


# ------------------------------------------------------------------ through SQL


@pytest.fixture(scope="module")
def data_dir(models):
    """A folder of data files the database server can read (under the tiny models' root)."""
    root = tempfile.mkdtemp(prefix="datasets_", dir=os.path.dirname(models["bert-sentiment"]))
    os.chmod(root, 0o755)
    with open(os.path.join(root, "reviews.csv"), "w") as f:
        f.write('id,text,score,ok,weight\n1,great,5,true,1.5\n2,,3,false,\n3,"bad, really",1,,2.25\n')
    with open(os.path.join(root, "events.jsonl"), "w") as f:
        f.write(json.dumps({"n": 1, "tags": ["a", "b"], "meta": {"k": "v"}, "name": "x"}) + "\n")
        f.write(json.dumps({"n": None, "tags": None, "meta": None, "name": None}) + "\n")
    import datetime

    pq.write_table(pa.table({
        "small": pa.array([1, None], pa.int16()),
        "f32": pa.array([0.5, float("nan")], pa.float32()),
        "f64": pa.array([1e300, None], pa.float64()),
        "flag": pa.array([True, None]),
        "at": pa.array([datetime.datetime(2024, 1, 2, 3, 4, 5), None]),
        "day": pa.array([datetime.date(2024, 1, 2), None]),
        "raw": pa.array([b"\x00\x01", None]),
        "vec": pa.array([[1.5, 2.0], None]),
        "weird name \"quoted\"": pa.array(["q", "r"]),
    }), os.path.join(root, "typed.parquet"))
    n = 100_000
    pq.write_table(pa.table({"id": pa.array(range(n), pa.int64()),
                             "text": [f"review number {i} with a few words" for i in range(n)],
                             "score": pa.array([i % 5 for i in range(n)], pa.int32()),
                             "weight": [i / 7 for i in range(n)]}), os.path.join(root, "big.parquet"))
    with open(os.path.join(root, "notes.xyz"), "w") as f:
        f.write("?")
    for name in os.listdir(root):
        os.chmod(os.path.join(root, name), 0o644)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def load(conn, source, subset=None, limit=None, kwargs=None):
    return conn.execute('SELECT table_name, "rows" FROM pgml.load_dataset(%s, %s, %s, %s)',
                        (source, subset, limit, Jsonb(kwargs or {}))).fetchone()


def columns(conn, table):
    return conn.execute("SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute "
                        "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                        (f'pgml."{table}"',)).fetchall()


def test_csv_file_types_and_nulls(conn, data_dir):
    assert load(conn, os.path.join(data_dir, "reviews.csv")) == ("pgml.reviews", 3)
    assert columns(conn, "reviews") == [("id", "bigint"), ("text", "text"), ("score", "bigint"),
                                        ("ok", "boolean"), ("weight", "double precision")]
    rows = conn.execute("SELECT * FROM pgml.reviews ORDER BY id").fetchall()
    assert rows == [(1, "great", 5, True, 1.5), (2, None, 3, False, None), (3, "bad, really", 1, None, 2.25)]
    comment = one(conn, "SELECT obj_description('pgml.reviews'::regclass)")
    assert comment.startswith("pgml.load_dataset: ") and "reviews.csv" in comment


def test_jsonl_file_nested_values_become_jsonb(conn, data_dir):
    assert load(conn, os.path.join(data_dir, "events.jsonl"),
                kwargs={"table_name": "events_t"}) == ("pgml.events_t", 2)
    assert columns(conn, "events_t") == [("n", "bigint"), ("tags", "jsonb"), ("meta", "jsonb"), ("name", "text")]
    rows = conn.execute("SELECT n, tags, meta, name FROM pgml.events_t ORDER BY n NULLS LAST").fetchall()
    assert rows == [(1, ["a", "b"], {"k": "v"}, "x"), (None, None, None, None)]


def test_parquet_file_every_scalar_type(conn, data_dir):
    assert load(conn, os.path.join(data_dir, "typed.parquet")) == ("pgml.typed", 2)
    assert columns(conn, "typed") == [
        ("small", "smallint"), ("f32", "real"), ("f64", "double precision"), ("flag", "boolean"),
        ("at", "timestamp without time zone"), ("day", "date"), ("raw", "bytea"), ("vec", "jsonb"),
        ('weird name "quoted"', "text")]
    first, second = conn.execute('SELECT *, "weird name ""quoted""" FROM pgml.typed ORDER BY small NULLS LAST'
                                 ).fetchall()
    assert first[:4] == (1, 0.5, 1e300, True) and first[7] == [1.5, 2.0] and bytes(first[6]) == b"\x00\x01"
    assert str(first[4]) == "2024-01-02 03:04:05" and str(first[5]) == "2024-01-02"
    assert second[0] is None and second[1] != second[1]  # NaN stays NaN; NULL stays NULL
    assert second[2:8] == (None,) * 6 and second[8] == "r"


def test_limit_and_rerun_replaces_the_table(conn, data_dir):
    path = os.path.join(data_dir, "reviews.csv")
    assert load(conn, path, limit=2, kwargs={"table_name": "rerun"}) == ("pgml.rerun", 2)
    conn.execute("CREATE INDEX ON pgml.rerun (id)")  # a table made by load_dataset is replaced, indexes and all
    assert load(conn, path, kwargs={"table_name": "rerun"}) == ("pgml.rerun", 3)
    assert one(conn, "SELECT count(*) FROM pgml.rerun") == 3  # replaced, not appended
    assert load(conn, path, limit=0, kwargs={"table_name": "rerun"}) == ("pgml.rerun", 0)
    assert columns(conn, "rerun")[0] == ("id", "bigint")


def test_a_table_not_made_by_load_dataset_is_left_alone(conn, data_dir):
    conn.execute("DROP TABLE IF EXISTS pgml.precious")
    conn.execute("CREATE TABLE pgml.precious (x int)")
    conn.execute("INSERT INTO pgml.precious VALUES (42)")
    try:
        err = sql_error(conn, "SELECT * FROM pgml.load_dataset(%s, kwargs => %s)",
                        (os.path.join(data_dir, "reviews.csv"), Jsonb({"table_name": "precious"})))
        assert err.sqlstate == "42P07" and "not made by pgml.load_dataset" in err.diag.message_primary
        assert one(conn, "SELECT x FROM pgml.precious") == 42
        err = sql_error(conn, "SELECT * FROM pgml.load_dataset(%s, kwargs => %s)",
                        (os.path.join(data_dir, "reviews.csv"), Jsonb({"table_name": "settings"})))
        assert err.sqlstate == "42P07"
    finally:
        conn.execute("DROP TABLE pgml.precious")


def test_a_table_with_a_view_on_it_is_not_dropped(conn, data_dir):
    path = os.path.join(data_dir, "reviews.csv")
    assert load(conn, path, kwargs={"table_name": "viewed"}) == ("pgml.viewed", 3)
    conn.execute("CREATE VIEW public.on_viewed AS SELECT id FROM pgml.viewed")
    try:
        err = sql_error(conn, "SELECT * FROM pgml.load_dataset(%s, kwargs => %s)",
                        (path, Jsonb({"table_name": "viewed"})))
        assert err.sqlstate == "2BP01" and "view public.on_viewed depends on" in err.diag.message_primary
        assert one(conn, "SELECT count(*) FROM public.on_viewed") == 3
    finally:
        conn.execute("DROP VIEW public.on_viewed")


def test_a_failed_load_keeps_the_previous_table(conn, data_dir):
    path = os.path.join(data_dir, "reviews.csv")
    assert load(conn, path, kwargs={"table_name": "kept"}) == ("pgml.kept", 3)
    err = sql_error(conn, "SELECT * FROM pgml.load_dataset(%s, kwargs => %s)",
                    (path, Jsonb({"table_name": "kept", "no_such_option": 1})))
    assert err.sqlstate == "22023" and "no_such_option" in err.diag.message_primary
    assert one(conn, "SELECT count(*) FROM pgml.kept") == 3


def test_builder_name_with_data_files_and_splits_concatenated(conn, data_dir):
    path = os.path.join(data_dir, "reviews.csv")
    assert load(conn, "csv", kwargs={"data_files": {"train": path, "test": path}}) == ("pgml.csv", 6)
    # a limit reads the train split, as PostgresML's split=f"train[:{limit}]" did
    assert load(conn, "csv", limit=5, kwargs={"data_files": {"train": path, "test": path}}) == ("pgml.csv", 3)
    assert load(conn, "csv", kwargs={"data_files": {"train": path, "test": path}, "split": "test",
                                     "table_name": "csv_test"}) == ("pgml.csv_test", 3)


def test_a_hundred_thousand_rows(conn, data_dir):
    # in batches (test_limit_caps_rows_across_splits_in_batches); how fast is a benchmark's business
    assert load(conn, os.path.join(data_dir, "big.parquet")) == ("pgml.big", 100_000)
    assert one(conn, "SELECT sum(score) FROM pgml.big") == sum(i % 5 for i in range(100_000))


@pytest.mark.parametrize("source, kwargs, sqlstate, fragment", [
    ("/no/such/file.csv", {}, "58P01", "does not exist on the database server"),
    ("notes.xyz", {}, "22023", "cannot tell the format"),
    ("reviews.csv", {"no_such_option": 1}, "22023", "no_such_option"),
    ("reviews.csv", {"split": "validation"}, "22023", "Unknown split"),
    ("reviews.csv", {"streaming": True}, "0A000", "streaming"),
    ("reviews.csv", {"table_name": 5}, "22023", "table_name"),
])
def test_sql_errors(conn, data_dir, source, kwargs, sqlstate, fragment):
    if not source.startswith("/"):
        source = os.path.join(data_dir, source)
    err = sql_error(conn, "SELECT * FROM pgml.load_dataset(%s, kwargs => %s)", (source, Jsonb(kwargs)))
    assert err.sqlstate == sqlstate, err.diag.message_primary
    assert err.diag.message_primary.startswith("pgml: ") and fragment in err.diag.message_primary
    assert "Traceback" not in err.diag.message_primary


def test_null_source_and_function_attributes(conn):
    err = sql_error(conn, "SELECT * FROM pgml.load_dataset(NULL)")
    assert err.sqlstate == "22004"
    attrs = conn.execute("SELECT provolatile, proparallel, proisstrict FROM pg_proc "
                         "WHERE oid = 'pgml.load_dataset(text, text, bigint, jsonb)'::regprocedure").fetchone()
    assert attrs == ("v", "u", False)


def test_uncached_hub_dataset_is_a_quick_clear_error(conn, data_dir):
    load(conn, os.path.join(data_dir, "reviews.csv"))  # datasets imported: the time below is the lookup's alone
    start = time.time()
    err = sql_error(conn, "SELECT * FROM pgml.load_dataset('acme/not-in-any-cache')")
    assert time.time() - start < 15
    assert err.sqlstate == "58P01"
    assert "not in the database server's datasets cache" in err.diag.message_primary
    assert "hub_downloads" in err.diag.message_hint
    # a hub name is never read from the server's working directory (the data directory has base/)
    err = sql_error(conn, "SELECT * FROM pgml.load_dataset('base')")
    assert err.sqlstate == "58P01" and "datasets cache" in err.diag.message_primary


MAKE_CACHE = """
import glob, json, os, shutil, tempfile
import pyarrow as pa, pyarrow.parquet as pq
import datasets
from datasets.packaged_modules.parquet.parquet import Parquet
datasets.disable_progress_bars()
root = tempfile.mkdtemp(prefix='pgml_test_datasets_cache_')
src = os.path.join(root, '_src')
os.makedirs(src)
pq.write_table(pa.table({'text': ['good', 'bad', None], 'label': [1, 0, 1]}), os.path.join(src, 'train.parquet'))
pq.write_table(pa.table({'text': ['meh'], 'label': [0]}), os.path.join(src, 'test.parquet'))
features = datasets.Features({'text': datasets.Value('string'), 'label': datasets.ClassLabel(names=['neg', 'pos'])})
files = {'train': [os.path.join(src, 'train.parquet')], 'test': [os.path.join(src, 'test.parquet')]}
builder = Parquet(cache_dir=root, dataset_name='tiny-reviews', config_name='default', hash='0123abcd',
                  features=features, data_files=files)
builder.download_and_prepare()
# where datasets keeps a hub dataset "acme/tiny-reviews" it has loaded once
built = glob.glob(os.path.join(root, 'tiny-reviews', 'default-*', '0.0.0', '0123abcd'))[0]
target = os.path.join(root, 'acme___tiny-reviews', 'default', '0.0.0', '0123abcd')
os.makedirs(os.path.dirname(target))
shutil.move(built, target)
shutil.rmtree(os.path.join(root, 'tiny-reviews'))
shutil.rmtree(src)
for lock in glob.glob(os.path.join(root, '*.lock')):
    os.remove(lock)
plpy.execute("SELECT set_config('pgml_test.datasets_cache', %s, false)" % plpy.quote_literal(root))
"""


@pytest.fixture
def hub_cache(conn):
    """A datasets cache on the server holding acme/tiny-reviews, named by the huggingface_cache setting."""
    conn.execute("SELECT pgml.version()")
    conn.execute(f"DO $$\n{MAKE_CACHE}\n$$ LANGUAGE plpython3u")
    root = one(conn, "SELECT current_setting('pgml_test.datasets_cache')")
    conn.execute("UPDATE pgml.settings SET value = to_jsonb(%s::text) WHERE name = 'huggingface_cache'", (root,))
    try:
        yield root
    finally:
        conn.execute("UPDATE pgml.settings SET value = 'null' WHERE name = 'huggingface_cache'")
        conn.execute(f"DO $$\nimport shutil\nshutil.rmtree({root!r}, ignore_errors=True)\n$$ LANGUAGE plpython3u")


def test_hub_dataset_from_the_servers_cache(conn, hub_cache):
    assert load(conn, "acme/tiny-reviews") == ('pgml."acme/tiny-reviews"', 4)
    assert columns(conn, "acme/tiny-reviews") == [("text", "text"), ("label", "integer")]
    rows = conn.execute('SELECT text, label FROM pgml."acme/tiny-reviews"').fetchall()
    assert sorted(rows, key=str) == sorted([("good", 1), ("bad", 0), (None, 1), ("meh", 0)], key=str)
    names = one(conn, """SELECT col_description('pgml."acme/tiny-reviews"'::regclass, 2)""")
    assert json.loads(names) == {"class_label": ["neg", "pos"]}
    # limit: the first rows of train; subset and split as datasets takes them
    assert load(conn, "acme/tiny-reviews", limit=2) == ('pgml."acme/tiny-reviews"', 2)
    assert load(conn, "acme/tiny-reviews", "default", None, {"split": "test", "table_name": "tiny_test"}) \
        == ("pgml.tiny_test", 1)
    err = sql_error(conn, "SELECT * FROM pgml.load_dataset('acme/tiny-reviews', 'no_such_subset')")
    assert err.sqlstate == "58P01" and "subset no_such_subset" in err.diag.message_primary


@pytest.fixture
def loader_role(conn):
    conn.execute("DROP ROLE IF EXISTS pgml_test_loader")
    conn.execute("CREATE ROLE pgml_test_loader LOGIN PASSWORD 'loader' IN ROLE pgml_admin")
    yield "pgml_test_loader"
    conn.execute("DROP OWNED BY pgml_test_loader")
    conn.execute("DROP ROLE pgml_test_loader")


def test_only_trusted_roles_read_server_files(dsn, conn, data_dir, loader_role):
    path = os.path.join(data_dir, "reviews.csv")
    with psycopg.connect(dsn, user=loader_role, password="loader", autocommit=True) as c:
        for source, kwargs in ((path, {}), ("/no/such/file.csv", {}), ("csv", {"data_files": path}),
                               ("acme/x", {"data_files": path}), ("acme/x", {"cache_dir": "/tmp/elsewhere"})):
            err = sql_error(c, "SELECT * FROM pgml.load_dataset(%s, kwargs => %s)", (source, Jsonb(kwargs)))
            assert err.sqlstate == "42501", (source, err.diag.message_primary)
            assert "pg_read_server_files" in err.diag.message_primary or \
                "pg_write_server_files" in err.diag.message_primary
    # load_dataset makes tables in schema pgml for pgml_admin (which cannot create objects there itself);
    # reading the server's files takes pg_read_server_files
    conn.execute("GRANT pg_read_server_files TO pgml_test_loader")
    try:
        with psycopg.connect(dsn, user=loader_role, password="loader", autocommit=True) as c:
            assert sql_error(c, "CREATE TABLE pgml.loader_own (a int)").sqlstate == "42501"
            assert load(c, path, kwargs={"table_name": "loader_reviews"}) == ("pgml.loader_reviews", 3)
            # the table is the loader's: it reads, replaces and drops it; pgml_user reads it only if granted
            assert one(c, "SELECT tableowner FROM pg_tables WHERE tablename = 'loader_reviews'") == loader_role
            assert load(c, path, kwargs={"table_name": "loader_reviews"}) == ("pgml.loader_reviews", 3)
            assert not one(c, "SELECT has_table_privilege('pgml_user', 'pgml.loader_reviews', 'SELECT')")
            c.execute("DROP TABLE pgml.loader_reviews")
    finally:
        conn.execute("REVOKE pg_read_server_files FROM pgml_test_loader")
