"""Server-side settings, read from the table pgml.settings on every call.

Each setting declares its class next to its default:

- TRUST settings decide whether, or from where, code and weights may be loaded, or where data and
  credentials are sent. Whoever changes them decides what the server's OS user runs, so only
  superusers may (pgml.settings' trigger enforces it, whatever privileges a role was granted).
- LIMIT settings are limits and conveniences (inputs per call, models kept loaded, threads): they
  bound the work a call may do and run nothing, so members of pgml_admin change them.

Adding a setting means declaring its class: a table setting without one is an error at import.
None of them ever comes from a `pgml.*` GUC placeholder, which any user can SET.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields

from .errors import InvalidSetting

TRUST, LIMIT = "trust", "limit"


def setting(kind: str, default, description: str):
    """A pgml.settings row: its class (TRUST or LIMIT), its default and the description stored with it."""
    return field(default=default, metadata={"kind": kind, "description": description})


@dataclass(frozen=True)
class Settings:
    # Allow hub ids that are not in the server's Hugging Face cache to be downloaded.
    hub_downloads: bool = setting(TRUST, False, "download hub models that are not in the server's Hugging Face cache")
    # Hugging Face cache folder (the hub's cache_dir); None means the library default
    # of the server's OS user (HF_HOME / ~/.cache/huggingface/hub).
    huggingface_cache: str | None = setting(TRUST, None, "Hugging Face cache folder (null: the server user's default)")
    # Allow `trust_remote_code` in a task (it runs Python code shipped with a model).
    huggingface_trust_remote_code: bool = setting(TRUST, False,
                                                  "allow trust_remote_code (runs code shipped with a model)")
    # torch threads per call: a number, or "auto": the cores shared among the backends running model
    # calls and other processes' running threads right now (a lone call gets them all), decided per call.
    torch_threads: int | str = setting(LIMIT, "auto", "torch threads per call: a number, or \"auto\" (the cores "
                                                      "shared among the work running right now)")
    # The most models one backend keeps loaded, and the most bytes of weights (None: no
    # limit); past either, the least recently used models are unloaded first.
    max_models: int = setting(LIMIT, 8, "most models one backend keeps loaded (least recently used unloaded first)")
    max_model_bytes: int | None = setting(LIMIT, None,
                                          "most bytes of model weights one backend keeps loaded (null: no limit)")
    # Local folders that roles other than superusers may load models from (symlinks and ..
    # resolved first); None: none.
    models_path: list[str] | None = setting(TRUST, None,
                                            "folders roles other than superusers may load local models from "
                                            "(null: none)")
    # Hub ids that may be loaded, exactly or as "org/*"; None: any.
    huggingface_whitelist: list[str] | None = setting(TRUST, None,
                                                      "hub ids that may be loaded, exact or org/* (null: any)")
    # Models allowed to run their own code when huggingface_trust_remote_code is on; None: any.
    huggingface_trust_remote_code_whitelist: list[str] | None = setting(
        TRUST, None, "models that may run their own code (null: any, when allowed)")
    # Where tuned models restored from pgml.files are kept (None: ~/.cache/pgml_plpy/models of the
    # server's OS user, else the temporary folder).
    models_cache: str | None = setting(TRUST, None,
                                       "folder for tuned models restored from pgml.files (null: "
                                       "~/.cache/pgml_plpy/models)")
    # Weights from pickle-based files (pytorch_model.bin, which can run code when loaded);
    # off: safetensors only.
    allow_pickle: bool = setting(TRUST, False, "load weights from pickle-based files too (off: safetensors only)")
    # Limits per call: inputs, characters in one input, new tokens, generated sequences.
    max_inputs: int = setting(LIMIT, 10000, "most inputs in one call")
    max_input_chars: int = setting(LIMIT, 100000, "most characters in one input")
    max_new_tokens: int = setting(LIMIT, 4096, "most tokens one generation may add")
    max_sequences: int = setting(LIMIT, 16,
                                 "most sequences one generation may carry (num_return_sequences, num_beams)")
    # Where models run: routes to other runtimes (runtimes/routes.py); unmatched models run in the backend.
    # Trust: a route decides what serves a model and where its inputs are sent.
    runtimes: tuple = setting(TRUST, (), "routes: where models run (first match wins; unmatched models run in the "
                                         "backend)")
    # Trust: the folder whose files engine routes may read API keys from (api_key_file); None: no key
    # files. It decides which of the server's secrets a route may send to an engine.
    secrets_path: str | None = setting(TRUST, None, "folder holding the API key files of engine routes "
                                                    "(api_key_file); null: no key files")
    # Not a table setting: whether the calling role is a superuser (it skips models_path).
    superuser: bool = field(default=False, metadata={"table": False})


def _table_settings() -> dict[str, object]:
    """name -> dataclass field of every table setting, each with its declared class."""
    table = {}
    for f in fields(Settings):
        if not f.metadata.get("table", True):
            continue
        if f.metadata.get("kind") not in (TRUST, LIMIT):
            raise TypeError(f"pgml_plpy.settings: the setting {f.name} declares no class: use setting(TRUST | LIMIT, "
                            "default, description)")
        table[f.name] = f
    return table


_FIELDS = _table_settings()
_TYPES = {name: f.type for name, f in _FIELDS.items()}
DESCRIPTIONS = {name: f.metadata["description"] for name, f in _FIELDS.items()}
TRUST_SETTINGS = frozenset(name for name, f in _FIELDS.items() if f.metadata["kind"] == TRUST)
LIMIT_SETTINGS = frozenset(name for name, f in _FIELDS.items() if f.metadata["kind"] == LIMIT)


def _check(name: str, value):
    if name == "runtimes":
        from .runtimes import routes
        from .tasks import TASKS

        return routes.parse(value, frozenset(n for n, e in TASKS.items() if e.inference) | {"embedding", "rank"})
    kind = _TYPES[name]
    positive_int = isinstance(value, int) and not isinstance(value, bool) and value > 0
    ok = {
        "bool": isinstance(value, bool),
        "int": positive_int,
        "int | str": value == "auto" or positive_int,
        "int | None": value is None or positive_int,
        "str | None": value is None or (isinstance(value, str) and value != ""),
        "list[str] | None": value is None or (isinstance(value, list)
                                              and all(isinstance(v, str) and v for v in value)),
    }[kind]
    if not ok:
        expected = {"bool": "true or false", "int": "a positive integer", "int | str": 'a positive integer or "auto"',
                    "int | None": "a positive integer or null",
                    "str | None": "a non-empty string or null",
                    "list[str] | None": "a JSON array of non-empty strings, or null"}[kind]
        raise InvalidSetting(f"pgml.settings: {name} is {json.dumps(value)}, expected {expected}",
                             hint=f"UPDATE pgml.settings SET value = ... WHERE name = '{name}'")
    return value


def from_rows(rows, superuser: bool = False) -> Settings:
    """Build Settings from (name, value-as-JSON-text) rows; unknown names are an error."""
    values = {"superuser": superuser}
    for name, raw in rows:
        if name not in _TYPES:
            raise InvalidSetting(f"pgml.settings has an unknown setting {name!r}",
                                 hint=f"Known settings: {', '.join(sorted(_TYPES))}.")
        values[name] = _check(name, json.loads(raw) if isinstance(raw, str) else raw)
    return Settings(**values)


def defaults() -> list[tuple[str, str, str]]:
    """(name, JSON default, description) for every setting, used to seed the table."""
    base = Settings()
    return [(name, json.dumps(getattr(base, name)),
             DESCRIPTIONS[name] + (" (trust: superusers only)" if name in TRUST_SETTINGS else ""))
            for name in _TYPES]
