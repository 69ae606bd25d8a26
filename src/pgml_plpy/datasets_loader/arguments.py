"""What to load and where, decided from pgml.load_dataset's arguments before anything is read."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from ..errors import InvalidParameter, NotSupported, NullValue, one_line
from ..inputs import json_kind, parse_args
from .sqltypes import identifier

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

# kwargs that are pgml_plpy's own, never given to datasets.load_dataset
OWN_KWARGS = ("table_name",)


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


def _file_stem(path: str) -> str:
    name = os.path.basename(path.rstrip("/"))
    for suffix in COMPRESSIONS:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    stem, ext = os.path.splitext(name)
    return stem if ext.lower() in FILE_FORMATS else name


def file_format(path: str):
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
    elif source.startswith(("~", "./", "../")) or source in (".", "..") or file_format(source) is not None:
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
    table = identifier(own.get("table_name", table).strip(), "table name")
    return Plan(kind=kind, path=path, table=table, subset=subset, limit=limit,
                split=split, options=options, reads_server_files=reads, writes_server_files=writes)
