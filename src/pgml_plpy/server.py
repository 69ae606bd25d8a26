"""The PL/Python edge: the only module that talks to plpy.

SQL function bodies call the entry points below as `name(plpy, *args)`. Each runs through `entry`:
the call gets a Database over plpy (PlpyDatabase, the only code that calls plpy), interrupts are
bound to it, the settings are read, and any failure becomes one SQL ERROR with a SQLSTATE, a hint
where useful, and no bare traceback.
"""

from __future__ import annotations

import functools
import os
from collections import OrderedDict
from contextlib import contextmanager
from datetime import datetime, timezone

from . import __version__, interrupts, jsontext
from . import threads as torch_threads
from .cache import MODELS, Entry, release
from .db import PINNED_SEARCH_PATH, SqlError
from .errors import InstallError, InvalidTransactionTermination, PermissionDenied, PgmlError, to_pgml_error
from .settings import LIMIT_SETTINGS, TRUST_SETTINGS, Settings, defaults, from_rows

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# Progress bars would only reach the server log (and leave tqdm's monitor thread behind).
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

# ------------------------------------------------------------------------------------- the database

MAX_PLANS = 256  # prepared plans kept per backend, least recently used dropped first
_PLANS: OrderedDict = OrderedDict()


class _PlpyCursor:
    def __init__(self, cursor):
        self._cursor = cursor

    def fetch(self, count: int) -> list[dict]:
        return list(self._cursor.fetch(count))

    def close(self) -> None:
        self._cursor.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class PlpyDatabase:
    """db.Database over PL/Python's plpy, for one call."""

    def __init__(self, plpy):
        self.plpy = plpy
        self._pinned = False

    def _plan(self, sql: str, types):
        key = (sql, tuple(types))
        plan = _PLANS.get(key)
        if plan is None:
            plan = _PLANS[key] = self.plpy.prepare(sql, list(types))
            if len(_PLANS) > MAX_PLANS:
                _PLANS.popitem(last=False)
        else:
            _PLANS.move_to_end(key)
        return plan

    def execute(self, sql, params=(), types=()):
        return list(self.plpy.execute(self._plan(sql, types), list(params)))

    def cursor(self, sql, params=(), types=()):
        return _PlpyCursor(self.plpy.cursor(self._plan(sql, types), list(params)))

    @contextmanager
    def subtransaction(self):
        try:
            with self.plpy.subtransaction():
                yield
        except self.plpy.SPIError as exc:
            spidata = getattr(exc, "spidata", None) or ()
            raise SqlError(str(exc), getattr(exc, "sqlstate", None),
                           spidata[1] if len(spidata) > 1 else None) from None

    def notice(self, message: str) -> None:
        self.plpy.notice(message)

    def warning(self, message: str) -> None:
        self.plpy.warning(message)

    def debug(self, message: str) -> None:
        self.plpy.debug(message)

    def commit(self, doing: str, hint: str) -> None:
        try:
            self.plpy.commit()
        except self.plpy.SPIError as exc:
            if getattr(exc, "sqlstate", None) == "2D000":
                raise InvalidTransactionTermination(f"{doing}, so it cannot run inside a transaction block",
                                                    hint=hint) from None
            raise
        self._repin()

    def rollback(self) -> None:
        self.plpy.rollback()
        self._repin()

    def pin_search_path(self) -> None:
        self.execute("SELECT pg_catalog.set_config('search_path', $1, true)", [PINNED_SEARCH_PATH], ["text"])
        self._pinned = True

    def _repin(self) -> None:
        if self._pinned:
            self.pin_search_path()

    def regclass(self, name: str) -> int:
        return self.execute("SELECT $1::pg_catalog.regclass::pg_catalog.oid AS oid", [name], ["text"])[0]["oid"]

    def quote_ident(self, name: str) -> str:
        return self.plpy.quote_ident(name)

    def quote_literal(self, value: str) -> str:
        return self.plpy.quote_literal(value)

    def check_interrupts(self) -> None:
        self.execute("SELECT 1")


# ----------------------------------------------------------------------------------- entry points


def _superuser(db) -> bool:
    """Whether the calling role is a superuser, from the catalog, never from a GUC: any user can SET a
    pgml.* placeholder."""
    return db.execute("SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user")[0]["rolsuper"]


_last_settings: tuple | None = None  # (rows, superuser, Settings) of the last read


def _settings(db) -> Settings:
    """The settings for the calling role, with the model cache's caps applied to this backend. Rows
    read as the last call read them are not parsed again (a routed call's largest cost after its HTTP)."""
    global _last_settings
    rows = tuple((row["name"], row["value"]) for row in db.execute("SELECT name, value::text AS value "
                                                                    "FROM pgml.settings"))
    superuser = _superuser(db)
    if _last_settings is None or _last_settings[:2] != (rows, superuser):
        _last_settings = (rows, superuser, from_rows(rows, superuser=superuser))
    settings = _last_settings[2]
    MODELS.limit(settings.max_models, settings.max_model_bytes)
    return settings


_sql_error_class = None


def _report(plpy, err: PgmlError):
    """Raise err as a plpy.Error whose report reads "ERROR: pgml: <message>".

    PL/Python prefixes the message with the exception's type ("plpy.Error: ..."); a
    subclass named "pgml" in builtins makes that prefix the product's name. PL/Python
    reads the SQLSTATE, detail and hint from the exception's attributes.
    """
    global _sql_error_class
    if _sql_error_class is None:
        _sql_error_class = type("pgml", (plpy.Error,), {"__module__": "builtins"})
    exc = _sql_error_class(err.message)
    exc.sqlstate, exc.detail, exc.hint = err.sqlstate, err.detail, err.hint
    raise exc


def _bind(db) -> None:
    """This call's Database for the interrupt checks and for torch_threads "auto"'s count of busy backends."""
    interrupts.bind(db)
    torch_threads.bind(db)


def _call(plpy, db, doing: str, fn):
    _bind(db)
    try:
        result = fn()
        # A cancel that came after the last check is acted on now, in this statement,
        # rather than left pending for the next one.
        interrupts.check(force=True)
        return result
    except Exception as exc:  # noqa: BLE001 - every failure becomes one SQL error (a cancel keeps 57014)
        _report(plpy, to_pgml_error(exc, doing))


_NO_ROWS = object()


def _stream(plpy, db, doing: str, make):
    """_call for set-returning functions: rows one at a time, failures as one SQL error.

    The first row is computed before returning, so that bad arguments fail the call itself
    (PL/Python reports an error raised while iterating as "error fetching next item from
    iterator", with the real message only in DETAIL).
    """
    rows = iter(_call(plpy, db, doing, make))
    first = _call(plpy, db, doing, lambda: next(rows, _NO_ROWS))

    def rest():
        if first is _NO_ROWS:
            return
        yield first
        _bind(db)
        try:
            yield from rows
            interrupts.check(force=True)
        except GeneratorExit:
            raise  # the cursor was closed: the rows' own cleanup stops the work
        except Exception as exc:  # noqa: BLE001 - every failure becomes one SQL error (a cancel keeps 57014)
            _report(plpy, to_pgml_error(exc, doing))

    return rest()


def entry(doing: str, *, settings: bool = True, threads: bool = False, streams: bool = False):
    """A PL/Python entry point: the SQL body calls it as name(plpy, *args), the SQL function's arguments in
    their order (sqlapi.py), and it runs as fn(db, settings, *args) (fn(db, *args) where settings=False), with

    - interrupts bound to this call's Database (a cancel reaches the work, and is acted on at its end), and
      threads too (torch_threads "auto" counts the backends at work through it);
    - the settings of the calling role read from pgml.settings;
    - torch's threads set from them before fn when threads (work in this backend outside the model cache;
      routed calls import no torch; a model's load sets them after the load, in runtimes.backend, so that
      torch's import runs on the loading thread, where a cancel reaches it);
    - any failure one SQL error saying `doing`; streams: a set-returning function whose rows come one
      at a time (the first before the call returns)."""
    def wrap(fn):
        @functools.wraps(fn)
        def call(plpy, *args, **kwargs):
            db = PlpyDatabase(plpy)

            def run():
                if not settings:
                    return fn(db, *args, **kwargs)
                current = _settings(db)
                if threads:
                    from .runtimes.backend import use_threads

                    use_threads(current)
                return fn(db, current, *args, **kwargs)

            return (_stream if streams else _call)(plpy, db, doing, run)

        call.reads_settings = settings
        return call

    return wrap


@entry("install check", settings=False)
def check_install(db, sql_version: str) -> None:
    """The installed SQL functions and the venv's package must be the same release."""
    if sql_version != __version__:
        raise InstallError(f"pgml SQL functions are version {sql_version} but the venv's pgml_plpy package is "
                           f"{__version__}",
                           hint="Re-run the install as a superuser: psql -v venv=/path/to/venv -f sql/install.sql")


@entry("pgml.settings", settings=False)
def check_setting(db, td) -> None:
    """pgml.settings' trigger: a new or changed setting must be a known name with a valid value, and a
    trust setting is added, changed or removed only by a superuser (whatever a role was granted)."""
    old, new = td["old"], td["new"]
    changed = old is None or new is None or (old["name"], old["value"]) != (new["name"], new["value"])
    trust = sorted({row["name"] for row in (old, new) if row is not None} & TRUST_SETTINGS)
    if changed and trust and not _superuser(db):
        raise PermissionDenied(
            f"pgml.settings: {', '.join(trust)} decides what code or weights the server loads: only a "
            "superuser may change it",
            hint="Members of pgml_admin change the limits: " + ", ".join(sorted(LIMIT_SETTINGS)) + ".")
    if new is not None:
        from_rows([(new["name"], new["value"])])


@entry("transform")
def transform(db, settings, task, task_is_json: bool, args, inputs, inputs_are_json: bool) -> str:
    from .transform import transform as run

    result = run(task, args, inputs, task_is_json=task_is_json, inputs_are_json=inputs_are_json,
                 settings=settings, deployed=_deployed(db, settings))
    return jsontext.dumps(result)


@entry("transform_stream", streams=True)
def transform_stream(db, settings, task, task_is_json: bool, args, inputs, inputs_are_json: bool):
    from .transform import transform_stream as run

    pieces = run(task, args, inputs, task_is_json=task_is_json, inputs_are_json=inputs_are_json,
                 settings=settings, deployed=_deployed(db, settings))
    return (jsontext.dumps([piece]) for piece in pieces)


def _when(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


def _rows(entries: list[Entry]) -> list[tuple]:
    """loaded_models' columns for this backend's cache entries."""
    return [(e.kind, e.task, e.model, e.device, e.dtype, e.bytes, e.load_seconds, _when(e.loaded_at),
             _when(e.last_used), e.hits, "backend") for e in entries]


@entry("loaded_models")
def loaded_models(db, settings) -> list[tuple]:
    """This backend's models, then those loaded in the runtimes its routes name (the models the
    routes send there); a runtime that cannot be asked is reported as a WARNING."""
    from .runtimes import runtime_of

    rows, asked = _rows(MODELS.entries()), set()
    for route in settings.runtimes:
        runtime = runtime_of(route)
        loaded = getattr(runtime, "loaded", None)  # runtimes that can list their models
        if loaded is None or id(runtime) in asked:
            continue
        asked.add(id(runtime))
        try:
            found, where = loaded()
        except PgmlError as err:
            db.warning(f"pgml.loaded_models: {err.message}")
            continue
        rows += [(e["kind"], e["task"], e["model"], e["device"], e["dtype"], e["bytes"], e["load_seconds"],
                  _when(e["loaded_at"]), _when(e["last_used"]), e["hits"], where)
                 for e in found if route.matches(e["model"], e["task"])]
    return rows


@entry("unload", settings=False)
def unload(db, model, task) -> list[tuple]:
    """Unload every model loaded under that name (and task, when given); rows of what was freed."""
    return _rows(MODELS.unload(lambda e: e.model == model and (task is None or e.task == task)))


@entry("clear_cache", settings=False)
def clear_cache(db) -> list[tuple]:
    return _rows(MODELS.unload(lambda e: True))


@entry("clear_gpu_cache", settings=False)
def clear_gpu_cache(db, memory_usage) -> bool:
    """PostgresML's: empty the CUDA cache (when its use is at least memory_usage of the GPU)."""
    import torch

    if not torch.cuda.is_available():
        return False
    used = torch.cuda.memory_reserved() / torch.cuda.get_device_properties(0).total_memory
    if memory_usage is not None and used < memory_usage:
        return False
    release()
    return True


@entry("preload")
def preload(db, settings, task) -> list[tuple]:
    """Load a transform task's model (task: a name or JSON text) ahead of its first call; its row."""
    from .inputs import parse_task
    from .runtimes.backend import load_task
    from .transform import task_of

    deployed = _deployed(db, settings)
    spec = parse_task(task, is_json=False)
    name, _, model = task_of(spec, {}, settings, deployed)
    loaded = load_task(name, model, spec.options, settings, deployed)
    return _rows([MODELS.entry_of(loaded)])


@entry("preload_embed")
def preload_embed(db, settings, transformer, kwargs) -> list[tuple]:
    """Load pgml.embed's model ahead of its first call; its loaded_models row."""
    from .embeddings import embed_request, load_embedder

    request = embed_request(transformer, [], kwargs, settings)
    return _rows([MODELS.entry_of(load_embedder(request.model, request.build, settings))])


@entry("version", settings=False)
def version(db) -> str:
    return __version__


@entry("setting defaults", settings=False)
def setting_defaults(db) -> list[tuple[str, str, str]]:
    return defaults()


@entry("python_package_version", settings=False)
def python_package_version(db, name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version(name)
    except PackageNotFoundError:
        return None


@entry("validate_python_dependencies", settings=False)
def validate_python_dependencies(db) -> list[tuple[str, str]]:
    """(distribution, version) for each dependency; an error names any that is missing."""
    from .validate import dependencies

    return dependencies()


@entry("validate", threads=True)
def validate(db, settings) -> list[tuple[str, bool, str]]:
    """pgml.validate: each part of the installation, whether it works, and what to fix."""
    from .validate import checks

    return checks(db, settings)


@entry("embed")
def embed(db, settings, transformer, inputs, kwargs) -> list[str]:
    from .embeddings import embed as run

    return run(transformer, inputs, kwargs, settings)


@entry("rank")
def rank(db, settings, transformer, query, documents, kwargs):
    from .embeddings import rank as run

    return run(transformer, query, documents, kwargs, settings)


@entry("embed_table")
def embed_table(db, settings, relation, text_column, embedding_column, transformer, kwargs, batch_size) -> None:
    from .embed_table import run

    # PL/Python hands a regclass over as its name: resolved in the caller's search_path, before run pins it.
    run(db, db.regclass(relation), text_column, embedding_column, transformer, kwargs, batch_size, settings)


@entry("nearest", settings=False)
def nearest(db, relation, column_name, query, k, metric) -> list[tuple]:
    """pgml.nearest: (tableoid, ctid, distance) of the k rows nearest to query."""
    from .vectors import nearest as run

    return run(db, relation, column_name, query, k, metric)


_similarity = None


def similarity(plpy, kind, a, b):
    """pgml.cosine_distance, cosine_similarity, dot_product on two arrays' bytes.

    Called once per row, so not through entry: neither its interrupt check (a query in itself: the scan
    calling it answers cancels) nor its Database, nor an import statement per call (microseconds each)."""
    global _similarity
    if _similarity is None:
        from .vectors import similarity as _similarity
    try:
        return _similarity(kind, a, b)
    except Exception as exc:  # noqa: BLE001 - bytes that are no array (pgml._similarity called directly) too
        _report(plpy, to_pgml_error(exc, "similarity"))


@entry("chunk", settings=False)
def chunk(db, splitter, text, kwargs) -> list[tuple[int, str]]:
    """pgml.chunk: (chunk_index, chunk) rows, chunk_index from 1."""
    from .chunking import chunk as run

    return run(splitter, text, kwargs)


@entry("load_dataset")
def load_dataset(db, settings, source, subset, limit, kwargs) -> list[tuple[str, int]]:
    """pgml.load_dataset: [(table_name, rows)] after writing pgml."<table_name>"."""
    from .datasets_loader import load_dataset as run

    return run(db, source, subset, limit, kwargs, settings=settings)


# ------------------------------------------------------------------------------------ vectorizers


@entry("create_vectorizer")
def create_vectorizer(db, settings, name, source, text_column, model, chunking, kwargs, schedule) -> str:
    from .vectorizer import create

    # PL/Python hands a regclass over as its name, qualified as the pinned search_path shows it.
    return create(db, settings, name, source, text_column, model, chunking, kwargs, schedule)


@entry("alter_vectorizer")
def alter_vectorizer(db, settings, name, model, chunking, kwargs) -> None:
    from .vectorizer import alter

    alter(db, settings, name, model, chunking, kwargs)


@entry("drop_vectorizer", settings=False)
def drop_vectorizer(db, name, drop_table) -> None:
    from .vectorizer import drop

    drop(db, name, drop_table)


@entry("run_vectorizer", settings=False)
def run_vectorizer(db, name) -> None:
    """CALL pgml.run_vectorizer: the settings are read once the run acts as the vectorizer's owner."""
    from .vectorizer import run

    run(db, name, lambda: _settings(db))


# ------------------------------------------------------------------------------------ fine-tuning


def _deployed(db, settings):
    """pgml.transform's lookup of a tuned model deployed under a project name (None: not a project)."""
    def lookup(name):
        from .tuning.registry.serving import deployed

        return deployed(db, name, settings)

    return lookup


@entry("tune", threads=True)
def tune(db, settings, project_name, task, relation_name, y_column_name, model_name, hyperparams, test_size,
         test_sampling, automatic_deploy, materialize_snapshot, *, procedure: bool):
    """pgml._tune (one transaction; relation_name is an oid) and CALL pgml.tune_run (a procedure that
    commits progress as it goes; relation_name is a name in the caller's search_path)."""
    from .tuning.run import Call
    from .tuning.run import tune as run

    relation = relation_name
    if procedure and relation_name is not None:
        relation = db.regclass(relation_name)  # before the procedure pins its search_path: as the caller sees it
    call = Call(project_name, task, relation, y_column_name, model_name, hyperparams, test_size, test_sampling,
                automatic_deploy, materialize_snapshot)
    result = run(db, call, settings, commits=procedure)
    if procedure:
        return (result["model_id"], result["status"], result["deployed"])
    return [(result["status"], result["task"], result["algorithm"], result["deployed"])]


@entry("signing tuned models", settings=False)
def sign_models(db) -> int:
    """The install's pgml._sign_models(): the server's key made if missing, unsigned models signed."""
    from .tuning.registry.serving import sign_unsigned
    from .tuning.signing import create_key

    create_key()
    return sign_unsigned(db)


@entry("predict")
def predict(db, settings, project, texts, pairs) -> list:
    """pgml.predict / pgml.predict_batch: labels from a tuned (text-pair) classification project."""
    from .transform import predict as run

    return run(project, texts, pairs, settings=settings, deployed=_deployed(db, settings))


@entry("deploy", settings=False)
def deploy(db, model_id):
    """pgml.deploy(model_id): deploy (or roll back to) one model."""
    from .tuning.registry.deployments import deploy_model

    return deploy_model(db, model_id)


@entry("deploy", settings=False)
def deploy_strategy(db, project_name, strategy, algorithm):
    """pgml.deploy(project_name, strategy, algorithm): best_score, most_recent, rollback, new_score."""
    from .tuning.registry.deployments import deploy_strategy as run

    return run(db, project_name, strategy, algorithm)
