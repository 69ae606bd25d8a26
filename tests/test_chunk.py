"""pgml.chunk: LangChain's splitters by PostgresML's names; unit tests, then through SQL."""

import re

import pytest
from pgtest import one, sql_error
from psycopg.types.json import Jsonb

from pgml_plpy import chunking, errors

DOC = """# Title

First paragraph, with a few sentences. It goes on for a while so that it needs splitting.

## Section

Second paragraph.
Another line of it.

```python
def f(x):
    return x + 1


class A:
    pass
```
"""


# ------------------------------------------------------------------ unit tests, no PostgreSQL


@pytest.mark.parametrize("splitter", ["recursive_character", "character", "markdown", "python", "latex"])
def test_same_chunks_as_langchain_itself(splitter):
    """PostgresML called SPLITTERS[name](**kwargs).split_text(text): the chunks must be those."""
    import langchain_text_splitters

    kwargs = {"chunk_size": 60, "chunk_overlap": 10}
    expected = getattr(langchain_text_splitters, chunking.SPLITTERS[splitter][0])(**kwargs).split_text(DOC)
    got = chunking.chunk(splitter, DOC, kwargs)
    assert [c for _, c in got] == expected
    assert [i for i, _ in got] == list(range(1, len(expected) + 1))


def test_kwargs_as_json_text_and_splitter_options():
    got = chunking.chunk("character", "a b c d", '{"separator": " ", "chunk_size": 3, "chunk_overlap": 0}')
    assert got == [(1, "a b"), (2, "c d")]
    got = chunking.chunk("recursive_character", "a-b-c", {"separators": ["-"], "chunk_size": 1, "chunk_overlap": 0,
                                                           "keep_separator": False})
    assert got == [(1, "a"), (2, "b"), (3, "c")]


def test_overlap_may_equal_the_size_as_in_langchain():
    import langchain_text_splitters

    kwargs = {"chunk_size": 2, "chunk_overlap": 2}
    expected = langchain_text_splitters.RecursiveCharacterTextSplitter(**kwargs).split_text(DOC)
    assert [c for _, c in chunking.chunk("recursive_character", DOC, kwargs)] == expected


def test_empty_text_gives_no_chunks_and_defaults_apply():
    assert chunking.chunk("recursive_character", "") == []
    assert chunking.chunk("markdown", "short text", None) == [(1, "short text")]


@pytest.mark.parametrize("splitter, kwargs, error, fragment", [
    (None, None, errors.NullValue, "splitter must not be NULL"),
    ("sentences", None, errors.InvalidParameter, "unknown splitter 'sentences'"),
    ("character", '{"chunk_size": "100"}', errors.InvalidParameter, 'chunk_size must be an integer, not string "100"'),
    ("character", '{"chunk_size": 10.5}', errors.InvalidParameter, "chunk_size must be an integer"),
    ("character", '{"chunk_size": true}', errors.InvalidParameter, "chunk_size must be an integer"),
    ("character", '{"chunk_size": 0}', errors.InvalidParameter, "chunk_size must be at least 1"),
    ("character", '{"chunk_overlap": -1}', errors.InvalidParameter, "chunk_overlap must be at least 0"),
    ("character", '{"chunk_size": 100, "chunk_overlap": 101}', errors.InvalidParameter,
     "chunk_overlap 101 must not be larger than chunk_size 100"),
    ("character", '{"chunk_size": 100}', errors.InvalidParameter, "chunk_overlap 200 (its default)"),
    ("markdown", '{"separators": ["x"]}', errors.InvalidParameter,
     "unknown kwarg for the markdown splitter: separators"),
    ("character", '{"chunk_sise": 10}', errors.InvalidParameter, "unknown kwarg for the character splitter"),
    ("character", '{"length_function": "len"}', errors.InvalidParameter, "length_function"),
    ("recursive_character", '{"separators": "x"}', errors.InvalidParameter, "separators must be a non-empty array"),
    ("character", '{"keep_separator": "middle"}', errors.InvalidParameter, "keep_separator must be"),
    ("character", '[1]', errors.InvalidParameter, "kwargs must be a JSON object, not array"),
    ("character", '{bad', errors.InvalidJson, "kwargs is not valid JSON"),
])
def test_bad_arguments(splitter, kwargs, error, fragment):
    with pytest.raises(error, match=re.escape(fragment)):
        chunking.chunk(splitter, "some text", kwargs)


def test_null_text_is_an_error():
    with pytest.raises(errors.NullValue, match="text must not be NULL"):
        chunking.chunk("character", None)


def test_splitters_needing_downloaded_data_say_what_is_missing():
    for name in ("nltk", "spacy"):
        try:
            __import__(name)
            continue  # installed on this machine: then missing data is what the next test checks
        except ImportError:
            pass
        with pytest.raises(errors.NotSupported, match=f"needs the {name} package") as info:
            chunking.chunk(name, "One sentence. Another one.")
        assert info.value.hint and "recursive_character" in info.value.hint


def test_no_warning_lands_in_the_server_log(caplog):
    """LangChain logs a warning for every chunk longer than chunk_size; inside a backend that is the server log."""
    chunking.chunk("character", "x" * 50 + "\n\n" + "y" * 50, {"chunk_size": 10, "chunk_overlap": 0})
    assert not [r for r in caplog.records if r.name.startswith("langchain")]


# ------------------------------------------------------------------ through SQL


def test_chunk_rows_in_document_order(conn):
    rows = conn.execute("SELECT chunk_index, chunk FROM pgml.chunk('recursive_character', %s, %s)",
                        (DOC, Jsonb({"chunk_size": 60, "chunk_overlap": 10}))).fetchall()
    assert rows == chunking.chunk("recursive_character", DOC, {"chunk_size": 60, "chunk_overlap": 10})
    assert [r[0] for r in rows] == list(range(1, len(rows) + 1)) and len(rows) > 3


def test_positional_and_named_calls_and_default_kwargs(conn):
    assert conn.execute("SELECT * FROM pgml.chunk('markdown', 'hello')").fetchall() == [(1, "hello")]
    assert conn.execute("""SELECT * FROM pgml.chunk(splitter => 'character', "text" => 'a b',
                           kwargs => '{"separator": " ", "chunk_size": 1, "chunk_overlap": 0}')""").fetchall() \
        == [(1, "a"), (2, "b")]
    assert one(conn, "SELECT count(*) FROM pgml.chunk('python', '')") == 0


def test_chunking_a_table_of_documents(conn):
    conn.execute("DROP TABLE IF EXISTS chunk_docs")
    conn.execute("CREATE TABLE chunk_docs (id int, body text)")
    conn.execute("INSERT INTO chunk_docs VALUES (1, 'one two three four'), (2, ''), (3, 'five six')")
    rows = conn.execute("""SELECT d.id, c.chunk_index, c.chunk FROM chunk_docs d,
                           LATERAL pgml.chunk('character', d.body,
                                              '{"separator": " ", "chunk_size": 9, "chunk_overlap": 0}') c
                           ORDER BY d.id, c.chunk_index""").fetchall()
    assert rows == [(1, 1, "one two"), (1, 2, "three"), (1, 3, "four"), (3, 1, "five six")]
    conn.execute("DROP TABLE chunk_docs")


def test_result_types_and_function_attributes(conn):
    types = conn.execute("SELECT pg_typeof(chunk_index)::text, pg_typeof(chunk)::text "
                         "FROM pgml.chunk('character', 'x')").fetchone()
    assert types == ("bigint", "text")
    attrs = conn.execute("SELECT provolatile, proparallel, proisstrict, proretset FROM pg_proc "
                         "WHERE oid = 'pgml.chunk(text, text, jsonb)'::regprocedure").fetchone()
    assert attrs == ("i", "u", False, True)


@pytest.mark.parametrize("call, params, sqlstate, fragment", [
    ("SELECT * FROM pgml.chunk(NULL, 'x')", None, "22004", "splitter must not be NULL"),
    ("SELECT * FROM pgml.chunk('character', NULL)", None, "22004", "text must not be NULL"),
    ("SELECT * FROM pgml.chunk('nope', 'x')", None, "22023", "unknown splitter"),
    ("SELECT * FROM pgml.chunk('character', 'x', %s)", (Jsonb({"chunk_size": "10"}),), "22023",
     "chunk_size must be an integer"),
    ("SELECT * FROM pgml.chunk('character', 'x', %s)", (Jsonb({"chunk_size": 10, "chunk_overlap": 20}),), "22023",
     "must not be larger than chunk_size"),
    ("SELECT * FROM pgml.chunk('character', 'x', %s)", (Jsonb({"size": 10}),), "22023", "unknown kwarg"),
])
def test_sql_errors(conn, call, params, sqlstate, fragment):
    err = sql_error(conn, call, params)
    assert err.sqlstate == sqlstate
    assert err.diag.message_primary.startswith("pgml: ") and fragment in err.diag.message_primary
    assert "Traceback" not in err.diag.message_primary


def test_missing_splitter_packages_are_feature_not_supported(conn):
    for name in ("nltk", "spacy"):
        err = sql_error(conn, "SELECT * FROM pgml.chunk(%s, 'One sentence. Another.')", (name,))
        assert err.sqlstate == "0A000", err.diag.message_primary
        assert err.diag.message_hint
