"""PostgreSQL names and types for a dataset's columns, and its values in the form the INSERT's arrays take."""

from __future__ import annotations

from .. import jsontext
from ..errors import InvalidParameter

# PostgreSQL truncates longer identifiers (NAMEDATALEN - 1 bytes).
MAX_IDENTIFIER_BYTES = 63

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

RENAME_HINT = 'For csv files, rename the columns with kwargs {"column_names": [...], "header": 0}.'


def identifier(name: str, what: str, hint: str = 'Pass another with kwargs {"table_name": "..."}.') -> str:
    if not name or "\x00" in name:
        raise InvalidParameter(f"{what} {name!r} is not a usable PostgreSQL name", hint=hint)
    if len(name.encode("utf-8")) > MAX_IDENTIFIER_BYTES:
        raise InvalidParameter(f"{what} {name!r} is longer than PostgreSQL's {MAX_IDENTIFIER_BYTES} bytes", hint=hint)
    return name


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


def _interval(value) -> str | None:
    if value is None:
        return None
    return f"{value.days} days {value.seconds} seconds {value.microseconds} microseconds"


def converter(sql_type: str):
    """A function turning a column's Python values (from Arrow) into what the SQL array takes; None: as is."""
    if sql_type == "jsonb":
        return lambda values: [jsontext.dumps(v) for v in values]
    if sql_type == "interval":
        return lambda values: [_interval(v) for v in values]
    return None


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
        identifier(name, "column name", RENAME_HINT)
        if name in _SYSTEM_COLUMNS:
            raise InvalidParameter(f"the dataset has a column named {name}, which PostgreSQL reserves for a system "
                                   "column", hint=RENAME_HINT)
        out.append((name, column_type(feature), feature))
    return out
