"""pgml.transform: task, args and inputs in, a JSON-able result out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import tasks
from .cache import MODELS
from .errors import NotSupported, PgmlError, to_pgml_error
from .inputs import (TaskSpec, check_generation_limits, check_input_limits, parse_args, parse_inputs,
                     parse_task)
from .models import Source, resolve
from .settings import Settings


@dataclass(frozen=True)
class Deployed:
    """A model served by another name (a tuned model deployed under its project's name)."""

    key: str                    # changes whenever another model is deployed under the name
    folder: Callable[[], str]   # its files as a local folder, fetched when it must be loaded


def load_task(spec: TaskSpec, settings: Settings,
              deployed: Callable[[str], Deployed | None] | None = None) -> tasks.Task:
    """The loaded task for spec, from this backend's cache when it is there.

    deployed(name) says whether the model name is served from elsewhere (the tuning registry).
    """
    name, info = tasks.lookup(spec.task)
    model = spec.model or info.default_model
    found = deployed(model) if deployed is not None else None
    if found is not None:
        return MODELS.get(spec.cache_key(name, found.key),
                          lambda: info.cls.load(name, spec.options, Source(found.folder(), True, {}), settings),
                          kind="transform", task=name, model=model)
    return MODELS.get(spec.cache_key(name, model),
                      lambda: info.cls.load(name, spec.options, resolve(model, spec.options, settings), settings),
                      kind="transform", task=name, model=model)


def _prepare(task_arg, args_arg, inputs_arg, task_is_json, inputs_are_json, settings, deployed):
    """(loaded task, its prepared inputs, args): everything checked before the model runs."""
    spec = parse_task(task_arg, is_json=task_is_json)
    name, info = tasks.lookup(spec.task)
    args = parse_args(args_arg)
    raw = parse_inputs(inputs_arg, is_json=inputs_are_json or info.cls.json_text(name))
    check_input_limits(raw, settings)
    check_generation_limits(args, settings)
    task = load_task(spec, settings, deployed)
    return task, task.prepare(raw), args


def transform(task_arg, args_arg, inputs_arg, *, task_is_json: bool, inputs_are_json: bool,
              settings: Settings, deployed: Callable[[str], Deployed | None] | None = None):
    task, items, args = _prepare(task_arg, args_arg, inputs_arg, task_is_json, inputs_are_json, settings, deployed)
    try:
        return task.run(items, args)
    except PgmlError:
        raise
    except Exception as exc:  # noqa: BLE001 - becomes one SQL error with a fitting SQLSTATE
        raise to_pgml_error(exc, f"{task.task} with {task.model.name_or_path}") from None


def transform_stream(task_arg, args_arg, inputs_arg, *, task_is_json: bool, inputs_are_json: bool,
                     settings: Settings, deployed: Callable[[str], Deployed | None] | None = None):
    """Text pieces of a generation as they come (text-generation and chat)."""
    task, items, args = _prepare(task_arg, args_arg, inputs_arg, task_is_json, inputs_are_json, settings, deployed)
    if not hasattr(task, "stream"):
        raise NotSupported(f"transform_stream streams text-generation and conversational, not {task.task}",
                           hint="Use pgml.transform for this task.")
    return task.stream(items, args)
