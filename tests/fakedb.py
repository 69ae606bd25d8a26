"""A db.Database in memory, for the logic over the database tested without PostgreSQL.

Statements are answered by handlers matched on a fragment of their SQL text (the latest added
wins); every statement, NOTICE and commit is recorded for the test to look at.
"""

from __future__ import annotations

import re
from contextlib import contextmanager


class FakeCursor:
    def __init__(self, rows: list[dict]):
        self._rows = list(rows)
        self.closed = False

    def fetch(self, count: int) -> list[dict]:
        taken, self._rows = self._rows[:count], self._rows[count:]
        return taken

    def close(self) -> None:
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FakeDatabase:
    def __init__(self):
        self._answers: list[tuple[str, object]] = []
        self.statements: list[tuple[str, list]] = []
        self.notices: list[str] = []
        self.warnings: list[str] = []
        self.commits: list[str] = []
        self.rollbacks = 0
        self.pinned = False
        self.relations: dict[str, int] = {}
        self.cursors: list[FakeCursor] = []

    def on(self, fragment: str, answer) -> FakeDatabase:
        """Answer statements containing fragment with answer: rows, or a function of the params giving rows
        (or raising, as the server would)."""
        self._answers.append((fragment, answer))
        return self

    def ran(self, fragment: str) -> list[list]:
        """The params of each statement run so far that contains fragment."""
        return [params for sql, params in self.statements if fragment in sql]

    def execute(self, sql, params=(), types=()):
        self.statements.append((sql, list(params)))
        for fragment, answer in reversed(self._answers):
            if fragment in sql:
                rows = answer(list(params)) if callable(answer) else answer
                return [dict(r) for r in rows or []]
        return []

    def cursor(self, sql, params=(), types=()):
        cursor = FakeCursor(self.execute(sql, params, types))
        self.cursors.append(cursor)
        return cursor

    @contextmanager
    def subtransaction(self):
        yield

    def notice(self, message: str) -> None:
        self.notices.append(message)

    def warning(self, message: str) -> None:
        self.warnings.append(message)

    def debug(self, message: str) -> None:
        pass

    def commit(self, doing: str, hint: str) -> None:
        self.commits.append(doing)

    def rollback(self) -> None:
        self.rollbacks += 1

    def pin_search_path(self) -> None:
        self.pinned = True

    def regclass(self, name: str) -> int:
        return self.relations[name]

    def quote_ident(self, name: str) -> str:
        if re.fullmatch(r"[a-z_][a-z0-9_$]*", name):
            return name
        return '"' + name.replace('"', '""') + '"'

    def quote_literal(self, value: str) -> str:
        return "'" + value.replace("'", "''") + "'"

    def check_interrupts(self) -> None:
        pass
