"""The vectorizer's batch logic over a fake Database: no PostgreSQL, no model."""

import pytest
from fakedb import FakeDatabase

from pgml_plpy import vectorizer
from pgml_plpy.errors import ModelNotFound
from pgml_plpy.settings import Settings

CFG = {"source": "public.docs", "key_columns": ["id"], "key_types": ["integer"], "text_column": "body",
       "target": "public.docs_embeddings", "target_key_columns": ["id"], "model": "m",
       "chunking": '{"splitter": "character", "separator": " ", "chunk_size": 5, "chunk_overlap": 0}', "kwargs": "{}"}
SPLIT = vectorizer.splitter(vectorizer.chunking_of(CFG["chunking"]))


class Encoder:
    """Vectors as "{len}" literals; refuses texts containing a refused word; counts its calls."""

    def __init__(self, refuse=None, error=None):
        self.calls: list[list[str]] = []
        self.refuse, self.error = refuse, error

    def __call__(self, texts):
        self.calls.append(list(texts))
        if self.error is not None:
            raise self.error
        if self.refuse and any(self.refuse in t for t in texts):
            raise ValueError(f"the model refuses {self.refuse}")
        return ["{%d}" % len(t) for t in texts]


def database(bodies: dict, existing: dict | None = None) -> FakeDatabase:
    """A fake whose source rows are bodies (key -> text) and whose embeddings are existing (key -> chunks)."""
    db = FakeDatabase()
    existing = existing or {}

    def read(params):
        return [{"i": i, "body": bodies[k]} for i, k in enumerate(params[0], start=1) if k in bodies]

    def chunks(params):
        return [{"i": i, "chunk_index": n, "chunk": c} for i, k in enumerate(params[0], start=1)
                for n, c in enumerate(existing.get(k, []), start=1)]

    return db.on("SELECT u.i, s.", read).on("SELECT u.i, e.chunk_index", chunks)


def items(*keys):
    return [{"id": 100 + n, "key": [k]} for n, k in enumerate(keys)]


def test_one_encoder_call_per_batch_with_only_the_changed_chunks():
    db = database({"1": "aaaa bbbb", "2": "cccc dddd", "3": "eeee"}, existing={"2": ["cccc", "xxxx"], "3": ["eeee"]})
    encode = Encoder()
    batch, done, failed, errors = vectorizer.sync(db, vectorizer.Sql(db, CFG), items("1", "2", "3"), SPLIT, encode,
                                                  Settings())
    assert encode.calls == [["aaaa", "bbbb", "dddd"]]   # row 3 and row 2's first chunk are unchanged
    assert (batch.synced, batch.embedded, batch.unchanged, batch.removed, batch.failed) == (3, 3, 2, 0, 0)
    assert sorted(done) == [100, 101, 102] and failed == errors == []
    (write,) = db.ran("INSERT INTO public.docs_embeddings")
    assert write == [["1", "1", "2"], [1, 2, 2], ["aaaa", "bbbb", "dddd"], ["{4}", "{4}", "{4}"]]
    (trim,) = db.ran("DELETE FROM public.docs_embeddings")
    assert trim == [["1", "2", "3"], [2, 2, 1]]          # chunks past each row's new count go


def test_rows_gone_or_without_text_lose_their_chunks():
    db = database({"1": None}, existing={"1": ["old"], "2": ["old", "er"]})
    encode = Encoder()
    batch, done, _, _ = vectorizer.sync(db, vectorizer.Sql(db, CFG), items("1", "2"), SPLIT, encode, Settings())
    assert encode.calls == [] and (batch.removed, batch.synced) == (2, 0)
    assert db.ran("DELETE FROM public.docs_embeddings") == [[["1", "2"], [0, 0]]]
    assert db.ran("INSERT INTO") == [] and sorted(done) == [100, 101]


def test_a_row_the_model_refuses_fails_alone():
    db = database({"1": "good text", "2": "evil text", "3": "fine"})
    encode = Encoder(refuse="evil")
    batch, done, failed, errors = vectorizer.sync(db, vectorizer.Sql(db, CFG), items("1", "2", "3", "2"), SPLIT,
                                                  encode, Settings())
    assert encode.calls[0] == ["good", "text", "evil", "text", "fine"]      # the batch first, then row by row
    assert sorted(done) == [100, 102] and sorted(failed) == [101, 103]     # both items of row 2 failed
    assert errors == ["embedding: the model refuses evil"] * 2
    assert batch.failed == 1 and batch.synced == 2
    (write,) = db.ran("INSERT INTO")
    assert write[0] == ["1", "1", "3"]                    # row 2's chunks are left as they were


def test_text_over_max_input_chars_fails_before_the_model():
    db = database({"1": "x" * 50, "2": "ok"})
    encode = Encoder()
    _, done, failed, errors = vectorizer.sync(db, vectorizer.Sql(db, CFG), items("1", "2"), SPLIT, encode,
                                              Settings(max_input_chars=20))
    assert (done, failed) == ([101], [100]) and "50 characters, more than max_input_chars (20)" in errors[0]
    assert encode.calls == [["ok"]]


def test_a_model_that_cannot_load_fails_every_row():
    db = database({"1": "a", "2": "b"})
    encode = Encoder(error=ModelNotFound("model acme/x is not in the cache"))
    _, done, failed, errors = vectorizer.sync(db, vectorizer.Sql(db, CFG), items("1", "2"), SPLIT, encode,
                                              Settings())
    assert done == [] and sorted(failed) == [100, 101] and errors == ["model acme/x is not in the cache"] * 2


class Cancel(Exception):
    sqlstate = "57014"


def test_a_cancel_stops_the_batch():
    db = database({"1": "a"})
    with pytest.raises(Cancel):
        vectorizer.sync(db, vectorizer.Sql(db, CFG), items("1"), SPLIT, Encoder(error=Cancel()), Settings())


def test_composite_keys_are_matched_column_by_column():
    cfg = {**CFG, "key_columns": ["lang", "Weird \"name\""], "key_types": ["text", "bigint"],
           "target_key_columns": ["lang", "renamed since"]}
    db = FakeDatabase()
    sql = vectorizer.Sql(db, cfg)
    assert 's.lang = u.c0::text AND s."Weird ""name""" = u.c1::bigint' in sql.read
    assert 'e.lang = u.c0::text AND e."renamed since" = u.c1::bigint' in sql.existing
    assert sql.columns([("en", "1"), ("fr", "2")]) == [["en", "fr"], ["1", "2"]]
    assert 'ON CONFLICT (lang, "renamed since", chunk_index)' in sql.write


def running(claims: list) -> FakeDatabase:
    """A fake for run(): the vectorizer, what is due, and one claim answer per batch."""
    db = database({str(k): f"text {k}" for k in range(10)})
    db.on("pgml._vectorizer_get", [{"id": 7, "owner": "alice"}])
    db.on("pgml._vectorizer_due", [{"items": sum(len(c) for c in claims), "last_item": 999}])
    db.on("pgml._vectorizer_config", [CFG])
    answers = iter(claims + [[]])
    db.on("pgml._vectorizer_claim", lambda params: next(answers))
    return db


def test_a_run_commits_each_batch_as_the_owner_and_records_its_end():
    db = running([items("1", "2"), items("3")])
    encoders = []

    def encoder_for(model, kwargs, settings):
        encoders.append(Encoder())
        return encoders[-1]

    vectorizer.run(db, "docs", Settings, encoder_for)
    assert len(db.commits) == 5          # before the work, two batches, the empty claim, the end
    assert db.ran("set_config('role'") == [["alice"]] * 4   # the owner's rights in each transaction
    assert [e.calls for e in encoders] == [[["text", "1", "text", "2"]], [["text", "3"]]]
    assert db.ran("pgml._vectorizer_done") == [[7, [100, 101], [], []], [7, [100], [], []]]
    assert db.ran("pgml._vectorizer_finish") == [[7, None]]
    assert any("done, 3 rows" in n and "3 synced" in n for n in db.notices)


def test_an_error_ends_the_run_with_its_error_recorded():
    db = running([items("1")])

    def encoder_for(model, kwargs, settings):
        return Encoder(error=Cancel("canceling statement due to user request"))

    with pytest.raises(Cancel):
        vectorizer.run(db, "docs", Settings, encoder_for)
    assert db.rollbacks == 1 and db.ran("pgml._vectorizer_done") == []
    assert db.ran("pgml._vectorizer_finish") == [[7, "canceling statement due to user request"]]


def test_chunking_is_checked():
    assert vectorizer.chunking_of('{"splitter": "Markdown"}') == {"splitter": "markdown"}
    for bad, fragment in ((None, "splitter"), ('{"chunk_size": 5}', "splitter"), ('{"splitter": "nope"}', "splitter"),
                          ('{"splitter": "character", "chunk_size": 0}', "chunk_size"), ("[1]", "object")):
        with pytest.raises(Exception, match=fragment):
            vectorizer.chunking_of(bad)
