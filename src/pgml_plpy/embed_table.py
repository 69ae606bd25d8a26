"""pgml.embed_table: fill a table's embedding column in committed batches.

Rows whose embedding is NULL and whose text is not get embedded, batch by batch in
ctid order, each batch committed, so an interruption loses nothing already done and
a re-run resumes where the last one stopped. Rows with NULL text are skipped and
counted. Progress goes to the client as NOTICEs while it runs.
"""

from __future__ import annotations

import time

from .embeddings import encoder
from .errors import (DatatypeMismatch, InvalidParameter, InvalidTransactionTermination, UndefinedColumn,
                     WrongObjectType)
from .settings import Settings

TEXT_TYPES = {"text", "character varying", "character"}
PROGRESS_EVERY = 2.0  # seconds between progress NOTICEs


def _columns(plpy, relation: int, names: list[str]) -> dict[str, dict]:
    rows = plpy.execute(plpy.prepare(
        "SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod) AS type, t.typname, t.typcategory "
        "FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid "
        "WHERE a.attrelid = $1 AND a.attname = ANY($2) AND a.attnum > 0 AND NOT a.attisdropped",
        ["oid", "name[]"]), [relation, names])
    return {r["attname"]: r for r in rows}


def _pin_search_path(plpy) -> None:
    """The procedure commits, so it cannot carry SET search_path: each of its transactions sets it locally."""
    plpy.execute("SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true)")


def run(plpy, relation: int, text_column: str, embedding_column: str, transformer: str, kwargs,
        batch_size: int, settings: Settings) -> None:
    if batch_size is None or batch_size < 1:
        raise InvalidParameter(f"batch_size must be a positive integer, not {batch_size}")
    _pin_search_path(plpy)
    if relation is None or not text_column or not embedding_column:
        raise InvalidParameter("relation, text_column and embedding_column are required")
    table = plpy.execute(plpy.prepare(
        "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) AS name, c.relkind "
        "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1",
        ["oid"]), [relation])[0]
    if table["relkind"] not in ("r", "p"):
        raise WrongObjectType(f"{table['name']} is not a table")
    columns = _columns(plpy, relation, [text_column, embedding_column])
    if text_column not in columns:
        raise UndefinedColumn(f"column {text_column} of {table['name']} does not exist")
    if columns[text_column]["typcategory"] != "S":
        raise DatatypeMismatch(f"column {text_column} of {table['name']} is {columns[text_column]['type']}, "
                               "not text")
    encode_for = {"_float4": "{}", "vector": "[]"}
    txt, emb = plpy.quote_ident(text_column), plpy.quote_ident(embedding_column)
    if embedding_column not in columns:
        plpy.execute(f"ALTER TABLE {table['name']} ADD COLUMN {emb} real[]")
        column_type, brackets = "real[]", "{}"
    else:
        column = columns[embedding_column]
        if column["typname"] not in encode_for:
            raise DatatypeMismatch(f"column {embedding_column} of {table['name']} is {column['type']}, "
                                   "not real[] or vector",
                                   hint="Use a new column name: embed_table creates it as real[].")
        column_type, brackets = column["type"], encode_for[column["typname"]]
    encode = encoder(transformer, kwargs, settings, brackets)

    counts = plpy.execute(
        f"SELECT count(*) FILTER (WHERE {txt} IS NOT NULL) AS todo, count(*) FILTER (WHERE {txt} IS NULL) AS nulls "
        f"FROM {table['name']} WHERE {emb} IS NULL")[0]
    todo, nulls = counts["todo"], counts["nulls"]
    plpy.notice(f"pgml.embed_table: {todo} rows of {table['name']} to embed with {transformer}"
                + (f", {nulls} with NULL {text_column} skipped" if nulls else ""))
    select = plpy.prepare(
        f"SELECT ctid, {txt} AS body FROM {table['name']} WHERE ctid > $1 AND {emb} IS NULL AND {txt} IS NOT NULL "
        "ORDER BY ctid LIMIT $2", ["tid", "int8"])
    update = plpy.prepare(
        f"UPDATE {table['name']} AS t SET {emb} = u.e::{column_type} "
        "FROM unnest($1::tid[], $2::text[]) AS u(id, e) WHERE t.ctid = u.id", ["tid[]", "text[]"])
    done, last, started, reported = 0, "(0,0)", time.monotonic(), 0.0
    while True:
        rows = plpy.execute(select, [last, batch_size])
        if len(rows) == 0:
            break
        ids = [r["ctid"] for r in rows]
        plpy.execute(update, [ids, encode([r["body"] for r in rows])])
        _commit(plpy)
        _pin_search_path(plpy)
        done += len(rows)
        last = ids[-1]
        elapsed = time.monotonic() - started
        if elapsed - reported >= PROGRESS_EVERY:
            reported = elapsed
            rate = done / elapsed
            left = max(todo - done, 0) / rate if rate else 0
            plpy.notice(f"pgml.embed_table: {done} / {todo} rows ({100 * done / max(todo, 1):.1f}%), "
                        f"{rate:.0f} rows/s, about {left:.0f} s left")
    elapsed = time.monotonic() - started
    plpy.notice(f"pgml.embed_table: done, {done} rows embedded in {elapsed:.1f} s "
                f"({done / elapsed if elapsed else 0:.0f} rows/s)" + (f", {nulls} NULL texts skipped" if nulls else ""))


def _commit(plpy) -> None:
    try:
        plpy.commit()
    except plpy.SPIError as exc:
        if getattr(exc, "sqlstate", None) == "2D000":
            raise InvalidTransactionTermination("pgml.embed_table commits after each batch, so it cannot run "
                                                "inside a transaction block",
                                                hint="CALL it on its own, outside BEGIN ... COMMIT.") from None
        raise
