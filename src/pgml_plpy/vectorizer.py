"""Vectorizers: a table's text kept chunked and embedded in `<name>_embeddings` as its rows change.

The SQL side holds the bookkeeping: the catalog pgml._vectorizers, the queue pgml._vectorizer_queue
of keys to re-sync, filled by triggers on the source (sql/schema/vectorizer.sql), and the SECURITY
DEFINER functions pgml._vectorizer_* through which roles touch them (sqlapi.py's VECTORIZER). This
module is the API's logic over a db.Database:

- create: checks the source (a table with a primary key), the text column, the model's kwargs and the
  chunking; makes the embeddings table as the caller; registers the vectorizer (triggers, existing
  rows queued, a pg_cron job when scheduled).
- run: in committed batches, as the vectorizer's owner: claims queued items (SKIP LOCKED, one key at a
  time across runs), re-reads their rows, chunks them, embeds the chunks that changed in one encoder
  call per batch, writes them, deletes chunks that are gone; an item that fails is marked failed with
  its error (and retried later) while the rest proceed. A complete rebuild replaces the old table.
- alter: a new model, chunking or kwargs starts a rebuild into a new table; nothing new retries the
  failed items now.
- drop: triggers, queue, job and catalog row go; the tables when asked.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Callable

from .chunking import SPLITTERS, make_splitter, parse_kwargs
from .db import SqlError
from .embeddings import embed_request, encoder
from .errors import (DatatypeMismatch, DuplicateColumn, DuplicateObject, DuplicateTable, InvalidParameter,
                     NotSupported, NullValue, ObjectNotInPrerequisiteState, UndefinedColumn, WrongObjectType,
                     one_line, to_pgml_error)
from .inputs import parse_args
from .settings import Settings

BATCH_ITEMS = 100          # queued rows per committed batch; their changed chunks go in one encoder call
PROGRESS_EVERY = 2.0       # seconds between progress NOTICEs
SUFFIX = "_embeddings"
BUILDING_SUFFIX = "_embeddings_new"
MAX_NAME_BYTES = 63 - len(BUILDING_SUFFIX)   # the tables' names must fit PostgreSQL's 63 bytes
OWN_COLUMNS = ("chunk_index", "chunk", "embedding")
RUN_HINT = "CALL it on its own, outside BEGIN ... COMMIT."
DEFAULT_CHUNKING = '{"splitter": "recursive_character", "chunk_size": 1000, "chunk_overlap": 100}'


# ------------------------------------------------------------------------------------------ checks


def check_name(name) -> str:
    if name is None:
        raise NullValue("the vectorizer's name must not be NULL")
    if not name.strip():
        raise InvalidParameter("the vectorizer's name must not be empty")
    if len(name.encode()) > MAX_NAME_BYTES:
        raise InvalidParameter(f"the vectorizer's name has {len(name.encode())} bytes, more than {MAX_NAME_BYTES}",
                               hint=f"Its tables are named <name>{SUFFIX} and <name>{BUILDING_SUFFIX}, and "
                                    "PostgreSQL's names have at most 63 bytes.")
    return name


def chunking_of(chunking) -> dict:
    """The chunking JSON, checked: {"splitter": <name>, ...that splitter's kwargs}."""
    spec = dict(parse_args(chunking, "chunking", DEFAULT_CHUNKING))
    name = spec.pop("splitter", None)
    if not isinstance(name, str) or name.strip().lower() not in SPLITTERS:
        raise InvalidParameter(f"chunking needs a splitter, one of {', '.join(SPLITTERS)}, not {json.dumps(name)}",
                               hint=f"Example: '{DEFAULT_CHUNKING}'")
    name = name.strip().lower()
    return {"splitter": name, **parse_kwargs(name, spec)}


def splitter(chunking: dict) -> Callable[[str], list[str]]:
    """text -> its chunks, in order (none for empty text)."""
    options = dict(chunking)
    instance = make_splitter(options.pop("splitter"), options)
    return lambda text: instance.split_text(text) if text else []


def _check_embedding(model, kwargs, settings: Settings) -> None:
    """The model's name and pgml.embed's kwargs, checked as pgml.embed checks them (nothing is loaded)."""
    embed_request(model, [], kwargs, settings)


def _json(value) -> dict:
    return parse_args(value, "kwargs")


# ------------------------------------------------------------------------------- the source table


@dataclass(frozen=True)
class Column:
    attnum: int
    name: str
    type: str


def _source(db, oid: int) -> dict:
    rows = db.execute(
        "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) AS name, n.nspname AS schema, c.relkind, "
        "c.relpersistence FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.oid = $1", [oid], ["oid"])
    source = rows[0]
    if source["relkind"] == "p":
        raise NotSupported(f"{source['name']} is a partitioned table: vectorizers keep plain tables in sync",
                           hint="Create a vectorizer on each partition (each needs a primary key).")
    if source["relkind"] != "r":
        raise WrongObjectType(f"{source['name']} is not a table")
    if source["relpersistence"] == "t":
        raise NotSupported(f"{source['name']} is a temporary table",
                           hint="A vectorizer outlives the session: use a permanent table.")
    keys = db.execute(
        "SELECT a.attnum, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod) AS type, "
        "t.typcategory = 'A' OR t.typtype = 'c' OR t.typname IN ('json', 'jsonb') AS structured "
        "FROM pg_catalog.pg_index i, unnest(i.indkey::int2[]) WITH ORDINALITY AS k(n, ord) "
        "JOIN pg_catalog.pg_attribute a ON a.attnum = k.n "
        "JOIN pg_catalog.pg_type t ON t.oid = coalesce(NULLIF(("
        "SELECT d.typbasetype FROM pg_catalog.pg_type d WHERE d.oid = a.atttypid), 0), a.atttypid) "
        "WHERE i.indrelid = $1 AND i.indisprimary AND a.attrelid = $1 ORDER BY k.ord", [oid], ["oid"])
    if not keys:
        raise ObjectNotInPrerequisiteState(f"{source['name']} has no primary key",
                                           hint="A vectorizer keys each row's chunks by the row's primary key: "
                                                f"ALTER TABLE {source['name']} ADD PRIMARY KEY (...).")
    structured = [f"{r['attname']} ({r['type']})" for r in keys if r["structured"]]
    if structured:
        raise NotSupported(f"the primary key of {source['name']} has a column of an array, composite or JSON type: "
                           f"{', '.join(structured)}",
                           hint="The queue holds keys as text: use a key of scalar columns (numbers, text, uuid, "
                                "dates, ...).")
    source["keys"] = [Column(r["attnum"], r["attname"], r["type"]) for r in keys]
    clash = sorted({c.name for c in source["keys"]} & set(OWN_COLUMNS))
    if clash:
        raise DuplicateColumn(f"the primary key of {source['name']} has a column named {', '.join(clash)}, which the "
                              "embeddings table has too",
                              hint=f"The embeddings table has the key's columns and {', '.join(OWN_COLUMNS)}.")
    return source


def _text_column(db, oid: int, source: dict, text_column) -> int:
    if text_column is None:
        raise NullValue("text_column must not be NULL")
    rows = db.execute(
        "SELECT a.attnum, pg_catalog.format_type(a.atttypid, a.atttypmod) AS type, t.typcategory "
        "FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid "
        "WHERE a.attrelid = $1 AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped",
        [oid, text_column], ["oid", "name"])
    if not rows:
        raise UndefinedColumn(f"column {text_column} of {source['name']} does not exist")
    if rows[0]["typcategory"] != "S":
        raise DatatypeMismatch(f"column {text_column} of {source['name']} is {rows[0]['type']}, not text")
    return rows[0]["attnum"]


def _create_table(db, qualified: str, keys: list[tuple[str, str]], comment: str) -> int:
    """The embeddings table: the key's columns (names, types), chunk_index, chunk, embedding; its oid."""
    if db.execute("SELECT pg_catalog.to_regclass($1) IS NOT NULL AS taken", [qualified], ["text"])[0]["taken"]:
        raise DuplicateTable(f"relation {qualified} exists",
                             hint="A vectorizer makes its embeddings table: drop that one or pick another name.")
    names = [db.quote_ident(name) for name, _ in keys]
    columns = ", ".join(f"{name} {kind} NOT NULL" for name, (_, kind) in zip(names, keys))
    db.execute(f"CREATE TABLE {qualified} ({columns}, chunk_index integer NOT NULL, chunk text NOT NULL, "
               f"embedding real[] NOT NULL, PRIMARY KEY ({', '.join(names)}, chunk_index))")
    db.execute(f"COMMENT ON TABLE {qualified} IS {db.quote_literal(comment)}")
    return db.execute("SELECT $1::pg_catalog.regclass::pg_catalog.oid AS oid", [qualified], ["text"])[0]["oid"]


def _comment(name: str, source: str, model: str) -> str:
    return f"pgml vectorizer {name}: chunks of {source} embedded with {model}"


# ------------------------------------------------------------------------------------------- the API


def create(db, settings: Settings, name, source, text_column, model, chunking, kwargs, schedule) -> str:
    """pgml.create_vectorizer: the embeddings table's qualified name."""
    name = check_name(name)
    if source is None:
        raise NullValue("source must not be NULL")
    oid = db.regclass(source)
    src = _source(db, oid)
    text_attnum = _text_column(db, oid, src, text_column)
    _check_embedding(model, kwargs, settings)
    chunks = chunking_of(chunking)
    splitter(chunks)  # the splitter's own checks (and missing packages) now, not at the first run
    if schedule is not None and not schedule.strip():
        raise InvalidParameter("schedule must be a cron schedule or NULL", hint="Example: '* * * * *'")
    if db.execute("SELECT pgml._vectorizer_name_taken($1) AS taken", [name], ["text"])[0]["taken"]:
        raise DuplicateObject(f"a vectorizer named {name!r} exists",
                              hint="Pick another name, or pgml.drop_vectorizer it first.")
    owner = db.execute("SELECT current_user AS owner")[0]["owner"]
    table = f"{db.quote_ident(src['schema'])}.{db.quote_ident(name + SUFFIX)}"
    table_oid = _create_table(db, table, [(c.name, c.type) for c in src["keys"]], _comment(name, src["name"], model))
    queued = db.execute(
        "SELECT pgml._vectorizer_register($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9::jsonb, $10) AS queued",
        [name, owner, oid, text_attnum, [c.attnum for c in src["keys"]], table_oid, model, json.dumps(chunks),
         json.dumps(_json(kwargs)), schedule],
        ["text", "name", "oid", "int2", "int2[]", "oid", "text", "text", "text", "text"])[0]["queued"]
    when = (f"pg_cron runs it on {schedule!r}" if schedule is not None
            else f"CALL pgml.run_vectorizer('{name}') or python -m pgml_plpy.worker embeds them")
    db.notice(f"pgml.create_vectorizer: {name}: {queued} rows of {src['name']} queued for {table}; {when}")
    return table


def _get(db, name, for_change: bool) -> dict:
    check_name(name)
    return db.execute("SELECT * FROM pgml._vectorizer_get($1, $2)", [name, for_change], ["text", "bool"])[0]


def _config(db, vectorizer: int) -> dict | None:
    rows = db.execute("SELECT * FROM pgml._vectorizer_config($1)", [vectorizer], ["int8"])
    return rows[0] if rows else None


def _relation(db, oid) -> str | None:
    """The qualified name of the relation oid, or None when there is none."""
    if oid is None:
        return None
    rows = db.execute("SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) AS name FROM pg_catalog.pg_class c "
                      "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1", [oid], ["oid"])
    return rows[0]["name"] if rows else None


def alter(db, settings: Settings, name, model, chunking, kwargs) -> None:
    """pgml.alter_vectorizer: a rebuild with what changed, or the failed items retried when nothing did."""
    vec = _get(db, name, for_change=True)
    cfg = _config(db, vec["id"])
    current = (cfg["model"], _json(cfg["chunking"]), _json(cfg["kwargs"]))
    wanted = (current[0] if model is None else model,
              current[1] if chunking is None else chunking_of(chunking),
              current[2] if kwargs is None else _json(kwargs))
    if wanted == current:
        retried = db.execute("SELECT pgml._vectorizer_retry($1) AS n", [vec["id"]], ["int8"])[0]["n"]
        db.notice(f"pgml.alter_vectorizer: {name}: nothing to change; {retried} failed items queued again")
        return
    _check_embedding(wanted[0], wanted[2], settings)
    splitter(wanted[1])
    building = _relation(db, vec["building"])
    if building is not None:
        db.execute(f"DROP TABLE {building}")
    schema = db.execute("SELECT n.nspname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
                        "ON n.oid = c.relnamespace WHERE c.oid = $1", [vec["source"]], ["oid"])[0]["nspname"]
    table = f"{db.quote_ident(schema)}.{db.quote_ident(name + BUILDING_SUFFIX)}"
    table_oid = _create_table(db, table, list(zip(cfg["key_columns"], cfg["key_types"])),
                              _comment(name, cfg["source"], wanted[0]) + " (rebuilding)")
    db.execute(f"ALTER TABLE {table} OWNER TO {db.quote_ident(vec['owner'])}")
    queued = db.execute("SELECT pgml._vectorizer_rebuild($1, $2, $3, $4::jsonb, $5::jsonb) AS n",
                        [vec["id"], table_oid, wanted[0], json.dumps(wanted[1]), json.dumps(wanted[2])],
                        ["int8", "oid", "text", "text", "text"])[0]["n"]
    db.notice(f"pgml.alter_vectorizer: {name}: {queued} rows queued for {table}, which replaces "
              f"{_relation(db, vec['embeddings'])} when every row is in it (until then that one stays as it is)")


def drop(db, name, drop_table) -> None:
    """pgml.drop_vectorizer: its triggers, queue, pg_cron job and catalog row; its tables when asked."""
    if drop_table is None:
        raise NullValue("drop_table must not be NULL")
    vec = _get(db, name, for_change=False)
    tables = db.execute("SELECT * FROM pgml._vectorizer_unregister($1)", [vec["id"]], ["int8"])[0]
    if tables["building"] is not None:
        db.execute(f"DROP TABLE {tables['building']}")
    if drop_table and tables["embeddings"] is not None:
        db.execute(f"DROP TABLE {tables['embeddings']}")
    kept = "" if drop_table or tables["embeddings"] is None else f"; {tables['embeddings']} stays"
    db.notice(f"pgml.drop_vectorizer: {name} dropped{kept}")


# ------------------------------------------------------------------------------------------- runs


def _as_owner(db, owner: str) -> None:
    """This transaction's search_path pinned and role set to the vectorizer's owner (SET LOCAL ROLE: the
    server checks that the session may), so that the run reads and writes with the owner's rights."""
    db.pin_search_path()
    db.execute("SELECT pg_catalog.set_config('role', $1, true)", [owner], ["text"])


def _stops_run(exc: BaseException) -> bool:
    """A cancel, a terminate or a shutdown ends the run (its batch's items stay queued)."""
    return str(getattr(exc, "sqlstate", None) or "").startswith("57") or not isinstance(exc, Exception)


@dataclass
class Batch:
    """What one batch did."""

    synced: int = 0        # rows whose chunks now match their text
    removed: int = 0       # rows gone (or without text) whose chunks were deleted
    embedded: int = 0      # chunks embedded
    unchanged: int = 0     # chunks kept as they were
    failed: int = 0        # rows that failed


class Sql:
    """The statements of one vectorizer's batches, built from its catalog (quoted names, catalog types)."""

    def __init__(self, db, cfg: dict):
        types = cfg["key_types"]
        self.width = len(types)
        # the key's columns in the source, and in the embeddings table (named as the source's were then)
        names = {"s": [db.quote_ident(c) for c in cfg["key_columns"]],
                 "e": [db.quote_ident(c) for c in cfg["target_key_columns"]]}
        keys = names["e"]
        params = ", ".join(f"${i + 1}::text[]" for i in range(self.width))
        cols = ", ".join(f"c{i}" for i in range(self.width))

        def match(alias: str) -> str:
            return " AND ".join(f"{alias}.{k} = u.c{i}::{t}" for i, (k, t) in enumerate(zip(names[alias], types)))

        source, target, text = cfg["source"], cfg["target"], db.quote_ident(cfg["text_column"])
        n = self.width
        self.read = (f"SELECT u.i, s.{text} AS body FROM unnest({params}) WITH ORDINALITY AS u({cols}, i) "
                     f"JOIN ONLY {source} s ON {match('s')}")
        self.existing = (f"SELECT u.i, e.chunk_index, e.chunk FROM unnest({params}) WITH ORDINALITY AS u({cols}, i) "
                         f"JOIN {target} e ON {match('e')}")
        self.trim = (f"DELETE FROM {target} e USING unnest({params}, ${n + 1}::int4[]) AS u({cols}, keep) "
                     f"WHERE {match('e')} AND e.chunk_index > u.keep")
        self.write = (f"INSERT INTO {target} ({', '.join(keys)}, chunk_index, chunk, embedding) "
                      f"SELECT {', '.join(f'u.c{i}::{t}' for i, t in enumerate(types))}, u.ci, u.chunk, u.e::real[] "
                      f"FROM unnest({params}, ${n + 1}::int4[], ${n + 2}::text[], ${n + 3}::text[]) "
                      f"AS u({cols}, ci, chunk, e) ON CONFLICT ({', '.join(keys)}, chunk_index) "
                      "DO UPDATE SET chunk = EXCLUDED.chunk, embedding = EXCLUDED.embedding")
        self.key_types = ["text[]"] * self.width

    def columns(self, keys: list[tuple]) -> list[list[str]]:
        """One text[] per key column, for the keys given."""
        return [[key[i] for key in keys] for i in range(self.width)]


def sync(db, sql: Sql, items: list[dict], split, encode, settings: Settings) -> tuple[Batch, list, list, list]:
    """Bring the rows of the claimed items in line with their source rows.

    Returns (what it did, done item ids, failed item ids, their errors). The changed chunks of the
    whole batch go to the encoder in one call; when that call fails, each row's chunks are encoded
    on their own, so that only the rows whose text the model refuses fail.
    """
    by_key: dict[tuple, list[int]] = {}
    for item in items:
        by_key.setdefault(tuple(item["key"]), []).append(item["id"])
    keys = list(by_key)
    columns = sql.columns(keys)
    bodies = {r["i"]: r["body"] for r in db.execute(sql.read, columns, sql.key_types)}
    old: dict[int, dict[int, str]] = {}
    for r in db.execute(sql.existing, columns, sql.key_types):
        old.setdefault(r["i"], {})[r["chunk_index"]] = r["chunk"]

    batch = Batch()
    failures: dict[int, str] = {}      # key ordinal -> error
    plans: dict[int, tuple[int, list[tuple[int, str]]]] = {}   # ordinal -> (chunks kept, changed chunks)
    for i in range(1, len(keys) + 1):
        body = bodies.get(i)
        if body is not None and len(body) > settings.max_input_chars:
            failures[i] = (f"the text has {len(body)} characters, more than max_input_chars "
                           f"({settings.max_input_chars})")
            continue
        chunks = split(body) if body is not None else []
        have = old.get(i, {})
        changed = [(n, c) for n, c in enumerate(chunks, start=1) if have.get(n) != c]
        batch.unchanged += len(chunks) - len(changed)
        plans[i] = (len(chunks), changed)

    vectors: dict[int, list[str]] = {}
    texts = [c for _, changed in plans.values() for _, c in changed]
    if texts:
        try:
            flat = iter(encode(texts))
            vectors = {i: [next(flat) for _ in changed] for i, (_, changed) in plans.items()}
        except BaseException as exc:  # noqa: BLE001 - a cancel goes on; a model error is found row by row
            if _stops_run(exc):
                raise
            for i, (_, changed) in plans.items():
                if not changed:
                    continue
                try:
                    vectors[i] = encode([c for _, c in changed])
                except BaseException as row_exc:  # noqa: BLE001
                    if _stops_run(row_exc):
                        raise
                    failures[i] = to_pgml_error(row_exc, "embedding").message
    for i in failures:
        plans.pop(i, None)

    if plans:
        ordinals = list(plans)
        db.execute(sql.trim, sql.columns([keys[i - 1] for i in ordinals]) + [[plans[i][0] for i in ordinals]],
                   sql.key_types + ["int4[]"])
        rows = [(keys[i - 1], n, c, v) for i in ordinals for (n, c), v in zip(plans[i][1], vectors.get(i, []))]
        if rows:
            db.execute(sql.write, sql.columns([r[0] for r in rows]) + [[r[1] for r in rows], [r[2] for r in rows],
                                                                        [r[3] for r in rows]],
                       sql.key_types + ["int4[]", "text[]", "text[]"])
        for i in ordinals:
            kept, changed = plans[i]
            batch.embedded += len(changed)
            if kept:
                batch.synced += 1
            else:
                batch.removed += 1
    batch.failed = len(failures)
    done = [item for i in plans for item in by_key[keys[i - 1]]]
    failed = [(item, one_line(error)) for i, error in failures.items() for item in by_key[keys[i - 1]]]
    return batch, done, [f[0] for f in failed], [f[1] for f in failed]


def run(db, name, settings_of: Callable[[], Settings], encoder_for=encoder) -> None:
    """CALL pgml.run_vectorizer: everything due that was queued when it started, in committed batches."""
    vec = _get(db, name, for_change=False)
    vectorizer, owner = vec["id"], vec["owner"]
    db.commit("pgml.run_vectorizer commits after each batch", RUN_HINT)
    _as_owner(db, owner)
    settings = settings_of()
    due = db.execute("SELECT * FROM pgml._vectorizer_due($1)", [vectorizer], ["int8"])[0]
    total, up_to = due["items"], due["last_item"]
    db.notice(f"pgml.run_vectorizer: {name}: {total} queued rows to sync")
    started = time.monotonic()
    reported = 0.0
    items = 0
    totals = Batch()
    try:
        while up_to is not None:
            cfg = _config(db, vectorizer)
            if cfg is None:
                db.notice(f"pgml.run_vectorizer: {name} was dropped")
                return
            claimed = db.execute("SELECT * FROM pgml._vectorizer_claim($1, $2, $3)",
                                 [vectorizer, up_to, BATCH_ITEMS], ["int8", "int8", "int4"])
            if not claimed:
                # the config's FOR SHARE ends here: _finish locks the row for a change, as another
                # run's _finish may at the same time
                db.commit("pgml.run_vectorizer commits after each batch", RUN_HINT)
                _as_owner(db, owner)
                break
            sql = Sql(db, cfg)
            encode = encoder_for(cfg["model"], cfg["kwargs"], settings)
            batch, done, failed, errors = sync(db, sql, claimed, splitter(_json(cfg["chunking"])), encode, settings)
            db.execute("SELECT pgml._vectorizer_done($1, $2, $3, $4)", [vectorizer, done, failed, errors],
                       ["int8", "int8[]", "int8[]", "text[]"])
            db.commit("pgml.run_vectorizer commits after each batch", RUN_HINT)
            _as_owner(db, owner)
            items += len(claimed)
            for field in ("synced", "removed", "embedded", "unchanged", "failed"):
                setattr(totals, field, getattr(totals, field) + getattr(batch, field))
            elapsed = time.monotonic() - started
            if elapsed - reported >= PROGRESS_EVERY:
                reported = elapsed
                left = max(total - items, 0) * elapsed / items
                db.notice(f"pgml.run_vectorizer: {name}: {items} / {total} rows ({100 * items / max(total, 1):.1f}%), "
                          f"{items / elapsed:.0f} rows/s, {totals.embedded / elapsed:.0f} chunks/s, "
                          f"about {left:.0f} s left")
        _finish(db, vectorizer, owner, None)
        db.commit("pgml.run_vectorizer commits after each batch", RUN_HINT)
    except BaseException as exc:
        try:
            db.rollback()
            _as_owner(db, owner)
            _finish(db, vectorizer, owner, one_line(to_pgml_error(exc, "run_vectorizer").message))
            db.commit("pgml.run_vectorizer commits after each batch", RUN_HINT)
        except Exception:  # noqa: BLE001 - the original error is the one to report
            pass
        raise
    elapsed = time.monotonic() - started
    db.notice(f"pgml.run_vectorizer: {name}: done, {items} rows in {elapsed:.1f} s: {totals.synced} synced "
              f"({totals.embedded} chunks embedded, {totals.unchanged} unchanged), {totals.removed} removed, "
              f"{totals.failed} failed")


def _finish(db, vectorizer: int, owner: str, error: str | None) -> None:
    """The run's end recorded; a complete rebuild swapped in (as the owner, in this transaction)."""
    rows = db.execute("SELECT * FROM pgml._vectorizer_finish($1, $2)", [vectorizer, error], ["int8", "text"])
    if not rows:
        return
    old, new = rows[0]["old_table"], rows[0]["new_table"]
    try:
        with db.subtransaction():
            _swap(db, old, new, rows[0]["schema"], rows[0]["table_name"])
            db.execute("SELECT pgml._vectorizer_swapped($1)", [vectorizer], ["int8"])
    except SqlError as exc:
        message = (f"the rebuilt embeddings in {new} could not replace {old}: {one_line(exc.message)}"
                   + (f" ({exc.detail})" if exc.detail else ""))
        db.execute("SELECT FROM pgml._vectorizer_finish($1, $2)", [vectorizer, message], ["int8", "text"])
        db.notice(f"pgml.run_vectorizer: {message}")
        return
    db.notice(f"pgml.run_vectorizer: the rebuilt embeddings replaced {old}")


def _swap(db, old: str | None, new: str, schema: str, table_name: str) -> None:
    """Drop old, and give new its name, its primary key's name and old's grants."""
    grants = []
    if old is not None:
        grants = db.execute(
            "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.quote_ident(r.rolname) END AS role, "
            "a.privilege_type, a.is_grantable FROM pg_catalog.pg_class c CROSS JOIN pg_catalog.aclexplode(c.relacl) a "
            "LEFT JOIN pg_catalog.pg_roles r ON r.oid = a.grantee "
            "WHERE c.oid = $1::pg_catalog.regclass AND a.grantee <> c.relowner", [old], ["text"])
        db.execute(f"DROP TABLE {old}")
    db.execute(f"ALTER TABLE {new} RENAME TO {db.quote_ident(table_name)}")
    table = f"{db.quote_ident(schema)}.{db.quote_ident(table_name)}"
    for con in db.execute("SELECT conname FROM pg_catalog.pg_constraint WHERE conrelid = $1::pg_catalog.regclass "
                          "AND contype = 'p'", [table], ["text"]):
        db.execute(f"ALTER TABLE {table} RENAME CONSTRAINT {db.quote_ident(con['conname'])} "
                   f"TO {db.quote_ident(table_name + '_pkey')}")
    for grant in grants:
        db.execute(f"GRANT {grant['privilege_type']} ON {table} TO {grant['role']}"
                   + (" WITH GRANT OPTION" if grant["is_grantable"] else ""))
