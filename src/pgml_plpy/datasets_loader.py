"""pgml.load_dataset: a Hugging Face dataset, or files on the database server, into pgml."<name>".

PostgresML's load_dataset(source, subset, limit, kwargs) called
`datasets.load_dataset(source, subset, **kwargs)` (with `split=f"train[:{limit}]"` when
a limit was given), concatenated the splits of a DatasetDict and wrote them into a
new table `pgml."<source>"`. This keeps those semantics and adds:

- no network unless the superuser allowed it (the `hub_downloads` setting): a hub
  dataset comes from the server's datasets cache, and one that is not there is a
  clear error rather than a hang;
- local files (csv, tsv, json, jsonl, parquet, arrow, txt; an absolute path on the
  server) for superusers and members of pg_read_server_files, like COPY FROM a file;
- typed columns from the dataset's Features (ClassLabel names in a column comment)
  and NULLs kept;
- a table is replaced only if an earlier load_dataset made it (its comment says so).

The SQL built here quotes every identifier and binds every value: nothing a caller
passes becomes SQL text. Rows go in by batches through one prepared
`INSERT ... SELECT * FROM unnest($1, $2, ...)` with one array per column.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import json
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field

from .errors import (DuplicateTable, InvalidParameter, NotSupported, NullValue, PermissionDenied, PgmlError,
                     UndefinedFile, one_line)
from .inputs import json_kind, parse_args
from .settings import Settings

# Marks the tables load_dataset made (their comment starts with it): only those are replaced.
TABLE_MARKER = "pgml.load_dataset:"

# PostgreSQL truncates longer identifiers (NAMEDATALEN - 1 bytes).
MAX_IDENTIFIER_BYTES = 63

# file extension -> datasets' packaged builder and its default config
FILE_FORMATS = {
    ".csv": ("csv", {}),
    ".tsv": ("csv", {"sep": "\t"}),
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
    ".ndjson": ("json", {}),
    ".parquet": ("parquet", {}),
    ".arrow": ("arrow", {}),
    ".txt": ("text", {}),
}
COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")

# Value dtypes -> PostgreSQL types; the rest of Value is handled in column_type.
_VALUE_TYPES = {
    "bool": "boolean",
    "int8": "smallint", "int16": "smallint", "uint8": "smallint",
    "int32": "integer", "uint16": "integer",
    "int64": "bigint", "uint32": "bigint",
    "uint64": "numeric",
    "float16": "real", "float32": "real",
    "float64": "double precision",
    "string": "text", "large_string": "text", "string_view": "text",
    "binary": "bytea", "large_binary": "bytea", "binary_view": "bytea",
    "date32": "date", "date64": "date",
    "null": "text",  # a column that is NULL in every row
}

# names every PostgreSQL table already has
_SYSTEM_COLUMNS = {"tableoid", "xmin", "cmin", "xmax", "cmax", "ctid"}

# kwargs that are pgml_plpy's own, never given to datasets.load_dataset
OWN_KWARGS = ("table_name",)


# ---------------------------------------------------------------------------------------------
# Types


def column_type(feature) -> str:
    """The PostgreSQL type of a column holding `feature` (a datasets feature type)."""
    from datasets import ClassLabel, Value

    if isinstance(feature, ClassLabel):
        return "integer"
    if isinstance(feature, Value):
        dtype = feature.dtype
        if dtype in _VALUE_TYPES:
            return _VALUE_TYPES[dtype]
        if dtype.startswith("timestamp["):
            return "timestamptz" if "tz=" in dtype else "timestamp"
        if dtype.startswith(("time32[", "time64[")):
            return "time"
        if dtype.startswith("duration["):
            return "interval"
        if dtype.startswith(("decimal", "large_decimal")):
            return "numeric"
    return "jsonb"  # lists, dicts, Sequence, Translation, Image/Audio (undecoded), ...


def _json_default(value):
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _finite(value):
    """value with NaN and infinities (which JSON cannot hold) replaced by null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def to_json(value) -> str | None:
    if value is None:
        return None
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, default=_json_default)
    except ValueError:
        return json.dumps(_finite(value), ensure_ascii=False, allow_nan=False, default=_json_default)


def _interval(value) -> str | None:
    if value is None:
        return None
    return f"{value.days} days {value.seconds} seconds {value.microseconds} microseconds"


def converter(sql_type: str):
    """A function turning a column's Python values (from Arrow) into what the SQL array takes; None: as is."""
    if sql_type == "jsonb":
        return lambda values: [to_json(v) for v in values]
    if sql_type == "interval":
        return lambda values: [_interval(v) for v in values]
    return None


# ---------------------------------------------------------------------------------------------
# Arguments


@dataclass
class Plan:
    """What to load and where: decided from the arguments before anything is read."""

    kind: str                     # "hub", "path" (a file or folder on the server) or "builder"
    path: str                     # the path argument of datasets.load_dataset
    table: str                    # the table in schema pgml
    subset: str | None
    limit: int | None
    split: str | None
    options: dict = field(default_factory=dict)   # the rest of datasets.load_dataset's arguments
    reads_server_files: bool = False
    writes_server_files: bool = False



def _identifier(name: str, what: str, hint: str = 'Pass another with kwargs {"table_name": "..."}.') -> str:
    if not name or "\x00" in name:
        raise InvalidParameter(f"{what} {name!r} is not a usable PostgreSQL name", hint=hint)
    if len(name.encode("utf-8")) > MAX_IDENTIFIER_BYTES:
        raise InvalidParameter(f"{what} {name!r} is longer than PostgreSQL's {MAX_IDENTIFIER_BYTES} bytes", hint=hint)
    return name


_RENAME_HINT = 'For csv files, rename the columns with kwargs {"column_names": [...], "header": 0}.'


def _file_stem(path: str) -> str:
    name = os.path.basename(path.rstrip("/"))
    for suffix in COMPRESSIONS:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    stem, ext = os.path.splitext(name)
    return stem if ext.lower() in FILE_FORMATS else name


def _file_format(path: str):
    name = os.path.basename(path).lower()
    for suffix in COMPRESSIONS:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return FILE_FORMATS.get(os.path.splitext(name)[1])


def _packaged_builders() -> set[str]:
    try:
        from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES

        return set(_PACKAGED_DATASETS_MODULES)
    except ImportError:  # a datasets release that moved it: the usual ones
        return {"csv", "json", "parquet", "arrow", "text", "pandas", "xml", "webdataset", "imagefolder",
                "audiofolder", "videofolder"}


def _check_kwargs(kwargs: dict) -> tuple[dict, dict]:
    """(pgml_plpy's own kwargs, datasets.load_dataset keyword arguments), with their types checked."""
    own = {k: kwargs.pop(k) for k in OWN_KWARGS if k in kwargs}
    if "table_name" in own and (not isinstance(own["table_name"], str) or not own["table_name"].strip()):
        raise InvalidParameter(f"table_name must be a non-empty string, not {json_kind(own['table_name'])}")
    for name, hint in (("path", "The dataset is the source argument."),
                       ("name", "The dataset configuration is the subset argument."),
                       ("download_config", "download_config is a Python object and cannot be given from SQL.")):
        if name in kwargs:
            raise InvalidParameter(f"kwargs must not contain {name}", hint=hint)
    if kwargs.get("streaming"):
        raise NotSupported("streaming datasets are not supported: the whole table is written in one call",
                           hint="Use the limit argument to load only the first rows.")
    kwargs.pop("streaming", None)
    if kwargs.get("num_proc") not in (None, 1):
        raise NotSupported("num_proc is not supported: it would fork the database backend")
    kwargs.pop("num_proc", None)
    if kwargs.get("trust_remote_code"):
        raise NotSupported("trust_remote_code: datasets no longer runs dataset loading scripts",
                           hint="Load the dataset's data files (parquet, csv, json) instead.")
    kwargs.pop("trust_remote_code", None)
    strings = ("split", "data_dir", "cache_dir", "revision", "download_mode", "verification_mode")
    for name in strings:
        if name in kwargs and not (isinstance(kwargs[name], str) and kwargs[name]):
            raise InvalidParameter(f"{name} must be a non-empty string, not {json_kind(kwargs[name])} "
                                   f"{json.dumps(kwargs[name])}")
    for name in ("keep_in_memory", "save_infos"):
        if name in kwargs and not isinstance(kwargs[name], bool):
            raise InvalidParameter(f"{name} must be true or false, not {json.dumps(kwargs[name])}")
    if "token" in kwargs and not isinstance(kwargs["token"], (str, bool)):
        raise InvalidParameter("token must be a string or a boolean")
    if "storage_options" in kwargs and not isinstance(kwargs["storage_options"], dict):
        raise InvalidParameter("storage_options must be a JSON object")
    if "data_files" in kwargs:
        files = kwargs["data_files"]
        ok = (isinstance(files, str) and files) or (
            isinstance(files, list) and files and all(isinstance(f, str) for f in files)) or (
            isinstance(files, dict) and files and all(
                isinstance(v, str) or (isinstance(v, list) and all(isinstance(f, str) for f in v))
                for v in files.values()))
        if not ok:
            raise InvalidParameter("data_files must be a path, an array of paths, or an object mapping split names "
                                   "to paths", hint='Example: {"data_files": {"train": "/srv/data/train.csv"}}')
    for name in ("download_mode", "verification_mode"):
        if name in kwargs:
            from datasets import DownloadMode, VerificationMode

            enum = DownloadMode if name == "download_mode" else VerificationMode
            choices = [m.value for m in enum]
            if kwargs[name] not in choices:
                raise InvalidParameter(f"{name} must be one of {', '.join(choices)}, not {kwargs[name]!r}")
    if "features" in kwargs:
        from datasets import Features

        if not isinstance(kwargs["features"], dict):
            raise InvalidParameter("features must be a JSON object (datasets' Features.to_dict() form)")
        try:
            kwargs["features"] = Features.from_dict(kwargs["features"])
        except Exception as exc:  # noqa: BLE001 - any malformed features description
            raise InvalidParameter(f"features: {one_line(exc)}",
                                   hint='Example: {"features": {"text": {"dtype": "string", "_type": "Value"}}}') \
                from None
    return own, kwargs


def plan(source, subset=None, limit=None, kwargs=None) -> Plan:
    """Check the arguments and decide what to load; reads nothing."""
    if source is None:
        raise NullValue("source must not be NULL",
                        hint="Pass a Hugging Face dataset name ('stanfordnlp/imdb') or an absolute file path.")
    if not isinstance(source, str) or not source.strip():
        raise InvalidParameter("source must not be empty")
    source = source.strip()
    if subset is not None and not subset.strip():
        subset = None
    if limit is not None and limit < 0:
        raise InvalidParameter(f"limit must not be negative, not {limit}")
    kwargs = parse_args(kwargs, "kwargs", '{"split": "train"}')
    own, options = _check_kwargs(dict(kwargs))
    split = options.pop("split", None)
    reads = any(k in options for k in ("data_files", "data_dir", "storage_options"))
    writes = "cache_dir" in options

    if source.startswith("/"):
        # a file or a folder: which one, and whether it exists, is looked at only after the
        # privilege check (in read), so that others learn nothing about the server's files
        if "data_files" in options or "data_dir" in options:
            raise InvalidParameter("a file path as source cannot be combined with data_files or data_dir",
                                   hint="Pass source => 'csv' (json, parquet, ...) with kwargs {\"data_files\": ...}.")
        kind, path, table = "path", os.path.normpath(source), _file_stem(source)
        reads = True
    elif source.startswith(("~", "./", "../")) or source in (".", "..") or _file_format(source) is not None:
        raise InvalidParameter(f"local files need an absolute path on the database server, not {source!r}",
                               hint="Example: '/srv/data/reviews.csv'.")
    elif source in _packaged_builders():
        if not any(k in options for k in ("data_files", "data_dir")):
            raise InvalidParameter(f"the {source} builder needs data_files or data_dir in kwargs",
                                   hint=f'Example: kwargs => \'{{"data_files": "/srv/data/file.{source}"}}\'')
        kind, path, table = "builder", source, source
        reads = True
    else:
        name = source[len("hf://datasets/"):] if source.startswith("hf://datasets/") else source
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        try:
            validate_repo_id(name)
        except HFValidationError as exc:
            raise InvalidParameter(f"source {source!r} is neither an absolute file path nor a Hugging Face "
                                   f"dataset name: {one_line(exc)}") from None
        # hf://datasets/ makes it remote only: a folder of that name in the server's working
        # directory (the data directory) is never read.
        kind, path, table = "hub", "hf://datasets/" + name, name
    table = _identifier(own.get("table_name", table).strip(), "table name")
    return Plan(kind=kind, path=path, table=table, subset=subset, limit=limit,
                split=split, options=options, reads_server_files=reads, writes_server_files=writes)


# ---------------------------------------------------------------------------------------------
# Loading with the datasets library


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
            found = _file_format(p.path)
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


def columns_of(parts) -> list[tuple[str, str, object]]:
    """(column, PostgreSQL type, feature) for the table; every part must have the same features."""
    first = parts[0].features
    for other in parts[1:]:
        if other.features != first:
            raise InvalidParameter("the dataset's splits have different columns or types, so they cannot go "
                                   "into one table", hint='Load one split at a time: kwargs {"split": "train"} '
                                                          'and {"table_name": ...}.')
    if not first:
        raise InvalidParameter("the dataset has no columns")
    out = []
    for name, feature in first.items():
        _identifier(name, "column name", _RENAME_HINT)
        if name in _SYSTEM_COLUMNS:
            raise InvalidParameter(f"the dataset has a column named {name}, which PostgreSQL reserves for a system "
                                   "column", hint=_RENAME_HINT)
        out.append((name, column_type(feature), feature))
    return out


def batches(parts, limit: int | None, columns, target_bytes: int = 16 << 20, max_rows: int = 20000):
    """Yield lists of column value lists (one list per column) of at most max_rows rows, up to limit rows."""
    convert = [converter(sql_type) for _, sql_type, _ in columns]
    names = [name for name, _, _ in columns]
    left = limit
    for part in parts:
        if left is not None and left <= 0:
            break
        table = part.with_format("arrow")
        n = len(table) if left is None else min(len(table), left)
        if n == 0:
            continue
        data = part.data
        avg = max(1, data.nbytes // max(1, data.num_rows))
        step = max(1, min(max_rows, target_bytes // avg))
        for start in range(0, n, step):
            chunk = table[start:min(n, start + step)]
            values = []
            for name, conv in zip(names, convert):
                column = chunk.column(name).to_pylist()
                values.append(conv(column) if conv else column)
            yield values
        if left is not None:
            left -= n


# ---------------------------------------------------------------------------------------------
# Writing through SPI


def _privileges(plpy) -> dict:
    return plpy.execute(
        "SELECT r.rolsuper AS superuser,"
        " pg_has_role(current_user, 'pg_read_server_files', 'MEMBER') AS read_files,"
        " pg_has_role(current_user, 'pg_write_server_files', 'MEMBER') AS write_files,"
        " current_user::text AS role"
        " FROM pg_roles r WHERE r.rolname = current_user")[0]


def check_privileges(plpy, p: Plan) -> None:
    """Local files are read by the server's OS user: like COPY FROM a file, only for those trusted with that."""
    have = _privileges(plpy)
    if p.reads_server_files and not (have["superuser"] or have["read_files"]):
        raise PermissionDenied(
            f"only superusers and members of pg_read_server_files may load files on the database server "
            f"(role {have['role']})",
            hint="Ask a superuser to GRANT pg_read_server_files TO your role, or load a Hugging Face dataset "
                 "from the server's cache.")
    if p.writes_server_files and not (have["superuser"] or have["write_files"]):
        raise PermissionDenied(
            f"only superusers and members of pg_write_server_files may choose a cache_dir on the database server "
            f"(role {have['role']})", hint="Leave cache_dir out: the server's datasets cache is used.")


def create_table(plpy, name: str, columns: list[tuple[str, str]]) -> str:
    """pgml."<name>" with columns [(name, type)], owned by the calling role, which has no CREATE on
    schema pgml: the SECURITY DEFINER pgml._create_table makes it (for members of pgml_admin). The
    types are resolved here, as type names, never spliced as SQL. Returns the qualified name."""
    query = plpy.prepare("SELECT pgml._create_table($1, $2, $3::pg_catalog.regtype[], current_user) AS name",
                         ["text", "text[]", "text[]"])
    return plpy.execute(query, [name, [c for c, _ in columns], [t for _, t in columns]])[0]["name"]


def _existing(plpy, table: str):
    plan_ = plpy.prepare(
        "SELECT c.relkind::text AS kind, obj_description(c.oid, 'pg_class') AS comment FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'pgml' AND c.relname = $1", ["text"])
    rows = plpy.execute(plan_, [table])
    return rows[0] if len(rows) else None


def _describe(p: Plan, source: str) -> str:
    bits = [f"{TABLE_MARKER} {source}"]
    if p.subset:
        bits.append(f"subset {p.subset}")
    if p.split:
        bits.append(f"split {p.split}")
    if p.limit is not None:
        bits.append(f"limit {p.limit}")
    return ", ".join(bits)


def write(plpy, p: Plan, source: str, parts, columns) -> int:
    """Replace (or create) pgml."<table>" and insert the rows; returns the row count."""
    qualified = "pgml." + plpy.quote_ident(p.table)
    found = _existing(plpy, p.table)
    if found is not None:
        if found["kind"] not in ("r", "p") or not (found["comment"] or "").startswith(TABLE_MARKER):
            raise DuplicateTable(
                f"pgml.{p.table} already exists and was not made by pgml.load_dataset, so it is left alone",
                hint='Pass another name with kwargs {"table_name": "..."}, or drop it first.')
        try:
            with plpy.subtransaction():
                plpy.execute(f"DROP TABLE {qualified}")
        except plpy.SPIError as exc:  # a view on it (2BP01), another role's table (42501), ...
            spidata = getattr(exc, "spidata", None) or (None, None)
            first = ("Drop what depends on it first" if getattr(exc, "sqlstate", None) == "2BP01"
                     else "Only its owner can replace it")
            hint = first + ', or load into another table with kwargs {"table_name": "..."}.'
            raise PgmlError(f"pgml.{p.table} cannot be replaced: {spidata[1] or exc}",
                            sqlstate=getattr(exc, "sqlstate", None), hint=hint) from None
    create_table(plpy, p.table, [(name, sql_type) for name, sql_type, _ in columns])
    plpy.execute(f"COMMENT ON TABLE {qualified} IS {plpy.quote_literal(_describe(p, source))}")
    from datasets import ClassLabel

    for name, _, feature in columns:
        if isinstance(feature, ClassLabel):
            plpy.execute(f"COMMENT ON COLUMN {qualified}.{plpy.quote_ident(name)} IS "
                         f"{plpy.quote_literal(json.dumps({'class_label': feature.names}, ensure_ascii=False))}")
    names = ", ".join(plpy.quote_ident(name) for name, _, _ in columns)
    arrays = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    insert = plpy.prepare(f"INSERT INTO {qualified} ({names}) SELECT * FROM unnest({arrays})",
                          [f"{sql_type}[]" for _, sql_type, _ in columns])
    rows = 0
    for values in batches(parts, p.limit, columns):
        plpy.execute(insert, values)
        rows += len(values[0])
    return rows


def load_dataset(plpy, source, subset, limit, kwargs, *, settings: Settings) -> list[tuple[str, int]]:
    """pgml.load_dataset's core: [(table_name, rows)]."""
    p = plan(source, subset, limit, kwargs)
    check_privileges(plpy, p)
    temporary = None
    if p.kind != "hub" and "cache_dir" not in p.options:
        # datasets converts files to Arrow in its cache: a copy the server need not keep
        temporary = tempfile.mkdtemp(prefix="pgml_load_dataset_")
    try:
        loaded = read(p, settings, cache_dir=temporary or settings.huggingface_cache)
        parts = parts_of(p, loaded)
        columns = columns_of(parts)
        rows = write(plpy, p, source.strip(), parts, columns)
        del loaded, parts
        return [(f"pgml.{plpy.quote_ident(p.table)}", rows)]  # usable as a regclass, as PostgresML's
    finally:
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)
