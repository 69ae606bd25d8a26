"""Small helpers for tests that talk SQL."""

from __future__ import annotations

import psycopg
import pytest
from psycopg.types.json import Jsonb


def one(conn, query, params=None):
    """The first column of the first row."""
    return conn.execute(query, params).fetchone()[0]


def sql_error(conn, query, params=None) -> psycopg.Error:
    """The error a statement raises (it must raise), with the backend still usable after it."""
    with pytest.raises(psycopg.Error) as info:
        conn.execute(query, params)
    assert conn.execute("SELECT 1").fetchone()[0] == 1
    return info.value


def task(name: str, model: str, **options) -> Jsonb:
    return Jsonb({"task": name, "model": model, **options})
