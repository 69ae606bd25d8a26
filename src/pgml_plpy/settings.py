"""Server-side settings, read from the table pgml.settings on every call.

The table is writable only by its owner (the installing superuser): these values
decide what code and which files a backend may load, so they must never come from
a `pgml.*` GUC placeholder, which any user can SET.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields

from .errors import InstallError


@dataclass(frozen=True)
class Settings:
    # Allow hub ids that are not in the server's Hugging Face cache to be downloaded.
    hub_downloads: bool = False
    # Hugging Face cache folder (the hub's cache_dir); None means the library default
    # of the server's OS user (HF_HOME / ~/.cache/huggingface/hub).
    huggingface_cache: str | None = None
    # Allow `trust_remote_code` in a task (it runs Python code shipped with a model).
    huggingface_trust_remote_code: bool = False
    # torch threads per backend: several backends share the cores.
    torch_threads: int = 1


DESCRIPTIONS = {
    "hub_downloads": "download hub models that are not in the server's Hugging Face cache",
    "huggingface_cache": "Hugging Face cache folder (null: the server user's default)",
    "huggingface_trust_remote_code": "allow trust_remote_code (runs code shipped with a model)",
    "torch_threads": "torch threads per backend",
}

_TYPES = {f.name: f.type for f in fields(Settings)}


def _check(name: str, value):
    kind = _TYPES[name]
    ok = {
        "bool": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool) and value > 0,
        "str | None": value is None or (isinstance(value, str) and value != ""),
    }[kind]
    if not ok:
        expected = {"bool": "true or false", "int": "a positive integer",
                    "str | None": "a non-empty string or null"}[kind]
        raise InstallError(f"pgml.settings: {name} is {json.dumps(value)}, expected {expected}",
                           hint=f"UPDATE pgml.settings SET value = ... WHERE name = '{name}'")
    return value


def from_rows(rows) -> Settings:
    """Build Settings from (name, value-as-JSON-text) rows; unknown names are an error."""
    values = {}
    for name, raw in rows:
        if name not in _TYPES:
            raise InstallError(f"pgml.settings has an unknown setting {name!r}",
                               hint=f"Known settings: {', '.join(sorted(_TYPES))}.")
        values[name] = _check(name, json.loads(raw) if isinstance(raw, str) else raw)
    return Settings(**values)


def defaults() -> list[tuple[str, str, str]]:
    """(name, JSON default, description) for every setting, used to seed the table."""
    base = Settings()
    return [(f.name, json.dumps(getattr(base, f.name)), DESCRIPTIONS[f.name]) for f in fields(Settings)]
