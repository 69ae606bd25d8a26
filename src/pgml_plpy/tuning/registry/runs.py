"""Projects, snapshots and runs: what pgml.tune registers, reports while it trains, and records at its end."""

from __future__ import annotations

from ... import jsontext
from ...db import create_table


def sweep_orphans(db) -> int:
    """Runs left 'in_progress' by a backend that is gone (terminated, crashed) are marked failed."""
    return db.execute("SELECT pgml._registry_sweep() AS n")[0]["n"]


def find_project(db, name: str):
    rows = db.execute("SELECT id, name, task FROM pgml.projects WHERE name = $1", [name], ["text"])
    return rows[0] if rows else None


def create_project(db, name: str, task: str) -> int:
    return db.execute("SELECT pgml._registry_project($1, $2) AS id", [name, task], ["text", "text"])[0]["id"]


def last_snapshot(db, project_id: int):
    rows = db.execute("SELECT s.* FROM pgml.snapshots s JOIN pgml.models m ON m.snapshot_id = s.id "
                      "WHERE m.project_id = $1 ORDER BY m.id DESC LIMIT 1", [project_id], ["int8"])
    return rows[0] if rows else None


def last_base_model(db, project_id: int) -> str | None:
    rows = db.execute("SELECT base_model FROM pgml.models WHERE project_id = $1 ORDER BY id DESC LIMIT 1",
                      [project_id], ["int8"])
    return rows[0]["base_model"] if rows else None


def create_snapshot(db, relation, y_column_name: str | None, test_size: float, sampling: str,
                    columns: dict, analysis: dict, materialize: bool) -> tuple[int, str | None]:
    """A pgml.snapshots row; with materialize a copy of the relation (a data.Relation) in
    pgml.snapshot_<id> (returned), owned by the tuning role and filled with its privileges."""
    snapshot_id = db.execute(
        "SELECT pgml._registry_snapshot($1, $2, $3, $4::pgml.sampling, $5, $6::jsonb, $7::jsonb) AS id",
        [relation.name, [y_column_name] if y_column_name else None, test_size, sampling, materialize,
         jsontext.dumps(columns), jsontext.dumps(analysis)],
        ["text", "text[]", "float4", "text", "bool", "text", "text"])[0]["id"]
    table = None
    if materialize:
        table = create_table(db, f"snapshot_{snapshot_id}", [(c.name, c.type) for c in relation.columns.values()])
        db.execute(f"INSERT INTO {table} SELECT * FROM {relation.name}")
        db.execute(f"COMMENT ON TABLE {table} IS "
                   + db.quote_literal(f"pgml.tune: snapshot {snapshot_id} of {relation.name}"))
    return snapshot_id, table


def start_model(db, project_id: int, snapshot_id: int, task: str, base_model: str, hyperparams: dict,
                lora: bool) -> int:
    return db.execute("SELECT pgml._registry_start($1, $2, $3, $4, $5::jsonb, $6) AS id",
                      [project_id, snapshot_id, task, base_model, jsontext.dumps(hyperparams), lora],
                      ["int8", "int8", "text", "text", "text", "bool"])[0]["id"]


def progress(db, model_id: int, record: dict) -> None:
    """The latest progress on the model's row, and the record appended to pgml.logs."""
    db.execute("SELECT pgml._registry_progress($1, $2::jsonb)", [model_id, jsontext.dumps(record)], ["int8", "text"])


def finish_model(db, model_id: int, metrics: dict, timings: dict, files_mac: str) -> None:
    db.execute("SELECT pgml._registry_finish($1, $2::jsonb, $3::jsonb, $4)",
               [model_id, jsontext.dumps(metrics), jsontext.dumps(timings), files_mac],
               ["int8", "text", "text", "text"])


def fail_model(db, model_id: int, status: str, error: str) -> None:
    db.execute("SELECT pgml._registry_fail($1, $2, $3)", [model_id, status, error], ["int8", "text", "text"])
