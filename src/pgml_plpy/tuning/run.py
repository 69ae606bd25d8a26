"""One tune, from the SQL call to the registry.

Everything that can be wrong with the call or the data is found before any training starts: the task,
hyperparams, the relation and its columns, NULLs (skipped and counted), empty relations, a single class,
the base model. Then the run is registered, trained with progress reports, evaluated on the test split,
stored in pgml.files, and deployed when it beats the project's deployed model.

As a function (pgml.tune) all of that is one transaction: an error or a cancel rolls it all back. As a
procedure (CALL pgml.tune_run) it commits the registered run, each progress report, and the result, so
other sessions can follow it; on an error or a cancel the run is marked failed or cancelled, committed,
and the error re-raised; nothing half-stored is ever deployed.
"""

from __future__ import annotations

import gc
import json
import shutil
import tempfile
import time
from dataclasses import dataclass

from ..errors import InvalidParameter, InvalidTransactionTermination, NullValue, one_line
from ..models import device_for, resolve
from ..settings import Settings
from . import data, metrics, params, registry, signing, tasks, training

ALGORITHM = "transformers"  # pgml.models.algorithm, as PostgresML records a transformers tune


@dataclass
class Call:
    project_name: str
    task: str | None
    relation: int | None          # the relation's oid (resolved in the caller's search_path)
    y_column_name: str | None
    model_name: str | None
    hyperparams: object
    test_size: float
    test_sampling: str
    automatic_deploy: bool
    materialize_snapshot: bool


class Session:
    """Transaction handling of the two forms: the procedure commits, the function does not."""

    def __init__(self, plpy, commits: bool):
        self.plpy = plpy
        self.commits = commits
        if commits:
            registry.pin_search_path(plpy)

    def commit(self) -> None:
        if not self.commits:
            return
        try:
            self.plpy.commit()
        except self.plpy.SPIError as exc:
            if getattr(exc, "sqlstate", None) == "2D000":
                raise InvalidTransactionTermination(
                    "pgml.tune_run commits as it goes, so it cannot run inside a transaction block",
                    hint="CALL it on its own, outside BEGIN ... COMMIT, or use SELECT * FROM pgml.tune(...) "
                         "there.") from None
            raise
        registry.pin_search_path(self.plpy)

    def rollback(self) -> None:
        if self.commits:
            self.plpy.rollback()
            registry.pin_search_path(self.plpy)

    def notice(self, message: str) -> None:
        self.plpy.notice(f"pgml.tune: {message}")


def _status_of(exc: BaseException) -> str:
    return "cancelled" if getattr(exc, "sqlstate", None) == "57014" else "failed"


def _message(exc: BaseException) -> str:
    return one_line(getattr(exc, "message", None) or str(exc) or type(exc).__name__)


def tune(plpy, call: Call, settings: Settings, *, commits: bool) -> dict:
    session = Session(plpy, commits)
    started = time.monotonic()
    if call.project_name is None:
        raise NullValue("project_name must not be NULL")
    if not call.project_name.strip():
        raise InvalidParameter("project_name must not be empty")
    if call.test_sampling is None:
        raise NullValue("test_sampling must not be NULL")
    if registry.sweep_orphans(plpy):
        session.notice("runs of backends that ended were marked failed")
    session.commit()  # the procedure fails here, at once, inside a transaction block

    # --- the call: project, task, hyperparams
    project = registry.find_project(plpy, call.project_name)
    if project is None and call.task is None:
        raise InvalidParameter(f"project {call.project_name} does not exist: pass task to create it")
    task_name = params.canonical_task(call.task) if call.task is not None else project["task"]
    if project is not None and task_name != project["task"]:
        raise InvalidParameter(f"project {call.project_name} is a {project['task']} project, not {task_name}",
                               hint="Tune it with its own task, or use another project name.")
    hp = params.parse(call.hyperparams, task_name)
    model_name = call.model_name or hp.model_name
    if model_name is None and project is not None:
        model_name = registry.last_base_model(plpy, project["id"])
    if not model_name:
        raise InvalidParameter("model_name is required for a project's first tune",
                               hint="Pass a hub id in the server's Hugging Face cache or a model folder.")
    task = tasks.make(call.task if call.task is not None else task_name, hp, call.y_column_name)

    # --- the data
    relation_name, y_column, test_size, sampling = (call.relation, call.y_column_name, call.test_size,
                                                    call.test_sampling)
    snapshot = None
    if relation_name is None:
        snapshot = registry.last_snapshot(plpy, project["id"]) if project is not None else None
        if snapshot is None:
            raise InvalidParameter("relation_name is required for a project's first tune")
        relation_name = (f"pgml.snapshot_{snapshot['id']}" if snapshot["materialized"]
                         else snapshot["relation_name"])
        test_size, sampling = snapshot["test_size"], snapshot["test_sampling"]
        if y_column is None and snapshot["y_column_name"]:
            y_column = snapshot["y_column_name"][0]
        if not hp.dataset_args and snapshot["columns"]:
            hp.dataset_args = json.loads(snapshot["columns"])  # the columns that snapshot was read with
        task = tasks.make(call.task if call.task is not None else task_name, hp, y_column)
        session.notice(f"reusing the project's last data: {relation_name}")
    rel = data.resolve(plpy, relation_name)
    columns = task.bind(rel)
    rows = data.read(plpy, rel, columns, task.optional_roles, pin_scan=commits)
    task.check(rel, rows)
    seed = training.seed_of(hp)
    train_idx, test_idx = data.split(len(rows.values), test_size, sampling, task.labels_for_split(rows), seed)
    read_seconds = time.monotonic() - started
    analysis = {"rows": rows.total, "skipped": rows.skipped, "nulls": rows.nulls, "train_rows": len(train_idx),
                "test_rows": len(test_idx)}
    if rows.other:
        analysis["other_skips"] = rows.other
    if getattr(task, "names", None) and task.task in ("text-classification", "text-pair-classification"):
        counts = {}
        for r in rows.values:
            counts[task.names[task.index[r["label"]]]] = counts.get(task.names[task.index[r["label"]]], 0) + 1
        analysis["classes"] = counts
    for notice in hp.notices + task.notices:
        session.notice(notice)
    session.notice(f"{rel.name}: {rows.total} rows, {len(train_idx)} to train on and {len(test_idx)} to test "
                   f"({sampling})" + (f"; {rows.skipped} skipped: {rows.describe_skips()}" if rows.skipped else "")
                   + f"; {task.describe()}")

    # --- the base model (before anything is registered: a missing model is the caller's error)
    import transformers

    key = signing.load_key()  # the tuned model is signed with it: a missing key fails before any work

    transformers.set_seed(seed)
    source = resolve(model_name, hp.loader, settings)
    model, tokenizer = task.load(source, settings)
    device = device_for(hp.loader)
    train_rows = [rows.values[i] for i in train_idx]
    test_rows = [rows.values[i] for i in test_idx]
    train_features = task.features(model, tokenizer, train_rows)
    test_features = task.features(model, tokenizer, test_rows)
    if not train_features or not test_features:
        raise InvalidParameter("no training or test examples are left after tokenization")
    prepare_seconds = time.monotonic() - started - read_seconds

    # --- registered: from here the procedure's other sessions see the run
    project_id = project["id"] if project is not None else registry.create_project(plpy, call.project_name,
                                                                                   task_name)
    # what this tune read; a reused snapshot is recorded again (its relation, maybe pgml.snapshot_<id>)
    snapshot_id, _ = registry.create_snapshot(plpy, rel, y_column or None, test_size, sampling,
                                              {task.roles[r].key: c for r, c in columns.items()}, analysis,
                                              bool(call.materialize_snapshot) and snapshot is None)
    recorded = hp.record(model_name, call.project_name)
    if task.lora is not None:
        recorded["lora_config"] = task.lora
    model_id = registry.start_model(plpy, project_id, snapshot_id, task_name, model_name, recorded,
                                    task.lora is not None)
    session.commit()
    session.notice(f"model {model_id} of project {call.project_name}: {task_name} on {model_name}"
                   + (" with LoRA adapters" if task.lora is not None else ""))

    output_dir = tempfile.mkdtemp(prefix="pgml_tune_")
    trained = None
    try:
        def report(record: dict) -> None:
            registry.progress(plpy, model_id, record)
            # the training summary and the final test evaluation are logged, not announced
            if "train_runtime" not in record and not any(k.startswith("test_") for k in record):
                eta = record.get("eta_seconds")
                bits = [f"step {record['step']}/{record['total_steps']}"]
                if "loss" in record:
                    bits.append(f"loss {record['loss']:.4f}")
                if "learning_rate" in record:
                    bits.append(f"lr {record['learning_rate']:.2e}")
                if "eval_loss" in record:
                    bits.append(f"eval_loss {record['eval_loss']:.4f}")
                bits.append(f"{record['steps_per_second']:.2f} steps/s")
                if eta is not None:
                    bits.append(f"about {eta:.0f} s left")
                session.notice(", ".join(bits))
            session.commit()

        train_started = time.monotonic()
        trained = training.train(task, model, tokenizer, train_features, test_features, hp, device, output_dir,
                                 report)
        train_seconds = time.monotonic() - train_started
        eval_started = time.monotonic()
        result = task.evaluate(trained.trainer, trained.model, tokenizer, test_rows, test_features)
        eval_seconds = time.monotonic() - eval_started
        result.update({k: trained.train_metrics[k] for k in ("train_loss", "train_runtime",
                                                              "train_steps_per_second", "train_samples_per_second",
                                                              "total_steps") if k in trained.train_metrics})
        result.update({"fit_time": train_seconds, "score_time": eval_seconds, "train_rows": len(train_idx),
                       "test_rows": len(test_idx)})
        saved = tempfile.mkdtemp(prefix="pgml_tune_model_")
        try:
            files = training.save(trained, task, saved)
            store_started = time.monotonic()
            written = registry.store_files(plpy, model_id, saved, files)
            store_seconds = time.monotonic() - store_started
        finally:
            shutil.rmtree(saved, ignore_errors=True)
        timings = {"read_seconds": read_seconds, "prepare_seconds": prepare_seconds, "train_seconds": train_seconds,
                   "eval_seconds": eval_seconds, "store_seconds": store_seconds,
                   "stored_bytes": sum(size for _, _, size in written), "total_seconds": time.monotonic() - started}
        # signed over what this tune wrote, never over what the table holds by now
        files_mac = signing.sign(key, model_id, model_name, task.lora is not None, recorded.get("revision"), written)
        registry.finish_model(plpy, model_id, result, timings, files_mac)

        # --- deploy when it beats the deployed model (compared under the project's lock)
        registry.lock_project(plpy, project_id)
        current = registry.deployed_model(plpy, project_id)
        target, _ = metrics.target(task_name)
        deploy = bool(call.automatic_deploy) and (current is None or metrics.better(task_name, result,
                                                                                     current["metrics"]))
        if deploy:
            registry.deploy(plpy, model_id, "new_score")
        session.commit()
    except BaseException as exc:
        if commits:
            status = _status_of(exc)
            try:
                session.rollback()
                registry.fail_model(plpy, model_id, status, _message(exc))
                session.commit()
            except Exception:  # noqa: BLE001 - the original error is the one to report
                pass
        raise
    finally:
        shutil.rmtree(output_dir, ignore_errors=True)
        del trained, model
        gc.collect()
        _free_device_memory()

    shown = {k: round(v, 4) for k, v in result.items() if k in (target, "accuracy", "f1", "exact_match", "bleu",
                                                                 "rougeL", "perplexity", "eval_loss")}
    before = ""
    if current is not None and (current["metrics"] or {}).get(target) is not None:
        before = f" (deployed model {current['id']}: {target} {current['metrics'][target]:.4f})"
    session.notice(f"model {model_id} done in {time.monotonic() - started:.1f} s: "
                   + ", ".join(f"{k} {v}" for k, v in shown.items())
                   + f" on {len(test_idx)} test rows; "
                   + ("deployed" if deploy else "not deployed") + before)
    return {"status": "successful", "task": task_name, "algorithm": ALGORITHM, "deployed": deploy,
            "model_id": model_id}


def _free_device_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
