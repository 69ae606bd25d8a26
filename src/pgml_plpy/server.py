"""The PL/Python edge: the only module that talks to plpy.

SQL function bodies call these functions with the `plpy` module; each reads the
settings, calls into the pure-Python core and turns any failure into one SQL
ERROR with a SQLSTATE, a hint where useful, and no bare traceback.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone

from . import __version__, interrupts
from .cache import MODELS, Entry, release
from .errors import InstallError, PermissionDenied, PgmlError, to_pgml_error
from .settings import LIMIT_SETTINGS, TRUST_SETTINGS, Settings, defaults, from_rows

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def check_install(plpy, sql_version: str) -> None:
    """The installed SQL functions and the venv's package must be the same release."""
    def check():
        if sql_version != __version__:
            raise InstallError(
                f"pgml SQL functions are version {sql_version} but the venv's pgml_plpy package is {__version__}",
                hint="Re-run the install as a superuser: psql -v venv=/path/to/venv -f sql/install.sql")

    _call(plpy, "install check", check)


def _json_default(value):
    if hasattr(value, "tolist"):  # numpy scalars and arrays, torch tensors
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


_PLANS: dict[str, object] = {}


def _plan(plpy, query: str):
    """A prepared plan, kept for the backend's life."""
    if query not in _PLANS:
        _PLANS[query] = plpy.prepare(query)
    return _PLANS[query]


def _superuser(plpy) -> bool:
    """Whether the calling role is a superuser, from the catalog, never from a GUC: any user can SET a
    pgml.* placeholder."""
    return plpy.execute(_plan(plpy, "SELECT r.rolsuper FROM pg_catalog.pg_roles r "
                                    "WHERE r.rolname = current_user"))[0]["rolsuper"]


def _settings(plpy) -> Settings:
    """The settings for the calling role, with the model cache's caps applied to this backend."""
    rows = plpy.execute(_plan(plpy, "SELECT name, value::text AS value FROM pgml.settings"))
    settings = from_rows(((row["name"], row["value"]) for row in rows), superuser=_superuser(plpy))
    MODELS.limit(settings.max_models, settings.max_model_bytes)
    return settings


def check_setting(plpy, td) -> None:
    """pgml.settings' trigger: a new or changed setting must be a known name with a valid value, and a
    trust setting is added, changed or removed only by a superuser (whatever a role was granted)."""
    def check():
        old, new = td["old"], td["new"]
        changed = old is None or new is None or (old["name"], old["value"]) != (new["name"], new["value"])
        trust = sorted({row["name"] for row in (old, new) if row is not None} & TRUST_SETTINGS)
        if changed and trust and not _superuser(plpy):
            raise PermissionDenied(
                f"pgml.settings: {', '.join(trust)} decides what code or weights the server loads: only a "
                "superuser may change it",
                hint="Members of pgml_admin change the limits: " + ", ".join(sorted(LIMIT_SETTINGS)) + ".")
        if new is not None:
            from_rows([(new["name"], new["value"])])

    _call(plpy, "pgml.settings", check)


def _use_threads(settings: Settings) -> None:
    from .runtimes.backend import use_threads

    use_threads(settings)


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


def _call(plpy, doing: str, fn, *args, **kwargs):
    interrupts.bind(plpy)
    try:
        result = fn(*args, **kwargs)
        # A cancel that came after the last check is acted on now, in this statement,
        # rather than left pending for the next one.
        interrupts.check(force=True)
        return result
    except Exception as exc:  # noqa: BLE001 - every failure becomes one SQL error (a cancel keeps 57014)
        _report(plpy, to_pgml_error(exc, doing))


def transform(plpy, task, args, inputs, *, task_is_json: bool, inputs_are_json: bool) -> str:
    def run():
        from .transform import transform as run_transform

        settings = _settings(plpy)
        result = run_transform(task, args, inputs, task_is_json=task_is_json, inputs_are_json=inputs_are_json,
                               settings=settings, deployed=lambda name: _deployed(plpy, name, settings))
        return json.dumps(result, default=_json_default)

    return _call(plpy, "transform", run)


def transform_stream(plpy, task, args, inputs, *, task_is_json: bool, inputs_are_json: bool):
    def pieces():
        from .transform import transform_stream as run_stream

        settings = _settings(plpy)
        for piece in run_stream(task, args, inputs, task_is_json=task_is_json, inputs_are_json=inputs_are_json,
                                settings=settings, deployed=lambda name: _deployed(plpy, name, settings)):
            yield json.dumps([piece])

    return _stream(plpy, "transform_stream", pieces)


_NO_ROWS = object()


def _stream(plpy, doing: str, make):
    """_call for set-returning functions: rows one at a time, failures as one SQL error.

    The first row is computed before returning, so that bad arguments fail the call itself
    (PL/Python reports an error raised while iterating as "error fetching next item from
    iterator", with the real message only in DETAIL).
    """
    rows = iter(_call(plpy, doing, make))
    first = _call(plpy, doing, next, rows, _NO_ROWS)

    def rest():
        if first is _NO_ROWS:
            return
        yield first
        interrupts.bind(plpy)
        try:
            yield from rows
            interrupts.check(force=True)
        except GeneratorExit:
            raise  # the cursor was closed: the rows' own cleanup stops the work
        except Exception as exc:  # noqa: BLE001 - every failure becomes one SQL error (a cancel keeps 57014)
            _report(plpy, to_pgml_error(exc, doing))

    return rest()


def _rows(entries: list[Entry]) -> list[tuple]:
    """loaded_models' columns for cache entries."""
    def when(seconds: float) -> datetime:
        return datetime.fromtimestamp(seconds, timezone.utc)

    return [(e.kind, e.task, e.model, e.device, e.dtype, e.bytes, e.load_seconds, when(e.loaded_at),
             when(e.last_used), e.hits) for e in entries]


def loaded_models(plpy) -> list[tuple]:
    return _rows(MODELS.entries())


def unload(plpy, model, task) -> list[tuple]:
    """Unload every model loaded under that name (and task, when given); rows of what was freed."""
    return _call(plpy, "unload", lambda: _rows(MODELS.unload(
        lambda e: e.model == model and (task is None or e.task == task))))


def clear_cache(plpy) -> list[tuple]:
    return _call(plpy, "clear_cache", lambda: _rows(MODELS.unload(lambda e: True)))


def clear_gpu_cache(plpy, memory_usage) -> bool:
    """PostgresML's: empty the CUDA cache (when its use is at least memory_usage of the GPU)."""
    def run():
        import torch

        if not torch.cuda.is_available():
            return False
        used = torch.cuda.memory_reserved() / torch.cuda.get_device_properties(0).total_memory
        if memory_usage is not None and used < memory_usage:
            return False
        release()
        return True

    return _call(plpy, "clear_gpu_cache", run)


def preload(plpy, task) -> list[tuple]:
    """Load a transform task's model (task: a name or JSON text) ahead of its first call; its row."""
    def run():
        from .inputs import parse_task
        from .runtimes.backend import load_task
        from .transform import task_of

        settings = _settings(plpy)

        def deployed(model):
            return _deployed(plpy, model, settings)

        spec = parse_task(task, is_json=False)
        name, _, model = task_of(spec, {}, settings, deployed)
        loaded = load_task(name, model, spec.options, settings, deployed)
        return _rows([MODELS.entry_of(loaded)])

    return _call(plpy, "preload", run)


def preload_embed(plpy, transformer, kwargs) -> list[tuple]:
    """Load pgml.embed's model ahead of its first call; its loaded_models row."""
    def run():
        from .embeddings import embed_request, load_embedder
        from .runtimes.backend import use_threads

        settings = _settings(plpy)
        use_threads(settings)
        request = embed_request(transformer, [], kwargs, settings)
        return _rows([MODELS.entry_of(load_embedder(request.model, request.build, settings))])

    return _call(plpy, "preload_embed", run)


def version() -> str:
    return __version__


def setting_defaults() -> list[tuple[str, str, str]]:
    return defaults()


def python_package_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version(name)
    except PackageNotFoundError:
        return None


def validate_python_dependencies(plpy) -> list[tuple[str, str]]:
    """(distribution, version) for each dependency; an error names any that is missing."""
    from .validate import dependencies

    return _call(plpy, "validate_python_dependencies", dependencies)


def validate(plpy) -> list[tuple[str, bool, str]]:
    """pgml.validate: each part of the installation, whether it works, and what to fix."""
    def run():
        from .validate import checks

        settings = _settings(plpy)
        _use_threads(settings)
        return checks(plpy, settings)

    return _call(plpy, "validate", run)


def embed(plpy, transformer, inputs, kwargs) -> list[str]:
    def run():
        from .embeddings import embed as run_embed

        settings = _settings(plpy)
        return run_embed(transformer, inputs, kwargs, settings)

    return _call(plpy, "embed", run)


def rank(plpy, transformer, query, documents, kwargs):
    def run():
        from .embeddings import rank as run_rank

        settings = _settings(plpy)
        return run_rank(transformer, query, documents, kwargs, settings)

    return _call(plpy, "rank", run)


def embed_table(plpy, relation, text_column, embedding_column, transformer, kwargs, batch_size) -> None:
    def run():
        from .embed_table import run as run_embed_table

        settings = _settings(plpy)
        # PL/Python hands a regclass over as its name: resolve it in the caller's search_path.
        oid = plpy.execute(plpy.prepare("SELECT $1::pg_catalog.regclass::pg_catalog.oid AS oid", ["text"]),
                           [relation])[0]["oid"]
        run_embed_table(plpy, oid, text_column, embedding_column, transformer, kwargs, batch_size, settings)

    _call(plpy, "embed_table", run)


def nearest(plpy, relation, column_name, query, k, metric) -> list[tuple]:
    """pgml.nearest: (tableoid, ctid, distance) of the k rows nearest to query."""
    from .vectors import nearest as run_nearest

    return _call(plpy, "nearest", run_nearest, plpy, relation, column_name, query, k, metric)


_similarity = None


def similarity(plpy, kind, a, b):
    """pgml.cosine_distance, cosine_similarity, dot_product on two arrays' bytes.

    Called once per row, so with neither _call's interrupt check (a query in itself: the scan
    calling it answers cancels) nor an import statement per call (microseconds each)."""
    global _similarity
    if _similarity is None:
        from .vectors import similarity as _similarity
    try:
        return _similarity(kind, a, b)
    except Exception as exc:  # noqa: BLE001 - bytes that are no array (pgml._similarity called directly) too
        _report(plpy, to_pgml_error(exc, "similarity"))


def chunk(plpy, splitter, text, kwargs) -> list[tuple[int, str]]:
    """pgml.chunk: (chunk_index, chunk) rows, chunk_index from 1."""
    def run():
        from .chunking import chunk as run_chunk

        return run_chunk(splitter, text, kwargs)

    return _call(plpy, "chunk", run)


def load_dataset(plpy, source, subset, limit, kwargs) -> list[tuple[str, int]]:
    """pgml.load_dataset: [(table_name, rows)] after writing pgml."<table_name>"."""
    def run():
        from .datasets_loader import load_dataset as run_load

        return run_load(plpy, source, subset, limit, kwargs, settings=_settings(plpy))

    return _call(plpy, "load_dataset", run)


# ------------------------------------------------------------------------------------ fine-tuning


def _deployed(plpy, name, settings):
    """A tuned model deployed under the project name `name`, for pgml.transform (None: not a project)."""
    from .tuning.registry import deployed

    return deployed(plpy, name, settings)


def tune(plpy, project_name, task, relation_name, y_column_name, model_name, hyperparams, test_size,
         test_sampling, automatic_deploy, materialize_snapshot, *, procedure: bool):
    """pgml._tune (one transaction; relation_name is an oid) and CALL pgml.tune_run (a procedure that
    commits progress as it goes; relation_name is a name in the caller's search_path)."""
    def run():
        from .tuning.run import Call
        from .tuning.run import tune as run_tune

        settings = _settings(plpy)
        _use_threads(settings)
        relation = relation_name
        if procedure and relation_name is not None:
            # before the procedure pins its search_path: the name as the caller sees it
            relation = plpy.execute(plpy.prepare("SELECT $1::pg_catalog.regclass::pg_catalog.oid AS oid",
                                                 ["text"]), [relation_name])[0]["oid"]
        call = Call(project_name, task, relation, y_column_name, model_name, hyperparams, test_size,
                    test_sampling, automatic_deploy, materialize_snapshot)
        result = run_tune(plpy, call, settings, commits=procedure)
        if procedure:
            return (result["model_id"], result["status"], result["deployed"])
        return [(result["status"], result["task"], result["algorithm"], result["deployed"])]

    return _call(plpy, "tune", run)


def sign_models(plpy) -> int:
    """The install's pgml._sign_models(): the server's key made if missing, unsigned models signed."""
    def run():
        from .tuning.registry import sign_unsigned
        from .tuning.signing import create_key

        create_key()
        return sign_unsigned(plpy)

    return _call(plpy, "signing tuned models", run)


def predict(plpy, project, texts, pairs) -> list:
    """pgml.predict / pgml.predict_batch: labels from a tuned (text-pair) classification project."""
    def run():
        from .transform import predict as run_predict

        settings = _settings(plpy)
        return run_predict(project, texts, pairs, settings=settings,
                           deployed=lambda name: _deployed(plpy, name, settings))

    return _call(plpy, "predict", run)


def deploy(plpy, model_id):
    """pgml.deploy(model_id): deploy (or roll back to) one model."""
    def run():
        from .tuning.registry import deploy_model

        return deploy_model(plpy, model_id)

    return _call(plpy, "deploy", run)


def deploy_strategy(plpy, project_name, strategy, algorithm):
    """pgml.deploy(project_name, strategy, algorithm): best_score, most_recent, rollback, new_score."""
    def run():
        from .tuning.registry import deploy_strategy as run_deploy

        return run_deploy(plpy, project_name, strategy, algorithm)

    return _call(plpy, "deploy", run)
