"""Server-side settings, read from the table pgml.settings on every call.

The table is writable only by its owner (the installing superuser): these values
decide what code and which files a backend may load, so they must never come from
a `pgml.*` GUC placeholder, which any user can SET.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields

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
    # The most models one backend keeps loaded, and the most bytes of weights (None: no
    # limit); past either, the least recently used models are unloaded first.
    max_models: int = 8
    max_model_bytes: int | None = None
    # Local folders that roles other than superusers and pgml_admin may load models from
    # (symlinks and .. resolved first); None: none.
    models_path: list[str] | None = None
    # Hub ids that may be loaded, exactly or as "org/*"; None: any.
    huggingface_whitelist: list[str] | None = None
    # Models allowed to run their own code when huggingface_trust_remote_code is on; None: any.
    huggingface_trust_remote_code_whitelist: list[str] | None = None
    # Where tuned models restored from pgml.files are kept (None: ~/.cache/pgml_plpy/models of the
    # server's OS user, else the temporary folder).
    models_cache: str | None = None
    # Weights from pickle-based files (pytorch_model.bin, which can run code when loaded);
    # off: safetensors only.
    allow_pickle: bool = False
    # Limits per call: inputs, characters in one input, new tokens, generated sequences.
    max_inputs: int = 10000
    max_input_chars: int = 100000
    max_new_tokens: int = 4096
    max_sequences: int = 16
    # Where models run: routes to other runtimes (runtimes/routes.py); unmatched models run in the backend.
    runtimes: tuple = ()
    # Not a table setting: whether the calling role is a superuser or a member of pgml_admin.
    admin: bool = field(default=True, metadata={"table": False})


DESCRIPTIONS = {
    "hub_downloads": "download hub models that are not in the server's Hugging Face cache",
    "huggingface_cache": "Hugging Face cache folder (null: the server user's default)",
    "huggingface_trust_remote_code": "allow trust_remote_code (runs code shipped with a model)",
    "torch_threads": "torch threads per backend",
    "max_models": "most models one backend keeps loaded (least recently used unloaded first)",
    "max_model_bytes": "most bytes of model weights one backend keeps loaded (null: no limit)",
    "models_path": "folders other roles than pgml_admin may load local models from (null: none)",
    "huggingface_whitelist": "hub ids that may be loaded, exact or org/* (null: any)",
    "huggingface_trust_remote_code_whitelist": "models that may run their own code (null: any, when allowed)",
    "models_cache": "folder for tuned models restored from pgml.files (null: ~/.cache/pgml_plpy/models)",
    "allow_pickle": "load weights from pickle-based files too (off: safetensors only)",
    "max_inputs": "most inputs in one call",
    "max_input_chars": "most characters in one input",
    "max_new_tokens": "most tokens one generation may add",
    "max_sequences": "most sequences one generation may carry (num_return_sequences, num_beams)",
    "runtimes": "routes: where models run (first match wins; unmatched models run in the backend)",
}

_TYPES = {f.name: f.type for f in fields(Settings) if f.metadata.get("table", True)}


def _check(name: str, value):
    if name == "runtimes":
        from .runtimes import routes
        from .tasks import TASKS

        return routes.parse(value, frozenset(TASKS) | {"embedding", "rank"})
    kind = _TYPES[name]
    positive_int = isinstance(value, int) and not isinstance(value, bool) and value > 0
    ok = {
        "bool": isinstance(value, bool),
        "int": positive_int,
        "int | None": value is None or positive_int,
        "str | None": value is None or (isinstance(value, str) and value != ""),
        "list[str] | None": value is None or (isinstance(value, list)
                                              and all(isinstance(v, str) and v for v in value)),
    }[kind]
    if not ok:
        expected = {"bool": "true or false", "int": "a positive integer", "int | None": "a positive integer or null",
                    "str | None": "a non-empty string or null",
                    "list[str] | None": "a JSON array of non-empty strings, or null"}[kind]
        raise InstallError(f"pgml.settings: {name} is {json.dumps(value)}, expected {expected}",
                           hint=f"UPDATE pgml.settings SET value = ... WHERE name = '{name}'")
    return value


def from_rows(rows, admin: bool = True) -> Settings:
    """Build Settings from (name, value-as-JSON-text) rows; unknown names are an error."""
    values = {"admin": admin}
    for name, raw in rows:
        if name not in _TYPES:
            raise InstallError(f"pgml.settings has an unknown setting {name!r}",
                               hint=f"Known settings: {', '.join(sorted(_TYPES))}.")
        values[name] = _check(name, json.loads(raw) if isinstance(raw, str) else raw)
    return Settings(**values)


def defaults() -> list[tuple[str, str, str]]:
    """(name, JSON default, description) for every setting, used to seed the table."""
    base = Settings()
    return [(name, json.dumps(getattr(base, name)), DESCRIPTIONS[name]) for name in _TYPES]
