"""Writing pgml."<table>": the table made through pgml._create_table, then filled in batches through one
prepared `INSERT ... SELECT * FROM unnest($1, $2, ...)` with one array per column."""

from __future__ import annotations

import json

from ..db import SqlError, create_table
from ..errors import DuplicateTable, PermissionDenied, PgmlError
from .arguments import Plan
from .sqltypes import converter

# Marks the tables load_dataset made (their comment starts with it): only those are replaced.
TABLE_MARKER = "pgml.load_dataset:"



def _privileges(db) -> dict:
    return db.execute(
        "SELECT r.rolsuper AS superuser,"
        " pg_has_role(current_user, 'pg_read_server_files', 'MEMBER') AS read_files,"
        " pg_has_role(current_user, 'pg_write_server_files', 'MEMBER') AS write_files,"
        " current_user::text AS role"
        " FROM pg_roles r WHERE r.rolname = current_user")[0]


def check_privileges(db, p: Plan) -> None:
    """Local files are read by the server's OS user: like COPY FROM a file, only for those trusted with that."""
    have = _privileges(db)
    if p.reads_server_files and not (have["superuser"] or have["read_files"]):
        raise PermissionDenied(
            f"only superusers and members of pg_read_server_files may load files on the database server "
            f"(role {have['role']})",
            hint="Ask a superuser to GRANT pg_read_server_files TO your role, or load a Hugging Face dataset "
                 "from the server's cache.")
    if p.writes_server_files and not (have["superuser"] or have["write_files"]):
        raise PermissionDenied(
            f"only superusers and members of pg_write_server_files may choose a cache_dir on the database server "
            f"(role {have['role']})", hint="Leave cache_dir out: the server's datasets cache is used.")


def _existing(db, table: str):
    rows = db.execute(
        "SELECT c.relkind::text AS kind, obj_description(c.oid, 'pg_class') AS comment FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'pgml' AND c.relname = $1", [table],
        ["text"])
    return rows[0] if rows else None


def _describe(p: Plan, source: str) -> str:
    bits = [f"{TABLE_MARKER} {source}"]
    if p.subset:
        bits.append(f"subset {p.subset}")
    if p.split:
        bits.append(f"split {p.split}")
    if p.limit is not None:
        bits.append(f"limit {p.limit}")
    return ", ".join(bits)


def write(db, p: Plan, source: str, parts, columns) -> int:
    """Replace (or create) pgml."<table>" and insert the rows; returns the row count."""
    qualified = "pgml." + db.quote_ident(p.table)
    found = _existing(db, p.table)
    if found is not None:
        if found["kind"] not in ("r", "p") or not (found["comment"] or "").startswith(TABLE_MARKER):
            raise DuplicateTable(
                f"pgml.{p.table} already exists and was not made by pgml.load_dataset, so it is left alone",
                hint='Pass another name with kwargs {"table_name": "..."}, or drop it first.')
        try:
            with db.subtransaction():
                db.execute(f"DROP TABLE {qualified}")
        except SqlError as exc:  # a view on it (2BP01), another role's table (42501), ...
            first = "Drop what depends on it first" if exc.sqlstate == "2BP01" else "Only its owner can replace it"
            hint = first + ', or load into another table with kwargs {"table_name": "..."}.'
            # the server's own error, its SQLSTATE kept
            raise PgmlError(f"pgml.{p.table} cannot be replaced: {exc.detail or exc.message}", sqlstate=exc.sqlstate,
                            hint=hint) from None
    create_table(db, p.table, [(name, sql_type) for name, sql_type, _ in columns])
    db.execute(f"COMMENT ON TABLE {qualified} IS {db.quote_literal(_describe(p, source))}")
    from datasets import ClassLabel

    for name, _, feature in columns:
        if isinstance(feature, ClassLabel):
            db.execute(f"COMMENT ON COLUMN {qualified}.{db.quote_ident(name)} IS "
                       f"{db.quote_literal(json.dumps({'class_label': feature.names}, ensure_ascii=False))}")
    names = ", ".join(db.quote_ident(name) for name, _, _ in columns)
    arrays = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    insert = f"INSERT INTO {qualified} ({names}) SELECT * FROM unnest({arrays})"
    types = [f"{sql_type}[]" for _, sql_type, _ in columns]
    rows = 0
    for values in batches(parts, p.limit, columns):
        db.execute(insert, values, types)
        rows += len(values[0])
    return rows


def batches(parts, limit: int | None, columns, target_bytes: int = 16 << 20, max_rows: int = 20000):
    """Yield lists of column value lists (one list per column) of at most max_rows rows, up to limit rows."""
    convert = [converter(sql_type) for _, sql_type, _ in columns]
    names = [name for name, _, _ in columns]
    left = limit
    for part in parts:
        if left is not None and left <= 0:
            break
        table = part.with_format("arrow")
        n = len(table) if left is None else min(len(table), left)
        if n == 0:
            continue
        data = part.data
        avg = max(1, data.nbytes // max(1, data.num_rows))
        step = max(1, min(max_rows, target_bytes // avg))
        for start in range(0, n, step):
            chunk = table[start:min(n, start + step)]
            values = []
            for name, conv in zip(names, convert):
                column = chunk.column(name).to_pylist()
                values.append(conv(column) if conv else column)
            yield values
        if left is not None:
            left -= n
