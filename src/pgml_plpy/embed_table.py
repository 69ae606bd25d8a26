"""pgml.embed_table: fill a table's embedding column in committed batches.

Rows whose embedding is NULL and whose text is not get embedded, batch by batch in
ctid order, each batch committed, so an interruption loses nothing already done and
a re-run resumes where the last one stopped. Rows with NULL text are skipped and
counted. Progress goes to the client as NOTICEs while it runs.
"""

from __future__ import annotations

import time

from .embeddings import encoder
from .errors import DatatypeMismatch, InvalidParameter, UndefinedColumn, WrongObjectType
from .settings import Settings

PROGRESS_EVERY = 2.0  # seconds between progress NOTICEs
ENCODINGS = {"_float4": "{}", "vector": "[]"}  # embedding column type -> the brackets of its text form


def _columns(db, relation: int, names: list[str]) -> dict[str, dict]:
    rows = db.execute(
        "SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod) AS type, t.typname, t.typcategory "
        "FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid "
        "WHERE a.attrelid = $1 AND a.attname = ANY($2) AND a.attnum > 0 AND NOT a.attisdropped",
        [relation, names], ["oid", "name[]"])
    return {r["attname"]: r for r in rows}


def _target(db, relation: int, text_column: str, embedding_column: str) -> tuple[str, str, str]:
    """(the table's quoted name, the embedding column's type, its brackets), the column added when missing."""
    table = db.execute(
        "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) AS name, c.relkind "
        "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1",
        [relation], ["oid"])[0]
    name = table["name"]
    if table["relkind"] not in ("r", "p"):
        raise WrongObjectType(f"{name} is not a table")
    columns = _columns(db, relation, [text_column, embedding_column])
    if text_column not in columns:
        raise UndefinedColumn(f"column {text_column} of {name} does not exist")
    if columns[text_column]["typcategory"] != "S":
        raise DatatypeMismatch(f"column {text_column} of {name} is {columns[text_column]['type']}, not text")
    if embedding_column not in columns:
        db.execute(f"ALTER TABLE {name} ADD COLUMN {db.quote_ident(embedding_column)} real[]")
        return name, "real[]", "{}"
    column = columns[embedding_column]
    if column["typname"] not in ENCODINGS:
        raise DatatypeMismatch(f"column {embedding_column} of {name} is {column['type']}, not real[] or vector",
                               hint="Use a new column name: embed_table creates it as real[].")
    return name, column["type"], ENCODINGS[column["typname"]]


def run(db, relation: int, text_column: str, embedding_column: str, transformer: str, kwargs,
        batch_size: int, settings: Settings) -> None:
    if batch_size is None or batch_size < 1:
        raise InvalidParameter(f"batch_size must be a positive integer, not {batch_size}")
    # a procedure that commits cannot carry SET search_path: each of its transactions pins it
    db.pin_search_path()
    if relation is None or not text_column or not embedding_column:
        raise InvalidParameter("relation, text_column and embedding_column are required")
    table, column_type, brackets = _target(db, relation, text_column, embedding_column)
    encode = encoder(transformer, kwargs, settings, brackets)
    txt, emb = db.quote_ident(text_column), db.quote_ident(embedding_column)

    counts = db.execute(
        f"SELECT count(*) FILTER (WHERE {txt} IS NOT NULL) AS todo, count(*) FILTER (WHERE {txt} IS NULL) AS nulls "
        f"FROM {table} WHERE {emb} IS NULL")[0]
    todo, nulls = counts["todo"], counts["nulls"]
    db.notice(f"pgml.embed_table: {todo} rows of {table} to embed with {transformer}"
              + (f", {nulls} with NULL {text_column} skipped" if nulls else ""))
    select = (f"SELECT ctid, {txt} AS body FROM {table} WHERE ctid > $1 AND {emb} IS NULL AND {txt} IS NOT NULL "
              "ORDER BY ctid LIMIT $2")
    update = (f"UPDATE {table} AS t SET {emb} = u.e::{column_type} "
              "FROM unnest($1::tid[], $2::text[]) AS u(id, e) WHERE t.ctid = u.id")
    done, last, started, reported = 0, "(0,0)", time.monotonic(), 0.0
    while True:
        rows = db.execute(select, [last, batch_size], ["tid", "int8"])
        if not rows:
            break
        ids = [r["ctid"] for r in rows]
        db.execute(update, [ids, encode([r["body"] for r in rows])], ["tid[]", "text[]"])
        db.commit("pgml.embed_table commits after each batch", hint="CALL it on its own, outside BEGIN ... COMMIT.")
        done += len(rows)
        last = ids[-1]
        elapsed = time.monotonic() - started
        if elapsed - reported >= PROGRESS_EVERY:
            reported = elapsed
            rate = done / elapsed
            left = max(todo - done, 0) / rate if rate else 0
            db.notice(f"pgml.embed_table: {done} / {todo} rows ({100 * done / max(todo, 1):.1f}%), "
                      f"{rate:.0f} rows/s, about {left:.0f} s left")
    elapsed = time.monotonic() - started
    db.notice(f"pgml.embed_table: done, {done} rows embedded in {elapsed:.1f} s "
              f"({done / elapsed if elapsed else 0:.0f} rows/s)" + (f", {nulls} NULL texts skipped" if nulls else ""))
