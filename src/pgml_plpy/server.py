"""The PL/Python edge: the only module that talks to plpy.

SQL function bodies call these functions with the `plpy` module; each reads the
settings, calls into the pure-Python core and turns any failure into one SQL
ERROR with a SQLSTATE, a hint where useful, and no bare traceback.
"""

from __future__ import annotations

import json
import os

from . import __version__, interrupts
from .errors import InstallError, PgmlError, to_pgml_error
from .settings import Settings, defaults, from_rows

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


def _settings(plpy) -> Settings:
    rows = plpy.execute("SELECT name, value::text AS value FROM pgml.settings")
    return from_rows((row["name"], row["value"]) for row in rows)


def _use_threads(settings: Settings) -> None:
    import torch

    if torch.get_num_threads() != settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)


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
        _use_threads(settings)
        result = run_transform(task, args, inputs, task_is_json=task_is_json, inputs_are_json=inputs_are_json,
                               settings=settings)
        return json.dumps(result, default=_json_default)

    return _call(plpy, "transform", run)


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
    from importlib.metadata import PackageNotFoundError, requires
    from importlib.metadata import version as dist_version

    from packaging.requirements import Requirement

    def check():
        found, missing = [], []
        for line in requires("pgml-plpy") or []:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            try:
                installed = dist_version(req.name)
            except PackageNotFoundError:
                missing.append(str(req))
                continue
            if installed not in req.specifier and req.specifier:
                missing.append(f"{req} (found {installed})")
            found.append((req.name, installed))
        if missing:
            raise InstallError(f"the venv lacks {', '.join(missing)}",
                               hint="Re-run scripts/setup.sh (or pip install the package) in the venv.")
        return found

    return _call(plpy, "validate_python_dependencies", check)


def embed(plpy, transformer, inputs, kwargs) -> list[str]:
    def run():
        from .embeddings import embed as run_embed

        settings = _settings(plpy)
        _use_threads(settings)
        return run_embed(transformer, inputs, kwargs, settings)

    return _call(plpy, "embed", run)


def rank(plpy, transformer, query, documents, kwargs):
    def run():
        from .embeddings import rank as run_rank

        settings = _settings(plpy)
        _use_threads(settings)
        return run_rank(transformer, query, documents, kwargs, settings)

    return _call(plpy, "rank", run)


def embed_table(plpy, relation, text_column, embedding_column, transformer, kwargs, batch_size) -> None:
    def run():
        from .embed_table import run as run_embed_table

        settings = _settings(plpy)
        _use_threads(settings)
        # PL/Python hands a regclass over as its name: resolve it in the caller's search_path.
        oid = plpy.execute(plpy.prepare("SELECT $1::pg_catalog.regclass::pg_catalog.oid AS oid", ["text"]),
                           [relation])[0]["oid"]
        run_embed_table(plpy, oid, text_column, embedding_column, transformer, kwargs, batch_size, settings)

    _call(plpy, "embed_table", run)


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
