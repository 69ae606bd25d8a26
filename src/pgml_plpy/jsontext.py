"""JSON text for jsonb values: what models, datasets and the registry hand over, in one encoder."""

from __future__ import annotations

import base64
import datetime
import decimal
import json
import math


def default(value):
    """A JSON form for values json cannot write: numpy and torch values, bytes, dates, times, decimals."""
    if hasattr(value, "tolist"):  # numpy scalars and arrays, torch tensors
        return value.tolist()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def finite(value):
    """value with NaN and infinities (which JSON cannot hold) replaced by null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    if hasattr(value, "tolist"):
        return finite(value.tolist())
    return value


def dumps(value) -> str | None:
    """value as JSON text (None stays None), NaN and infinities as null."""
    if value is None:
        return None
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, default=default)
    except ValueError:  # a NaN or an infinity somewhere: cleaned only then, as it is rare
        return json.dumps(finite(value), ensure_ascii=False, allow_nan=False, default=default)
