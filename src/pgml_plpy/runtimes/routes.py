"""The `runtimes` setting: routes that say where a model runs.

A JSON list of routes, first match wins; a model that matches none runs in the backend.
A route: {"model": "<exact id, project name or glob>", "task": "<optional canonical task>",
"runtime": "<kind>", ...the kind's own keys}. `model` matches the model string a call
resolves to (after a task's default model is applied) with shell-style globs, where `*` also
matches `/`; `task` matches the canonical task name (pgml.embed is `embedding`, pgml.rank is
`rank`). Unknown keys are errors, found when the setting is written.

Each runtime kind declares its keys in KINDS; this module imports nothing heavy, so that a
backend whose calls all go to routes never imports torch.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
from dataclasses import dataclass, field
from typing import Callable

from ..errors import InvalidSetting

DEFAULT_TIMEOUT = 300.0  # seconds a routed call may take


def _string(value) -> bool:
    return isinstance(value, str) and value.strip() != ""


def _positive_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _non_negative_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


def _http_url(value) -> bool:
    """An http(s) URL with a host, and no query, fragment or credentials (the setting is readable)."""
    from urllib.parse import urlsplit

    if not isinstance(value, str):
        return False
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return False
    return (parts.scheme in ("http", "https") and bool(parts.hostname) and not parts.query and not parts.fragment
            and parts.username is None and parts.password is None)


def _env_name(value) -> bool:
    return isinstance(value, str) and re.fullmatch(r"PGML_[A-Za-z0-9_]+", value) is not None


def _absolute_path(value) -> bool:
    return _string(value) and os.path.isabs(value)


def is_glob(model: str) -> bool:
    """Whether a route's model is a pattern rather than one model."""
    return any(c in model for c in "*?[")


@dataclass(frozen=True)
class Key:
    check: Callable[[object], bool]
    expected: str          # what a valid value is, for the error message
    required: bool = False


@dataclass(frozen=True)
class Kind:
    """A runtime kind: its own route keys, and the module whose `runtime(route)` serves its routes."""

    keys: dict = field(default_factory=dict)
    module: str | None = None   # None: the backend itself
    check: Callable[[dict], str | None] | None = None  # the route as a whole: what is wrong, else None


COMMON = {
    "model": Key(_string, "a model id, project name or glob such as 'sentence-transformers/*'", required=True),
    "task": Key(_string, "a canonical task name (embedding for pgml.embed, rank for pgml.rank)"),
    "runtime": Key(_string, "the runtime's kind", required=True),
}
# Keys the kinds that call out over the network share.
TIMEOUT = {"timeout": Key(_positive_number, "seconds a call may take (a positive number)")}

def _one_key_source(route: dict) -> str | None:
    if "api_key_env" in route and "api_key_file" in route:
        return "takes api_key_env or api_key_file, not both"
    return None


KINDS: dict[str, Kind] = {
    "backend": Kind(),
    # OpenAI-compatible serving engines (vLLM, TGI, SGLang, Ollama, llama.cpp, transformers serve).
    # The key itself is never in a route: only where the server reads it (runtimes/openai.py).
    "openai": Kind(keys={
        "url": Key(_http_url, "the engine's OpenAI API base, such as 'http://127.0.0.1:8000/v1'", required=True),
        "served_model": Key(_string, "the model's name at the engine (default: the model the call asks for)"),
        "api_key_env": Key(_env_name, "the name of an environment variable of the PostgreSQL server that starts "
                                      "with PGML_, holding the engine's API key"),
        "api_key_file": Key(_absolute_path, "the absolute path of a file under the secrets_path setting's "
                                            "folder, holding the engine's API key"),
        **TIMEOUT,
        "ca_file": Key(_absolute_path, "the absolute path of a PEM bundle of the CAs that sign the engine's "
                                       "https certificate (default: the system's CAs)"),
    }, module="pgml_plpy.runtimes.openai", check=_one_key_source),
    # The shared runtime on Ray Serve (python -m pgml_plpy.serve); replicas / num_cpus / num_gpus decide
    # the Ray Serve deployment that holds the models routed there.
    "ray": Kind(keys={
        "url": Key(_http_url, "the serve command's address, such as 'http://127.0.0.1:8000'", required=True),
        "token_file": Key(_string, "a file on the database server holding the runtime's token"),
        **TIMEOUT,
        "replicas": Key(_positive_int, "replicas of the deployment (a positive integer)"),
        "num_cpus": Key(_non_negative_number, "CPUs each replica reserves (a number >= 0)"),
        "num_gpus": Key(_non_negative_number, "GPUs each replica reserves (a number >= 0)"),
    }, module="pgml_plpy.runtimes.ray"),
}


@dataclass(frozen=True)
class Route:
    model: str
    task: str | None
    runtime: str
    options: dict            # the kind's own keys (url, timeout, ...), validated
    index: int               # position in the setting, for messages

    @property
    def timeout(self) -> float:
        return float(self.options.get("timeout", DEFAULT_TIMEOUT))

    def matches(self, model: str, task: str) -> bool:
        return fnmatch.fnmatchcase(model, self.model) and (self.task is None or self.task == task)

    def describe(self) -> str:
        return f"runtimes[{self.index}] ({json.dumps({'model': self.model, 'runtime': self.runtime})})"


def _fail(message: str) -> InvalidSetting:
    return InvalidSetting(f"pgml.settings: runtimes: {message}",
                          hint="A route: {\"model\": \"<id or glob>\", \"task\": \"<optional>\", \"runtime\": "
                               f"\"{'|'.join(KINDS)}\", ...}}; see the docs on scaling.")


def parse(value, task_names: frozenset[str] | None = None) -> tuple[Route, ...]:
    """The routes of the setting's JSON value (a list, or null for none), every key checked."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _fail("must be a JSON array of routes")
    routes = []
    for i, item in enumerate(value):
        where = f"route {i}"
        if not isinstance(item, dict):
            raise _fail(f"{where} must be a JSON object")
        kind = KINDS.get(item.get("runtime"))
        if kind is None:
            raise _fail(f"{where} has runtime {json.dumps(item.get('runtime'))}, not one of {', '.join(KINDS)}")
        keys = {**COMMON, **kind.keys}
        unknown = sorted(set(item) - set(keys))
        if unknown:
            raise _fail(f"{where} ({item['runtime']}) has unknown key{'s' if len(unknown) > 1 else ''} "
                        f"{', '.join(unknown)}; it takes {', '.join(keys)}")
        for name, key in keys.items():
            if name not in item:
                if key.required:
                    raise _fail(f"{where} needs {name}: {key.expected}")
            elif not key.check(item[name]):
                raise _fail(f"{where}: {name} is {json.dumps(item[name])}, expected {key.expected}")
        problem = kind.check(item) if kind.check is not None else None
        if problem:
            raise _fail(f"{where} ({item['runtime']}) {problem}")
        if task_names is not None and "task" in item and item["task"] not in task_names:
            raise _fail(f"{where}: task {json.dumps(item['task'])} is not a canonical task name "
                        f"({', '.join(sorted(task_names))})")
        routes.append(Route(model=item["model"], task=item.get("task"), runtime=item["runtime"],
                            options={k: v for k, v in item.items() if k not in COMMON}, index=i))
    return tuple(routes)


def match(routes: tuple[Route, ...], model: str, task: str) -> Route | None:
    """The first route for model and task (None: the backend runs it)."""
    return next((r for r in routes if r.matches(model, task)), None)
