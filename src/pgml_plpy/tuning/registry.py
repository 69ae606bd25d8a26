"""The model registry in the database, and serving a deployed model by its project's name.

Tables (sql/functions/tune.sql): pgml.projects (a name and its task), pgml.snapshots (what a tune read),
pgml.models (one tune each: status, base model, hyperparams, metrics, progress, timings),
pgml.deployments (the latest row per project is the deployed model), pgml.files (a model's files as
BYTEA parts with a SHA-256 per part) and pgml.logs (the training logs).

Roles read these tables; nobody but their owner (the installing superuser) writes them. pgml.tune
writes them through the SECURITY DEFINER functions pgml._registry_* (sql/functions/tune.sql), which
check what they touch: a run's rows only from the backend running it, deployments only of successful
models with files.

A deployed model is served from a local folder restored from pgml.files, once its MAC (signing.py)
shows that the server's own tuning wrote it: the folder's name is a hash of the model's file list and
part checksums, every part is checked while it is written, and a folder that is already there is used
only when its files still hash to the parts in the database. A LoRA model is its adapter plus the base
model's id: it is served from a folder whose adapter_config.json points at the base model's local
folder.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import posixpath
import shutil
import tempfile
from pathlib import Path

from ..datasets_loader import create_table
from ..errors import (DataCorrupted, InvalidParameter, IoError, ModelNotFound, ObjectNotInPrerequisiteState,
                      UndefinedObject)
from ..settings import Settings
from . import metrics, signing

PART_SIZE = 32 << 20         # bytes per pgml.files row
MANIFEST = ".pgml_files.json"
STATUSES = ("in_progress", "successful", "failed", "cancelled")
PICKLES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")  # never stored, never restored


def pin_search_path(plpy) -> None:
    """A procedure that commits cannot carry SET search_path: each of its transactions sets it locally."""
    plpy.execute("SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true)")


def _plan(plpy, sql: str, types: list[str]):
    return plpy.prepare(sql, types)


def _json(value) -> str:
    return json.dumps(value, default=_default, allow_nan=False) if value is not None else None


def _default(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def clean(value):
    """value with NaN and infinities (which JSONB cannot hold) replaced by null."""
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------- runs


def sweep_orphans(plpy) -> int:
    """Runs left 'in_progress' by a backend that is gone (terminated, crashed) are marked failed."""
    return plpy.execute("SELECT pgml._registry_sweep() AS n")[0]["n"]


def find_project(plpy, name: str):
    rows = plpy.execute(_plan(plpy, "SELECT id, name, task FROM pgml.projects WHERE name = $1", ["text"]), [name])
    return rows[0] if len(rows) else None


def create_project(plpy, name: str, task: str) -> int:
    plan = _plan(plpy, "SELECT pgml._registry_project($1, $2) AS id", ["text", "text"])
    return plpy.execute(plan, [name, task])[0]["id"]


def last_snapshot(plpy, project_id: int):
    rows = plpy.execute(_plan(plpy, "SELECT s.* FROM pgml.snapshots s JOIN pgml.models m ON m.snapshot_id = s.id "
                                    "WHERE m.project_id = $1 ORDER BY m.id DESC LIMIT 1", ["int8"]), [project_id])
    return rows[0] if len(rows) else None


def last_base_model(plpy, project_id: int) -> str | None:
    rows = plpy.execute(_plan(plpy, "SELECT base_model FROM pgml.models WHERE project_id = $1 "
                                    "ORDER BY id DESC LIMIT 1", ["int8"]), [project_id])
    return rows[0]["base_model"] if len(rows) else None


def create_snapshot(plpy, relation, y_column_name: str | None, test_size: float, sampling: str,
                    columns: dict, analysis: dict, materialize: bool) -> tuple[int, str | None]:
    """A pgml.snapshots row; with materialize a copy of the relation (a data.Relation) in
    pgml.snapshot_<id> (returned), owned by the tuning role and filled with its privileges."""
    plan = _plan(plpy, "SELECT pgml._registry_snapshot($1, $2, $3, $4::pgml.sampling, $5, $6::jsonb, $7::jsonb) "
                       "AS id", ["text", "text[]", "float4", "text", "bool", "text", "text"])
    snapshot_id = plpy.execute(plan, [relation.name, [y_column_name] if y_column_name else None, test_size,
                                      sampling, materialize, _json(columns), _json(analysis)])[0]["id"]
    table = None
    if materialize:
        table = create_table(plpy, f"snapshot_{snapshot_id}", [(c.name, c.type) for c in relation.columns.values()])
        plpy.execute(f"INSERT INTO {table} SELECT * FROM {relation.name}")
        plpy.execute(f"COMMENT ON TABLE {table} IS " + plpy.quote_literal(
            f"pgml.tune: snapshot {snapshot_id} of {relation.name}"))
    return snapshot_id, table


def start_model(plpy, project_id: int, snapshot_id: int, task: str, base_model: str, hyperparams: dict,
                lora: bool) -> int:
    plan = _plan(plpy, "SELECT pgml._registry_start($1, $2, $3, $4, $5::jsonb, $6) AS id",
                 ["int8", "int8", "text", "text", "text", "bool"])
    return plpy.execute(plan, [project_id, snapshot_id, task, base_model, _json(hyperparams), lora])[0]["id"]


_progress_plan = None


def progress(plpy, model_id: int, record: dict) -> None:
    """The latest progress on the model's row, and the record appended to pgml.logs."""
    global _progress_plan
    if _progress_plan is None:
        _progress_plan = plpy.prepare("SELECT pgml._registry_progress($1, $2::jsonb)", ["int8", "text"])
    plpy.execute(_progress_plan, [model_id, _json(clean(record))])


def finish_model(plpy, model_id: int, metrics_: dict, timings: dict, files_mac: str) -> None:
    plpy.execute(_plan(plpy, "SELECT pgml._registry_finish($1, $2::jsonb, $3::jsonb, $4)",
                       ["int8", "text", "text", "text"]),
                 [model_id, _json(clean(metrics_)), _json(clean(timings)), files_mac])


def fail_model(plpy, model_id: int, status: str, error: str) -> None:
    plpy.execute(_plan(plpy, "SELECT pgml._registry_fail($1, $2, $3)", ["int8", "text", "text"]),
                 [model_id, status, error])


# --------------------------------------------------------------------------------------------- files


def check_path(path: str) -> str:
    """A file path from pgml.files, refused unless it stays inside the model's folder."""
    normal = posixpath.normpath(path)
    if (not path or path.startswith("/") or normal != path or normal.startswith("..") or "\\" in path
            or any(part.startswith(".") for part in normal.split("/"))):
        raise DataCorrupted(f"pgml.files holds a path that is not a plain relative file name: {path!r}")
    if normal.endswith(PICKLES):
        raise DataCorrupted(f"pgml.files holds {path!r}, a pickle-based file, which is never restored (loading "
                            "one can run code)", hint="Tuned models are stored as safetensors.")
    return normal


def store_files(plpy, model_id: int, folder: str, files: list[str]) -> list[list]:
    """The files of folder into pgml.files, in parts of PART_SIZE bytes with their SHA-256; returns what
    was written, as manifest() reads it back."""
    plan = _plan(plpy, "SELECT pgml._registry_file($1, $2, $3, $4, $5)", ["int8", "text", "int4", "text", "bytea"])
    written = []
    for rel in sorted(files):
        check_path(rel)
        parts, size = [], 0
        with open(os.path.join(folder, rel), "rb") as fh:
            while True:
                data = fh.read(PART_SIZE)
                if not data and parts:
                    break
                parts.append(hashlib.sha256(data).hexdigest())
                plpy.execute(plan, [model_id, rel, len(parts) - 1, parts[-1], data])
                size += len(data)
                if len(data) < PART_SIZE:
                    break
        written.append([rel, parts, size])
    return written


def manifest(plpy, model_id: int) -> list[list]:
    """[[path, [part sha256, ...], size], ...] of a model's files, without reading their data."""
    rows = plpy.execute(_plan(plpy, "SELECT path, array_agg(sha256 ORDER BY part) AS parts, "
                                    "sum(pg_catalog.octet_length(data))::int8 AS size FROM pgml.files "
                                    "WHERE model_id = $1 GROUP BY path ORDER BY path", ["int8"]), [model_id])
    return [[r["path"], list(r["parts"]), int(r["size"])] for r in rows]


def cache_root(settings: Settings) -> Path:
    """Where restored models live: the setting models_cache, else ~/.cache/pgml_plpy/models of the
    server's OS user, else the temporary folder. Only that user may read it (0700)."""
    if settings.models_cache:
        candidates = [Path(settings.models_cache)]
    else:
        candidates = [Path(os.path.expanduser("~")) / ".cache" / "pgml_plpy" / "models",
                      Path(tempfile.gettempdir()) / f"pgml_plpy-{os.getuid()}" / "models"]
    for root in candidates:
        try:
            root.mkdir(parents=True, exist_ok=True, mode=0o700)
            if os.access(root, os.W_OK | os.X_OK):
                return root
        except OSError:
            continue
    raise IoError(f"the server's OS user cannot write the folder for restored models ({candidates[0]})",
                  hint="A superuser sets the setting models_cache to a folder that user can write: "
                       "UPDATE pgml.settings SET value = '\"/path\"' WHERE name = 'models_cache'.")


def _local_parts(path: Path) -> list[str]:
    parts = []
    with open(path, "rb") as fh:
        while True:
            data = fh.read(PART_SIZE)
            if not data and parts:
                break
            parts.append(hashlib.sha256(data).hexdigest())
            if len(data) < PART_SIZE:
                break
    return parts


def _valid(folder: Path, files: list[list]) -> bool:
    """Whether folder holds exactly the files of the manifest, each hashing to its parts."""
    try:
        if json.loads((folder / MANIFEST).read_text()) != files:
            return False
        for path, parts, size in files:
            local = folder / path
            if local.stat().st_size != size or _local_parts(local) != parts:
                return False
        return True
    except (OSError, ValueError):
        return False


def identity(row) -> tuple:
    """What a model's MAC covers of its pgml.models row (a lookup() row): id, base model, LoRA, revision."""
    return (row["model_id"], row["base_model"], row["lora"], json.loads(row["hyperparams"] or "{}").get("revision"))


def restore(plpy, model, settings: Settings) -> Path:
    """The files of a model (a lookup() row) in a local folder, once its MAC shows that this server's
    tuning wrote them; fetched from pgml.files unless a valid copy is there."""
    model_id = model["model_id"]
    files = manifest(plpy, model_id)
    if not files:
        raise ModelNotFound(f"model {model_id} has no files in pgml.files",
                            hint="Deploy another model of the project: pgml.deploy(model_id).")
    signing.verify(signing.load_key(), *identity(model), files, model["files_mac"])
    for path, _, _ in files:
        check_path(path)
    key = hashlib.sha256(json.dumps(files).encode()).hexdigest()[:40]
    root = cache_root(settings)
    folder = root / key
    if _valid(folder, files):
        return folder
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
    try:
        fetch = _plan(plpy, "SELECT part, sha256, data FROM pgml.files WHERE model_id = $1 AND path = $2 "
                            "ORDER BY part", ["int8", "text"])
        for path, parts, _ in files:
            target = tmp / path
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as fh:
                cursor = plpy.cursor(fetch, [model_id, path])
                try:
                    while True:
                        rows = cursor.fetch(1)
                        if not rows:
                            break
                        row = rows[0]
                        data = bytes(row["data"])
                        if hashlib.sha256(data).hexdigest() != row["sha256"]:
                            raise DataCorrupted(f"pgml.files of model {model_id}: part {row['part']} of {path} "
                                                "does not match its SHA-256",
                                                hint="The stored model is damaged: deploy another model, or "
                                                     "tune again.")
                        fh.write(data)
                finally:
                    cursor.close()
        (tmp / MANIFEST).write_text(json.dumps(files))
        if not _valid(tmp, files):
            raise IoError(f"model {model_id}'s files did not restore intact into {tmp}")
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.rename(tmp, folder)
        except OSError as exc:  # another backend restored it meanwhile
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not _valid(folder, files):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def base_folder(base_model: str, options: dict, settings: Settings) -> str:
    """The local folder of a LoRA adapter's base model (a folder, or a hub id in the server's cache)."""
    from ..models import resolve

    source = resolve(base_model, options, settings)
    if source.is_local:
        return source.name
    from huggingface_hub import snapshot_download

    kwargs = {k: v for k, v in source.hub_kwargs.items() if k in ("revision", "token", "cache_dir",
                                                                  "local_files_only")}
    try:
        return snapshot_download(base_model, **kwargs)
    except Exception as exc:  # noqa: BLE001 - reported as the base model missing
        raise ModelNotFound(f"the base model {base_model} of a LoRA adapter is not available: {exc}".split("\n")[0],
                            hint="The adapter is served on top of its base model, which must be in the "
                                 "server's Hugging Face cache or folder.") from None


def adapter_folder(folder: Path, base: str) -> Path:
    """A folder serving the adapter in folder on top of the base model's folder: links to its files and an
    adapter_config.json whose base_model_name_or_path is base."""
    config = json.loads((folder / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = base
    text = json.dumps(config, indent=2, sort_keys=True)
    target = folder.parent / f"{folder.name}-on-{hashlib.sha256(base.encode()).hexdigest()[:12]}"
    names = sorted(p.name for p in folder.iterdir() if p.name not in (MANIFEST, "adapter_config.json"))
    try:
        if (target / "adapter_config.json").read_text() == text and all(
                (target / n).resolve() == (folder / n).resolve() for n in names):
            return target
    except OSError:
        pass
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=folder.parent))
    try:
        for name in names:
            os.symlink(folder / name, tmp / name)
        (tmp / "adapter_config.json").write_text(text)
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.rename(tmp, target)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# ------------------------------------------------------------------------------------------- serving

_lookup_plan = None


def lookup(plpy, name: str):
    """The deployment serving the project called name: (project, task, model_id, base_model, lora, hyperparams,
    files_mac), None when no project has that name; an error when the project has nothing deployed."""
    global _lookup_plan
    if _lookup_plan is None:
        _lookup_plan = plpy.prepare(
            "SELECT p.name, p.task, d.model_id, m.base_model, m.lora, m.hyperparams::text AS hyperparams, "
            "m.files_mac "
            "FROM pgml.projects p LEFT JOIN LATERAL (SELECT model_id FROM pgml.deployments "
            "WHERE project_id = p.id ORDER BY id DESC LIMIT 1) d ON true "
            "LEFT JOIN pgml.models m ON m.id = d.model_id WHERE p.name = $1", ["text"])
    rows = plpy.execute(_lookup_plan, [name])
    if not len(rows):
        return None
    row = rows[0]
    if row["model_id"] is None:
        raise ObjectNotInPrerequisiteState(f"project {name} has no deployed model",
                                           hint="Its tunes have not finished or none beat the deployed one; see "
                                                "pgml.tune_runs, and deploy one with pgml.deploy(model_id).")
    return row


def deployed(plpy, name: str, settings: Settings):
    """pgml.transform's view of the registry: a Deployed for a project name, None for anything else."""
    from ..runtimes import Deployed

    row = lookup(plpy, name)
    if row is None:
        return None
    model_id = row["model_id"]

    def folder() -> str:
        local = restore(plpy, row, settings)
        if row["lora"]:
            recorded = json.loads(row["hyperparams"] or "{}")
            options = {k: recorded[k] for k in ("revision",) if recorded.get(k) is not None}
            return str(adapter_folder(local, base_folder(row["base_model"], options, settings)))
        return str(local)

    return Deployed(key=f"{row['name']}@{model_id}", folder=folder, task=row["task"])


def sign_unsigned(plpy) -> int:
    """Signs the successful models with files and no MAC (stored before MACs existed); how many. Run by
    the install, as a superuser, which thereby vouches for those rows."""
    key = signing.load_key()
    rows = plpy.execute("SELECT m.id AS model_id, m.base_model, m.lora, m.hyperparams::text AS hyperparams "
                        "FROM pgml.models m WHERE m.files_mac IS NULL AND m.status = 'successful' "
                        "AND EXISTS (SELECT FROM pgml.files f WHERE f.model_id = m.id) ORDER BY m.id")
    update = _plan(plpy, "UPDATE pgml.models SET files_mac = $2 WHERE id = $1", ["int8", "text"])
    for row in rows:
        plpy.execute(update, [row["model_id"], signing.sign(key, *identity(row), manifest(plpy, row["model_id"]))])
    return len(rows)


# ------------------------------------------------------------------------------------------ deploying


def deployed_model(plpy, project_id: int):
    rows = plpy.execute(_plan(plpy, "SELECT m.id, m.metrics::text AS metrics FROM pgml.deployments d "
                                    "JOIN pgml.models m ON m.id = d.model_id WHERE d.project_id = $1 "
                                    "ORDER BY d.id DESC LIMIT 1", ["int8"]), [project_id])
    if not len(rows):
        return None
    return {"id": rows[0]["id"], "metrics": json.loads(rows[0]["metrics"] or "null")}


def lock_project(plpy, project_id: int) -> None:
    """Serializes deployment decisions of concurrent tunes of one project."""
    plpy.execute(_plan(plpy, "SELECT pgml._registry_lock($1)", ["int8"]), [project_id])


def deploy(plpy, model_id: int, strategy: str):
    """A deployments row for the model (it checks that the model is successful and has files): the
    model's (project, algorithm)."""
    row = plpy.execute(_plan(plpy, "SELECT * FROM pgml._registry_deploy($1, $2::pgml.strategy)",
                             ["int8", "text"]), [model_id, strategy])[0]
    return row["project"], row["algorithm"]


def deploy_model(plpy, model_id: int) -> list[tuple]:
    """pgml.deploy(model_id): that model becomes its project's deployed model."""
    if model_id is None:
        raise InvalidParameter("model_id must not be NULL")
    project, algorithm = deploy(plpy, model_id, "specific")
    return [(project, "specific", algorithm)]


def deploy_strategy(plpy, project_name: str, strategy: str, algorithm: str | None) -> list[tuple]:
    """pgml.deploy(project_name, strategy, algorithm): best_score, most_recent, rollback or new_score."""
    if project_name is None or strategy is None:
        raise InvalidParameter("project_name and strategy must not be NULL")
    project = find_project(plpy, project_name)
    if project is None:
        raise UndefinedObject(f"there is no project {project_name}")
    if strategy == "specific":
        raise InvalidParameter("the specific strategy deploys one model: call pgml.deploy(model_id)")
    lock_project(plpy, project["id"])
    candidates = plpy.execute(_plan(plpy, "SELECT id, algorithm, metrics::text AS metrics FROM pgml.models "
                                          "WHERE project_id = $1 AND status = 'successful' AND ($2::text IS NULL "
                                          "OR algorithm = $2) AND EXISTS (SELECT 1 FROM pgml.files f "
                                          "WHERE f.model_id = pgml.models.id) ORDER BY id", ["int8", "text"]),
                              [project["id"], algorithm])
    models = [{"id": r["id"], "algorithm": r["algorithm"], "metrics": json.loads(r["metrics"] or "null")}
              for r in candidates]
    current = deployed_model(plpy, project["id"])
    chosen = None
    if strategy == "most_recent":
        chosen = models[-1] if models else None
    elif strategy == "best_score":
        for m in models:
            if chosen is None or metrics.better(project["task"], m["metrics"], chosen["metrics"]):
                chosen = m
    elif strategy == "new_score":
        newest = models[-1] if models else None
        if newest is not None and (current is None or (newest["id"] != current["id"] and metrics.better(
                project["task"], newest["metrics"], current["metrics"]))):
            chosen = newest
    elif strategy == "rollback":
        if current is None:
            raise ObjectNotInPrerequisiteState(f"project {project_name} has no deployed model to roll back")
        earlier = plpy.execute(_plan(plpy, "SELECT d.model_id FROM pgml.deployments d JOIN pgml.models m "
                                           "ON m.id = d.model_id WHERE d.project_id = $1 AND d.model_id <> $2 "
                                           "AND m.status = 'successful' ORDER BY d.id DESC LIMIT 1",
                                           ["int8", "int8"]), [project["id"], current["id"]])
        if not len(earlier):
            raise ObjectNotInPrerequisiteState(f"project {project_name} has no earlier deployment to roll "
                                               "back to")
        chosen = next((m for m in models if m["id"] == earlier[0]["model_id"]), None)
    else:
        raise InvalidParameter(f"unknown strategy {strategy!r}")
    if chosen is None:
        plpy.notice(f"pgml.deploy: no model of project {project_name} fits strategy {strategy}")
        return []
    if current is not None and chosen["id"] == current["id"]:
        plpy.notice(f"pgml.deploy: model {chosen['id']} is already deployed")
    deploy(plpy, chosen["id"], strategy)
    return [(project_name, strategy, chosen["algorithm"])]
