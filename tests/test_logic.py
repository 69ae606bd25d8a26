"""The logic over the database without PostgreSQL: embed_table, the tuning registry and load_dataset's
writing, each against a fake Database (tests/fakedb.py). The same paths run for real in test_embed.py,
test_tune.py and test_load_dataset.py."""

import inspect

import pytest
from fakedb import FakeDatabase

from pgml_plpy import db, embed_table, errors
from pgml_plpy.server import PlpyDatabase
from pgml_plpy.settings import Settings


def public(cls) -> set[str]:
    return {name for name, _ in inspect.getmembers(cls, callable) if not name.startswith("_")}


def test_the_fake_and_the_plpy_database_are_the_interface():
    assert public(PlpyDatabase) == public(db.Database) == public(FakeDatabase) - {"on", "ran"}


# ------------------------------------------------------------------ embed_table


def table_db(relkind="r", columns=None):
    """A fake database holding public."Docs" (oid 7) with the given columns (name -> (format_type, typname,
    typcategory))."""
    columns = {"body": ("text", "text", "S")} if columns is None else columns
    fake = FakeDatabase()
    fake.on("FROM pg_catalog.pg_class c", [{"name": 'public."Docs"', "relkind": relkind}])
    fake.on("FROM pg_catalog.pg_attribute a", lambda params: [
        {"attname": n, "type": t, "typname": tn, "typcategory": cat}
        for n, (t, tn, cat) in columns.items() if n in params[1]])
    return fake


@pytest.fixture
def encode(monkeypatch):
    """embed_table's encoder replaced: each text becomes the literal '{<len>}' in the column's brackets."""
    seen = {}

    def encoder(transformer, kwargs, settings, brackets):
        seen["brackets"] = brackets
        return lambda texts: [brackets[0] + str(len(t)) + brackets[1] for t in texts]

    monkeypatch.setattr(embed_table, "encoder", encoder)
    return seen


def run(fake, text="body", embedding="Emb", batch_size=2):
    embed_table.run(fake, 7, text, embedding, "some/model", None, batch_size, Settings())


@pytest.mark.parametrize("relkind, columns, error, fragment", [
    ("v", None, errors.WrongObjectType, 'public."Docs" is not a table'),
    ("r", {}, errors.UndefinedColumn, 'column body of public."Docs" does not exist'),
    ("r", {"body": ("integer", "int4", "N")}, errors.DatatypeMismatch, "is integer, not text"),
    ("r", {"body": ("text", "text", "S"), "Emb": ("jsonb", "jsonb", "U")}, errors.DatatypeMismatch,
     "is jsonb, not real[] or vector"),
])
def test_embed_table_checks_the_table_first(encode, relkind, columns, error, fragment):
    fake = table_db(relkind, columns)
    with pytest.raises(error, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        run(fake)
    assert fake.pinned and not fake.commits and "brackets" not in encode


def test_embed_table_adds_the_column_and_commits_each_batch(encode):
    fake = table_db()
    batches = [[{"ctid": "(0,1)", "body": "a"}, {"ctid": "(0,2)", "body": "bb"}], [{"ctid": "(0,3)", "body": "ccc"}]]
    fake.on("AS todo", [{"todo": 3, "nulls": 1}])
    fake.on("ORDER BY ctid LIMIT $2", lambda params: batches.pop(0) if batches else [])
    run(fake)
    assert fake.ran('ALTER TABLE public."Docs" ADD COLUMN "Emb" real[]') == [[]]
    assert encode["brackets"] == "{}"
    # resumes after the last row of each batch; each batch's vectors written by ctid, then committed
    assert fake.ran("ORDER BY ctid LIMIT $2") == [["(0,0)", 2], ["(0,2)", 2], ["(0,3)", 2]]
    assert fake.ran('UPDATE public."Docs" AS t SET "Emb" = u.e::real[]') == [
        [["(0,1)", "(0,2)"], ["{1}", "{2}"]], [["(0,3)"], ["{3}"]]]
    assert fake.commits == ["pgml.embed_table commits after each batch"] * 2
    assert fake.notices[0] == 'pgml.embed_table: 3 rows of public."Docs" to embed with some/model, 1 with NULL ' \
                              'body skipped'
    assert fake.notices[-1].startswith("pgml.embed_table: done, 3 rows embedded")


def test_embed_table_writes_pgvector_columns_in_their_own_form(encode):
    fake = table_db(columns={"body": ("text", "text", "S"), "Emb": ("vector(3)", "vector", "U")})
    fake.on("AS todo", [{"todo": 0, "nulls": 0}])
    run(fake)
    assert encode["brackets"] == "[]" and not fake.ran("ALTER TABLE")
    assert not fake.commits


@pytest.mark.parametrize("batch_size", [0, -1, None])
def test_embed_table_batch_size(encode, batch_size):
    with pytest.raises(errors.InvalidParameter, match="batch_size"):
        run(table_db(), batch_size=batch_size)
