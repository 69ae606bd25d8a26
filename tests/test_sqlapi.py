"""The SQL API's table (src/pgml_plpy/sqlapi.py): the committed sql/functions are what it generates, and
every entry point it names takes the arguments it is given."""

import inspect

import gen_sql
import pytest

from pgml_plpy import server
from pgml_plpy.sqlapi import AREAS, params


def test_committed_sql_is_generated_from_the_table():
    assert not gen_sql.stale(), f"sql/functions is out of date: run {gen_sql.COMMAND}"


ROUTINES = [r for area in AREAS for r in area.routines]


@pytest.mark.parametrize("routine", [r for r in ROUTINES if r.entry], ids=lambda r: r.identity)
def test_entry_points_take_the_sql_arguments(routine):
    """server.<entry>(plpy, *args, **entry_kwargs) binds: one parameter per IN argument (a trigger: TD)."""
    entry = getattr(server, routine.entry)
    given = ["db"] + (["settings"] if getattr(entry, "reads_settings", False) else [])
    ins = ["TD"] if routine.returns == "trigger" else [p for p in params(routine.signature) if p.mode == "IN"]
    extra = eval(f"dict({routine.entry_kwargs})")  # noqa: S307 - the table's own text
    # an entry point called once per row (similarity) is a plain function of plpy and the arguments
    inspect.signature(getattr(entry, "__wrapped__", entry)).bind(*given, *ins, **extra)


def test_every_routine_is_granted_on_purpose_and_described():
    for r in ROUTINES:
        assert r.summary and r.grant in ("pgml_user", "pgml_admin", "superuser")
    identities = [r.identity for r in ROUTINES]
    assert len(identities) == len(set(identities))


def test_signatures_are_read_as_written():
    ps = params("task text, args jsonb DEFAULT '{}', \"limit\" bigint DEFAULT NULL, INOUT model_id bigint "
                "DEFAULT NULL, a real[] DEFAULT '{1,2}'")
    assert [(p.mode, p.name, p.type, p.default) for p in ps] == [
        ("IN", "task", "text", None), ("IN", "args", "jsonb", "'{}'"), ("IN", '"limit"', "bigint", "NULL"),
        ("INOUT", "model_id", "bigint", "NULL"), ("IN", "a", "real[]", "'{1,2}'")]
