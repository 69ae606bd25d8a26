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

from ..errors import InvalidParameter, NullValue, one_line
from ..models import device_for, resolve
from ..settings import Settings
from . import data, metrics, params, signing, tasks, training
from .registry import deployments, runs
from .registry import files as stored

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

    def __init__(self, db, commits: bool):
        self.db = db
        self.commits = commits
        if commits:
            # a procedure that commits cannot carry SET search_path: each of its transactions pins it
            db.pin_search_path()

    def commit(self) -> None:
        if self.commits:
            self.db.commit("pgml.tune_run commits as it goes",
                           hint="CALL it on its own, outside BEGIN ... COMMIT, or use SELECT * FROM pgml.tune(...) "
                                "there.")

    def rollback(self) -> None:
        if self.commits:
            self.db.rollback()

    def notice(self, message: str) -> None:
        self.db.notice(f"pgml.tune: {message}")


def _status_of(exc: BaseException) -> str:
    return "cancelled" if getattr(exc, "sqlstate", None) == "57014" else "failed"


def _message(exc: BaseException) -> str:
    return one_line(getattr(exc, "message", None) or str(exc) or type(exc).__name__)


def tune(db, call: Call, settings: Settings, *, commits: bool) -> dict:
    """The five stages: what the call asks for, the data, the base model, the registered run, and its
    training, evaluation, storing and deployment."""
    session = Session(db, commits)
    timer = Timer()
    if call.project_name is None:
        raise NullValue("project_name must not be NULL")
    if not call.project_name.strip():
        raise InvalidParameter("project_name must not be empty")
    if call.test_sampling is None:
        raise NullValue("test_sampling must not be NULL")
    if runs.sweep_orphans(db):
        session.notice("runs of backends that ended were marked failed")
    session.commit()  # the procedure fails here, at once, inside a transaction block

    asked = _asked(db, call)
    found = _data(db, session, call, asked, pin_scan=commits)
    timer.lap("read_seconds")
    key = signing.load_key()  # the tuned model is signed with it: a missing key fails before any work
    base = _base(asked, found, settings)
    timer.lap("prepare_seconds")
    run = _register(db, session, call, asked, found)
    try:
        outcome = _train(db, session, call, asked, found, base, run, key, timer)
    finally:
        base.release()

    target, _ = metrics.target(asked.task_name)
    shown = {k: round(v, 4) for k, v in outcome.metrics.items()
             if k in (target, "accuracy", "f1", "exact_match", "bleu", "rougeL", "perplexity", "eval_loss")}
    before = ""
    current = outcome.replaced
    if current is not None and (current["metrics"] or {}).get(target) is not None:
        before = f" (deployed model {current['id']}: {target} {current['metrics'][target]:.4f})"
    session.notice(f"model {run.model_id} done in {timer.total():.1f} s: "
                   + ", ".join(f"{k} {v}" for k, v in shown.items())
                   + f" on {len(found.test_idx)} test rows; "
                   + ("deployed" if outcome.deployed else "not deployed") + before)
    return {"status": "successful", "task": asked.task_name, "algorithm": ALGORITHM, "deployed": outcome.deployed,
            "model_id": run.model_id}


class Timer:
    """Seconds since the tune started, and the stages' own seconds (pgml.models.timings)."""

    def __init__(self):
        self.started = self.last = time.monotonic()
        self.laps: dict[str, float] = {}

    def mark(self) -> None:
        """A stage starts now."""
        self.last = time.monotonic()

    def lap(self, name: str) -> float:
        """The stage called name ends now: its seconds."""
        now = time.monotonic()
        self.laps[name] = now - self.last
        self.last = now
        return self.laps[name]

    def total(self) -> float:
        return time.monotonic() - self.started


# ------------------------------------------------------------------------ 1. what the call asks for


@dataclass
class Asked:
    project: dict | None         # the project's row, None when this tune creates it
    task_name: str               # the canonical task
    hp: params.Hyperparams
    model_name: str              # the base model


def _asked(db, call: Call) -> Asked:
    """The project, task, hyperparams and base model, checked."""
    project = runs.find_project(db, call.project_name)
    if project is None and call.task is None:
        raise InvalidParameter(f"project {call.project_name} does not exist: pass task to create it")
    task_name = params.canonical_task(call.task) if call.task is not None else project["task"]
    if project is not None and task_name != project["task"]:
        raise InvalidParameter(f"project {call.project_name} is a {project['task']} project, not {task_name}",
                               hint="Tune it with its own task, or use another project name.")
    hp = params.parse(call.hyperparams, task_name)
    model_name = call.model_name or hp.model_name
    if model_name is None and project is not None:
        model_name = runs.last_base_model(db, project["id"])
    if not model_name:
        raise InvalidParameter("model_name is required for a project's first tune",
                               hint="Pass a hub id in the server's Hugging Face cache or a model folder.")
    return Asked(project, task_name, hp, model_name)


# ------------------------------------------------------------------------------------------ 2. the data


@dataclass
class Data:
    task: object                 # the tuning task (tasks.make), bound to the relation's columns
    rel: data.Relation
    columns: dict                # role -> column
    rows: data.Rows
    y_column: str | None
    test_size: float
    sampling: str
    reused: bool                 # read from the project's last snapshot
    seed: int
    train_idx: list[int]
    test_idx: list[int]
    analysis: dict               # what pgml.snapshots.analysis records


def _data(db, session: Session, call: Call, asked: Asked, pin_scan: bool) -> Data:
    """The relation (the call's, or the project's last snapshot), its rows and the train / test split."""
    task_arg = call.task if call.task is not None else asked.task_name
    relation, y_column, test_size, sampling = call.relation, call.y_column_name, call.test_size, call.test_sampling
    hp = asked.hp
    reused = relation is None
    if reused:
        snapshot = runs.last_snapshot(db, asked.project["id"]) if asked.project is not None else None
        if snapshot is None:
            raise InvalidParameter("relation_name is required for a project's first tune")
        relation = f"pgml.snapshot_{snapshot['id']}" if snapshot["materialized"] else snapshot["relation_name"]
        test_size, sampling = snapshot["test_size"], snapshot["test_sampling"]
        if y_column is None and snapshot["y_column_name"]:
            y_column = snapshot["y_column_name"][0]
        if not hp.dataset_args and snapshot["columns"]:
            hp.dataset_args = json.loads(snapshot["columns"])  # the columns that snapshot was read with
        session.notice(f"reusing the project's last data: {relation}")
    task = tasks.make(task_arg, hp, y_column)
    rel = data.resolve(db, relation)
    columns = task.bind(rel)
    rows = data.read(db, rel, columns, task.optional_roles, pin_scan=pin_scan)
    task.check(rel, rows)
    seed = training.seed_of(hp)
    train_idx, test_idx = data.split(len(rows.values), test_size, sampling, task.labels_for_split(rows), seed)
    analysis = {"rows": rows.total, "skipped": rows.skipped, "nulls": rows.nulls, "train_rows": len(train_idx),
                "test_rows": len(test_idx)}
    if rows.other:
        analysis["other_skips"] = rows.other
    if getattr(task, "names", None) and task.task in ("text-classification", "text-pair-classification"):
        counts = {}
        for r in rows.values:
            name = task.names[task.index[r["label"]]]
            counts[name] = counts.get(name, 0) + 1
        analysis["classes"] = counts
    for notice in hp.notices + task.notices:
        session.notice(notice)
    session.notice(f"{rel.name}: {rows.total} rows, {len(train_idx)} to train on and {len(test_idx)} to test "
                   f"({sampling})" + (f"; {rows.skipped} skipped: {rows.describe_skips()}" if rows.skipped else "")
                   + f"; {task.describe()}")
    return Data(task, rel, columns, rows, y_column, test_size, sampling, reused, seed, train_idx, test_idx,
                analysis)


# ------------------------------------------------------------------------------------ 3. the base model


@dataclass
class Base:
    model: object
    tokenizer: object
    device: object
    test_rows: list[dict]
    train_features: list
    test_features: list

    def release(self) -> None:
        """Drop the model and its features and hand their memory back (also while an error propagates,
        whose traceback keeps the frames that hold this object)."""
        self.model = self.tokenizer = None
        self.train_features = self.test_features = []
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _base(asked: Asked, found: Data, settings: Settings) -> Base:
    """The base model loaded and the rows tokenized, before anything is registered: a missing model is the
    caller's error."""
    import transformers

    transformers.set_seed(found.seed)
    source = resolve(asked.model_name, asked.hp.loader, settings)
    model, tokenizer = found.task.load(source, settings)
    train_rows = [found.rows.values[i] for i in found.train_idx]
    test_rows = [found.rows.values[i] for i in found.test_idx]
    train_features = found.task.features(model, tokenizer, train_rows)
    test_features = found.task.features(model, tokenizer, test_rows)
    if not train_features or not test_features:
        raise InvalidParameter("no training or test examples are left after tokenization")
    return Base(model, tokenizer, device_for(asked.hp.loader), test_rows, train_features, test_features)


# ------------------------------------------------------------------------------- 4. the registered run


@dataclass
class Run:
    project_id: int
    model_id: int
    recorded: dict               # pgml.models.hyperparams


def _register(db, session: Session, call: Call, asked: Asked, found: Data) -> Run:
    """The project (made on its first tune), the snapshot of what this tune read and the in_progress run:
    from here the procedure's other sessions see the run."""
    task = found.task
    project_id = (asked.project["id"] if asked.project is not None
                  else runs.create_project(db, call.project_name, asked.task_name))
    # what this tune read; a reused snapshot is recorded again (its relation, maybe pgml.snapshot_<id>)
    snapshot_id, _ = runs.create_snapshot(db, found.rel, found.y_column or None, found.test_size, found.sampling,
                                          {task.roles[r].key: c for r, c in found.columns.items()}, found.analysis,
                                          bool(call.materialize_snapshot) and not found.reused)
    recorded = asked.hp.record(asked.model_name, call.project_name)
    if task.lora is not None:
        recorded["lora_config"] = task.lora
    model_id = runs.start_model(db, project_id, snapshot_id, asked.task_name, asked.model_name, recorded,
                                task.lora is not None)
    session.commit()
    session.notice(f"model {model_id} of project {call.project_name}: {asked.task_name} on {asked.model_name}"
                   + (" with LoRA adapters" if task.lora is not None else ""))
    return Run(project_id, model_id, recorded)


# ------------------------------------------------------- 5. trained, evaluated, stored and deployed


@dataclass
class Outcome:
    metrics: dict                # on the test split (pgml.models.metrics)
    deployed: bool
    replaced: dict | None        # the model deployed before ({id, metrics}), None when there was none


def _progress_notice(record: dict) -> str | None:
    """A training log record as a NOTICE; None for the training summary and the final test evaluation
    (logged, not announced)."""
    if "train_runtime" in record or any(k.startswith("test_") for k in record):
        return None
    bits = [f"step {record['step']}/{record['total_steps']}"]
    if "loss" in record:
        bits.append(f"loss {record['loss']:.4f}")
    if "learning_rate" in record:
        bits.append(f"lr {record['learning_rate']:.2e}")
    if "eval_loss" in record:
        bits.append(f"eval_loss {record['eval_loss']:.4f}")
    bits.append(f"{record['steps_per_second']:.2f} steps/s")
    if record.get("eta_seconds") is not None:
        bits.append(f"about {record['eta_seconds']:.0f} s left")
    return ", ".join(bits)


def _train(db, session: Session, call: Call, asked: Asked, found: Data, base: Base, run: Run, key: bytes,
           timer: Timer) -> Outcome:
    """Training with progress reports, the test split's metrics, the files stored and signed, and the
    deployment when it beats the project's deployed model. The procedure marks a run that fails (or is
    cancelled) so, commits that, and re-raises: nothing half-stored is ever deployed."""
    task, hp = found.task, asked.hp
    output_dir = tempfile.mkdtemp(prefix="pgml_tune_")
    trained = None
    try:
        def report(record: dict) -> None:
            runs.progress(db, run.model_id, record)
            notice = _progress_notice(record)
            if notice is not None:
                session.notice(notice)
            session.commit()

        timer.mark()
        trained = training.train(task, base.model, base.tokenizer, base.train_features, base.test_features, hp,
                                 base.device, output_dir, report)
        train_seconds = timer.lap("train_seconds")
        result = task.evaluate(trained.trainer, trained.model, base.tokenizer, base.test_rows, base.test_features)
        eval_seconds = timer.lap("eval_seconds")
        result.update({k: trained.train_metrics[k] for k in ("train_loss", "train_runtime",
                                                              "train_steps_per_second", "train_samples_per_second",
                                                              "total_steps") if k in trained.train_metrics})
        result.update({"fit_time": train_seconds, "score_time": eval_seconds, "train_rows": len(found.train_idx),
                       "test_rows": len(found.test_idx)})
        saved = tempfile.mkdtemp(prefix="pgml_tune_model_")
        try:
            names = training.save(trained, task, saved)
            timer.mark()
            written = stored.store_files(db, run.model_id, saved, names)
            timer.lap("store_seconds")
        finally:
            shutil.rmtree(saved, ignore_errors=True)
        timings = {**timer.laps, "stored_bytes": sum(size for _, _, size in written), "total_seconds": timer.total()}
        # signed over what this tune wrote, never over what the table holds by now
        files_mac = signing.sign(key, run.model_id, asked.model_name, task.lora is not None,
                                 run.recorded.get("revision"), written)
        runs.finish_model(db, run.model_id, result, timings, files_mac)

        # deployed when it beats the deployed model (compared under the project's lock)
        deployments.lock_project(db, run.project_id)
        current = deployments.deployed_model(db, run.project_id)
        deploy = bool(call.automatic_deploy) and (current is None or metrics.better(asked.task_name, result,
                                                                                     current["metrics"]))
        if deploy:
            deployments.deploy(db, run.model_id, "new_score")
        session.commit()
        return Outcome(result, deploy, current)
    except BaseException as exc:
        if session.commits:
            try:
                session.rollback()
                runs.fail_model(db, run.model_id, _status_of(exc), _message(exc))
                session.commit()
            except Exception:  # noqa: BLE001 - the original error is the one to report
                pass
        raise
    finally:
        shutil.rmtree(output_dir, ignore_errors=True)
        del trained
