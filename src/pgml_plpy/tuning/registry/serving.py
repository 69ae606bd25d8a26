"""Serving a project's deployed model by its name, for pgml.transform in any backend.

A deployed model is served from a local folder restored from pgml.files (files.py), once its MAC
(signing.py) shows that the server's own tuning wrote it. A LoRA model is its adapter plus the base
model's id: it is served from a folder whose adapter_config.json points at the base model's local folder.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from ...errors import ModelNotFound, ObjectNotInPrerequisiteState
from ...settings import Settings
from .. import signing
from . import files as stored


def lookup(db, name: str):
    """The deployment serving the project called name: (project, task, model_id, base_model, lora, hyperparams,
    files_mac), None when no project has that name; an error when the project has nothing deployed."""
    rows = db.execute(
        "SELECT p.name, p.task, d.model_id, m.base_model, m.lora, m.hyperparams::text AS hyperparams, "
        "m.files_mac "
        "FROM pgml.projects p LEFT JOIN LATERAL (SELECT model_id FROM pgml.deployments "
        "WHERE project_id = p.id ORDER BY id DESC LIMIT 1) d ON true "
        "LEFT JOIN pgml.models m ON m.id = d.model_id WHERE p.name = $1", [name], ["text"])
    if not rows:
        return None
    row = rows[0]
    if row["model_id"] is None:
        raise ObjectNotInPrerequisiteState(f"project {name} has no deployed model",
                                           hint="Its tunes have not finished or none beat the deployed one; see "
                                                "pgml.tune_runs, and deploy one with pgml.deploy(model_id).")
    return row


def identity(row) -> tuple:
    """What a model's MAC covers of its pgml.models row (a lookup() row): id, base model, LoRA, revision."""
    return (row["model_id"], row["base_model"], row["lora"], json.loads(row["hyperparams"] or "{}").get("revision"))


def model_files(db, model) -> list[list]:
    """The manifest of a model (a lookup() row) that can be served: it has files, its MAC shows that this
    server's tuning wrote them, and each is a plain relative path."""
    model_id = model["model_id"]
    files = stored.manifest(db, model_id)
    if not files:
        raise ModelNotFound(f"model {model_id} has no files in pgml.files",
                            hint="Deploy another model of the project: pgml.deploy(model_id).")
    signing.verify(signing.load_key(), *identity(model), files, model["files_mac"])
    for path, _, _ in files:
        stored.check_path(path)
    return files


def restore(db, model, settings: Settings) -> Path:
    """The files of a model (a lookup() row) in a local folder, once its MAC shows that this server's
    tuning wrote them."""
    return stored.restore(db, model["model_id"], model_files(db, model), settings)


def base_folder(base_model: str, options: dict, settings: Settings) -> str:
    """The local folder of a LoRA adapter's base model (a folder, or a hub id in the server's cache)."""
    from ...models import resolve

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
    names = sorted(p.name for p in folder.iterdir() if p.name not in (stored.MANIFEST, "adapter_config.json"))
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


def serving_folder(local: Path, base: dict | None, settings: Settings) -> str:
    """The folder a deployed model loads from: its restored files, or for a LoRA adapter (base set) the
    adapter on top of its base model's local folder."""
    if base is None:
        return str(local)
    return str(adapter_folder(local, base_folder(base["model"], base["options"], settings)))


def deployed(db, name: str, settings: Settings):
    """pgml.transform's view of the registry: a Deployed for a project name, None for anything else.
    The backend loads it from folder(); the shared runtime gets files() and the parts it lacks by read()."""
    from ...runtimes import Deployed

    row = lookup(db, name)
    if row is None:
        return None
    model_id = row["model_id"]
    base = None
    if row["lora"]:
        recorded = json.loads(row["hyperparams"] or "{}")
        base = {"model": row["base_model"],
                "options": {k: recorded[k] for k in ("revision",) if recorded.get(k) is not None}}
    return Deployed(key=f"{row['name']}@{model_id}", task=row["task"],
                    folder=lambda: serving_folder(restore(db, row, settings), base, settings),
                    files=lambda: model_files(db, row),
                    read=lambda path, part: stored.read_part(db, model_id, path, part), base=base)


def sign_unsigned(db) -> int:
    """Signs the successful models with files and no MAC (stored before MACs existed); how many. Run by
    the install, as a superuser, which thereby vouches for those rows."""
    key = signing.load_key()
    rows = db.execute("SELECT m.id AS model_id, m.base_model, m.lora, m.hyperparams::text AS hyperparams "
                      "FROM pgml.models m WHERE m.files_mac IS NULL AND m.status = 'successful' "
                      "AND EXISTS (SELECT FROM pgml.files f WHERE f.model_id = m.id) ORDER BY m.id")
    for row in rows:
        mac = signing.sign(key, *identity(row), stored.manifest(db, row["model_id"]))
        db.execute("UPDATE pgml.models SET files_mac = $2 WHERE id = $1", [row["model_id"], mac], ["int8", "text"])
    return len(rows)
