"""Loading with the datasets library: offline unless a superuser allowed downloads, errors made readable."""

from __future__ import annotations

import os
from contextlib import contextmanager

from ..errors import InvalidParameter, NotSupported, PermissionDenied, PgmlError, UndefinedFile, one_line
from ..settings import Settings
from .arguments import COMPRESSIONS, FILE_FORMATS, Plan, file_format


def _quiet_datasets() -> None:
    import datasets

    datasets.disable_progress_bars()  # tqdm bars and warnings would go to the server log
    datasets.logging.set_verbosity_error()


@contextmanager
def network(allowed: bool):
    """Force datasets and huggingface_hub offline (checked at call time) unless allowed."""
    import datasets.config
    import huggingface_hub.constants as hub

    saved = (datasets.config.HF_HUB_OFFLINE, getattr(datasets.config, "HF_DATASETS_OFFLINE", None),
             hub.HF_HUB_OFFLINE)
    offline = (not allowed) or saved[0] or saved[2]
    datasets.config.HF_HUB_OFFLINE = hub.HF_HUB_OFFLINE = offline
    if saved[1] is not None:
        datasets.config.HF_DATASETS_OFFLINE = offline
    try:
        yield offline
    finally:
        datasets.config.HF_HUB_OFFLINE = saved[0]
        if saved[1] is not None:
            datasets.config.HF_DATASETS_OFFLINE = saved[1]
        hub.HF_HUB_OFFLINE = saved[2]


def datasets_cache(settings: Settings) -> str:
    import datasets.config

    return os.path.expanduser(settings.huggingface_cache or str(datasets.config.HF_DATASETS_CACHE))


def _shown(p: Plan) -> str:
    return f"dataset {p.path[len('hf://datasets/'):]}" if p.kind == "hub" else p.path


def _not_cached(p: Plan, where: str, detail: str | None = None) -> UndefinedFile:
    name = p.path[len("hf://datasets/"):]
    subset = f", {p.subset!r}" if p.subset else ""
    return UndefinedFile(
        f"dataset {name}{' (subset ' + p.subset + ')' if p.subset else ''} is not in the database server's "
        f"datasets cache ({where})",
        detail=detail,
        hint=(f"Load it once where the hub is reachable (python -c \"import datasets; "
              f"datasets.load_dataset('{name}'{subset})\") and copy that datasets cache to the server, load its "
              "files from a path on the server instead, or let a superuser allow downloads: "
              "UPDATE pgml.settings SET value = 'true' WHERE name = 'hub_downloads'."))


_C_CSV_PARSER_WORKS = None


def pandas_c_parser_works() -> bool:
    """Whether pandas' C CSV parser works in this process.

    Inside a PostgreSQL backend it does not: the postgres executable exports a function
    named parser_init, and pandas' tokenizer library calls its own parser_init through the
    dynamic linker, which binds it to the server's; every read_csv then fails with
    "Error tokenizing data. C error: out of memory". pandas' Python engine is used instead
    (about 0.35 s per 100k rows here, against 0.04 s for the C one).
    """
    global _C_CSV_PARSER_WORKS
    if _C_CSV_PARSER_WORKS is None:
        import io

        import pandas

        try:
            _C_CSV_PARSER_WORKS = len(pandas.read_csv(io.StringIO("a,b\n1,2\n"), engine="c")) == 1
        except Exception:  # noqa: BLE001 - any failure means: do not use it
            _C_CSV_PARSER_WORKS = False
    return _C_CSV_PARSER_WORKS


def _library_error(exc: BaseException) -> BaseException:
    """The exception that says what went wrong: DatasetGenerationError only wraps it."""
    while type(exc).__name__ == "DatasetGenerationError" and exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def read(p: Plan, settings: Settings, cache_dir: str | None = None):
    """The dataset (a Dataset or DatasetDict) as datasets.load_dataset gives it, errors made readable."""
    import datasets

    _quiet_datasets()
    options = dict(p.options)
    path = p.path
    if p.kind == "path":
        if not os.path.exists(p.path):
            raise UndefinedFile(f"{p.path} does not exist on the database server",
                                hint="Local files are read by the server's OS user, like COPY FROM a file.")
        if not os.access(p.path, os.R_OK):
            raise UndefinedFile(f"{p.path} is not readable by the database server's OS user",
                                hint=f"chmod a+r {p.path} (and a+x on the folders above it)")
        if not os.path.isdir(p.path):  # a folder goes to datasets as it is; a file through its format's builder
            found = file_format(p.path)
            if found is None:
                raise InvalidParameter(
                    f"cannot tell the format of {p.path} from its name",
                    hint=f"Known: {', '.join(FILE_FORMATS)} (optionally {', '.join(COMPRESSIONS)}); or pass "
                         "source => 'csv' (json, parquet, ...) with kwargs {\"data_files\": \"/path\"}.")
            path, defaults = found
            options = {**defaults, **options, "data_files": p.path}
    if path == "csv" and "engine" not in options and not pandas_c_parser_works():
        options["engine"] = "python"
    options.setdefault("cache_dir", cache_dir)
    where = options["cache_dir"] or datasets_cache(settings)
    with network(settings.hub_downloads) as offline:
        try:
            try:
                return datasets.load_dataset(path, p.subset, split=p.split, **options)
            except Exception as exc:  # noqa: BLE001 - unwrapped, then sorted below
                cause = _library_error(exc)
                if cause is exc:
                    raise
                raise cause from None
        except PgmlError:
            raise
        except ConnectionError as exc:  # OfflineModeIsEnabled is one too
            if p.kind == "hub" and offline:
                raise _not_cached(p, where) from None
            if offline:
                raise UndefinedFile(f"loading {_shown(p)} needs the network, which is off: {one_line(exc)}",
                                    hint="A superuser can allow downloads: UPDATE pgml.settings SET value = "
                                         "'true' WHERE name = 'hub_downloads'.") from None
            raise UndefinedFile(f"could not reach the Hugging Face Hub for {_shown(p)}: {one_line(exc)}",
                                hint="hub_downloads is on but the hub did not answer the database server; or fill "
                                     "the server's datasets cache where the hub is reachable.") from None
        except FileNotFoundError as exc:  # DatasetNotFoundError, DataFilesNotFoundError, EmptyDatasetError
            raise UndefinedFile(f"load_dataset: {one_line(exc)}") from None
        except PermissionError as exc:  # like COPY FROM a file the server's OS user cannot open
            raise PermissionDenied(
                f"load_dataset: the database server's OS user may not use {exc.filename or one_line(exc)}",
                hint=f"It must be able to read the data and to write the datasets cache ({where}): datasets "
                     "keeps lock files there.") from None
        except ValueError as exc:
            if p.kind == "hub" and offline and "Couldn't find cache for" in str(exc):
                raise _not_cached(p, where, detail=str(exc)) from None
            raise InvalidParameter(f"load_dataset: {one_line(exc)}",
                                   detail=str(exc) if "\n" in str(exc) else None) from None
        except ImportError as exc:  # e.g. http data_files (aiohttp), image features (Pillow)
            raise NotSupported(f"load_dataset: {one_line(exc)}",
                               hint="That needs a package this install does not include.") from None
        except RuntimeError as exc:
            if "no longer supported" in str(exc):
                raise NotSupported(f"load_dataset: {one_line(exc)}",
                                   hint="Load the dataset's data files (parquet, csv, json) instead.") from None
            raise


def parts_of(p: Plan, loaded) -> list:
    """The Datasets whose rows go into the table, in order (PostgresML concatenated a DatasetDict's splits)."""
    import datasets

    if isinstance(loaded, datasets.DatasetDict):
        if p.limit is not None and p.split is None and "train" in loaded:
            return [loaded["train"]]  # PostgresML read split=f"train[:{limit}]"
        return list(loaded.values())
    if isinstance(loaded, datasets.Dataset):
        return [loaded]
    raise NotSupported(f"datasets.load_dataset returned a {type(loaded).__name__}")
