"""pgml.deploy: a model by id (deploy it, or roll back to it), or one chosen by strategy; and the
deployment decision of a tune."""

from __future__ import annotations

import json

from ...errors import InvalidParameter, ObjectNotInPrerequisiteState, UndefinedObject
from .. import metrics
from .runs import find_project


def deployed_model(db, project_id: int):
    """The project's deployed model: {id, metrics}, None when it has none."""
    rows = db.execute("SELECT m.id, m.metrics::text AS metrics FROM pgml.deployments d "
                      "JOIN pgml.models m ON m.id = d.model_id WHERE d.project_id = $1 "
                      "ORDER BY d.id DESC LIMIT 1", [project_id], ["int8"])
    if not rows:
        return None
    return {"id": rows[0]["id"], "metrics": json.loads(rows[0]["metrics"] or "null")}


def lock_project(db, project_id: int) -> None:
    """Serializes deployment decisions of concurrent tunes of one project."""
    db.execute("SELECT pgml._registry_lock($1)", [project_id], ["int8"])


def deploy(db, model_id: int, strategy: str):
    """A deployments row for the model (it checks that the model is successful and has files): the
    model's (project, algorithm)."""
    row = db.execute("SELECT * FROM pgml._registry_deploy($1, $2::pgml.strategy)", [model_id, strategy],
                     ["int8", "text"])[0]
    return row["project"], row["algorithm"]


def deploy_model(db, model_id: int) -> list[tuple]:
    """pgml.deploy(model_id): that model becomes its project's deployed model."""
    if model_id is None:
        raise InvalidParameter("model_id must not be NULL")
    project, algorithm = deploy(db, model_id, "specific")
    return [(project, "specific", algorithm)]


def choose(strategy: str, task: str, models: list[dict], current: dict | None, earlier: int | None):
    """The model a strategy deploys among a project's successful models with files (oldest first; each
    {id, algorithm, metrics}): None when none fits. current is the deployed model, earlier the model of
    the deployment before it (rollback)."""
    if strategy == "most_recent":
        return models[-1] if models else None
    if strategy == "best_score":
        chosen = None
        for m in models:
            if chosen is None or metrics.better(task, m["metrics"], chosen["metrics"]):
                chosen = m
        return chosen
    if strategy == "new_score":
        newest = models[-1] if models else None
        if newest is not None and (current is None or (newest["id"] != current["id"] and metrics.better(
                task, newest["metrics"], current["metrics"]))):
            return newest
        return None
    if strategy == "rollback":
        return next((m for m in models if m["id"] == earlier), None)
    raise InvalidParameter(f"unknown strategy {strategy!r}")


def deploy_strategy(db, project_name: str, strategy: str, algorithm: str | None) -> list[tuple]:
    """pgml.deploy(project_name, strategy, algorithm): best_score, most_recent, rollback or new_score."""
    if project_name is None or strategy is None:
        raise InvalidParameter("project_name and strategy must not be NULL")
    project = find_project(db, project_name)
    if project is None:
        raise UndefinedObject(f"there is no project {project_name}")
    if strategy == "specific":
        raise InvalidParameter("the specific strategy deploys one model: call pgml.deploy(model_id)")
    lock_project(db, project["id"])
    candidates = db.execute("SELECT id, algorithm, metrics::text AS metrics FROM pgml.models "
                            "WHERE project_id = $1 AND status = 'successful' AND ($2::text IS NULL "
                            "OR algorithm = $2) AND EXISTS (SELECT 1 FROM pgml.files f "
                            "WHERE f.model_id = pgml.models.id) ORDER BY id", [project["id"], algorithm],
                            ["int8", "text"])
    models = [{"id": r["id"], "algorithm": r["algorithm"], "metrics": json.loads(r["metrics"] or "null")}
              for r in candidates]
    current = deployed_model(db, project["id"])
    earlier = None
    if strategy == "rollback":
        if current is None:
            raise ObjectNotInPrerequisiteState(f"project {project_name} has no deployed model to roll back")
        rows = db.execute("SELECT d.model_id FROM pgml.deployments d JOIN pgml.models m "
                          "ON m.id = d.model_id WHERE d.project_id = $1 AND d.model_id <> $2 "
                          "AND m.status = 'successful' ORDER BY d.id DESC LIMIT 1", [project["id"], current["id"]],
                          ["int8", "int8"])
        if not rows:
            raise ObjectNotInPrerequisiteState(f"project {project_name} has no earlier deployment to roll "
                                               "back to")
        earlier = rows[0]["model_id"]
    chosen = choose(strategy, project["task"], models, current, earlier)
    if chosen is None:
        db.notice(f"pgml.deploy: no model of project {project_name} fits strategy {strategy}")
        return []
    if current is not None and chosen["id"] == current["id"]:
        db.notice(f"pgml.deploy: model {chosen['id']} is already deployed")
    deploy(db, chosen["id"], strategy)
    return [(project_name, strategy, chosen["algorithm"])]
