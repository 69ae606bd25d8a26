"""The database as the package sees it: one small interface, so the logic over it runs without PostgreSQL.

server.py hands each call a `Database` over PL/Python's plpy (`server.PlpyDatabase`, the only code that
calls plpy); the unit tests hand the same logic a fake. Statements take bound parameters ($1, $2, ...)
with their types; identifiers that become SQL text go through quote_ident, values through
quote_literal or, better, parameters.
"""

from __future__ import annotations

from typing import Protocol, Sequence

# The procedures that commit cannot carry SET search_path: each of their transactions pins it (pin_search_path).
PINNED_SEARCH_PATH = "pg_catalog, pg_temp"


class SqlError(Exception):
    """A statement the server refused inside Database.subtransaction() (which rolled back its work)."""

    def __init__(self, message: str, sqlstate: str | None, detail: str | None = None):
        super().__init__(message)
        self.message, self.sqlstate, self.detail = message, sqlstate, detail


class Cursor(Protocol):
    """A server-side cursor: rows in batches, without holding them all."""

    def fetch(self, count: int) -> list[dict]:
        """Up to count more rows (an empty list at the end)."""

    def close(self) -> None: ...

    def __enter__(self) -> Cursor: ...

    def __exit__(self, *exc) -> None: ...


class Database(Protocol):
    def execute(self, sql: str, params: Sequence = (), types: Sequence[str] = ()) -> list[dict]:
        """The rows (column name -> value) of one statement; its plan is prepared once and kept."""

    def cursor(self, sql: str, params: Sequence = (), types: Sequence[str] = ()) -> Cursor:
        """A cursor over the statement's rows (close it, or use it as a context manager)."""

    def subtransaction(self):
        """A context manager: a statement that fails inside it raises SqlError, its work rolled back, and the
        transaction goes on."""

    def notice(self, message: str) -> None:
        """A NOTICE to the client, now."""

    def warning(self, message: str) -> None:
        """A WARNING to the client (and the server log), now."""

    def debug(self, message: str) -> None:
        """A DEBUG message (the server log or the client, as log_min_messages and client_min_messages say)."""

    def commit(self, doing: str, hint: str) -> None:
        """Commit (a procedure's transaction) and start the next one, search_path pinned again when it was.
        Inside a transaction block a procedure cannot commit: that is InvalidTransactionTermination
        (2D000), "<doing>, so it cannot run inside a transaction block", with hint."""

    def rollback(self) -> None:
        """Roll back (a procedure's transaction) and start the next one, search_path pinned again when it was."""

    def pin_search_path(self) -> None:
        """search_path = PINNED_SEARCH_PATH for the rest of this transaction (and after commit / rollback)."""

    def regclass(self, name: str) -> int:
        """The oid of the relation name means in the current search_path (an SQL error when there is none)."""

    def quote_ident(self, name: str) -> str: ...

    def quote_literal(self, value: str) -> str: ...

    def check_interrupts(self) -> None:
        """Let the server act on a pending cancel or terminate (raising PostgreSQL's error)."""


def create_table(db: Database, name: str, columns: list[tuple[str, str]]) -> str:
    """pgml."<name>" with columns [(name, type)], owned by the calling role, which has no CREATE on
    schema pgml: the SECURITY DEFINER pgml._create_table makes it (for members of pgml_admin). The
    types are resolved as type names, never spliced as SQL. Returns the qualified name."""
    return db.execute("SELECT pgml._create_table($1, $2, $3::pg_catalog.regtype[], current_user) AS name",
                      [name, [c for c, _ in columns], [t for _, t in columns]], ["text", "text[]", "text[]"])[0]["name"]
