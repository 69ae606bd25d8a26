"""pgml.transform: task, args and inputs in, a JSON-able result out, wherever the model runs."""

from __future__ import annotations

from typing import Callable

from . import tasks
from .inputs import check_generation_limits, check_input_limits, parse_args, parse_inputs, parse_task
from .runtimes import Deployed, TransformRequest, runtime_for
from .settings import Settings


def request(task_arg, args_arg, inputs_arg, *, task_is_json: bool, inputs_are_json: bool, settings: Settings,
            deployed: Callable[[str], Deployed | None] | None = None) -> TransformRequest:
    """The call checked (task, model, args, inputs, limits) before any model is involved."""
    spec = parse_task(task_arg, is_json=task_is_json)
    name, entry = tasks.lookup(spec.task)
    args = parse_args(args_arg)
    raw = parse_inputs(inputs_arg, is_json=inputs_are_json or entry.inference.json_text(name))
    check_input_limits(raw, settings)
    check_generation_limits(args, settings)
    return TransformRequest(task=name, canonical=entry.name, model=spec.model or entry.default_model,
                            options=spec.options, args=args, inputs=raw, settings=settings, deployed=deployed)


def transform(task_arg, args_arg, inputs_arg, *, task_is_json: bool, inputs_are_json: bool,
              settings: Settings, deployed: Callable[[str], Deployed | None] | None = None):
    call = request(task_arg, args_arg, inputs_arg, task_is_json=task_is_json, inputs_are_json=inputs_are_json,
                   settings=settings, deployed=deployed)
    return runtime_for(call.model, call.canonical, settings).transform(call)


def transform_stream(task_arg, args_arg, inputs_arg, *, task_is_json: bool, inputs_are_json: bool,
                     settings: Settings, deployed: Callable[[str], Deployed | None] | None = None):
    """Text pieces of a generation as they come (text-generation and chat)."""
    call = request(task_arg, args_arg, inputs_arg, task_is_json=task_is_json, inputs_are_json=inputs_are_json,
                   settings=settings, deployed=deployed)
    return runtime_for(call.model, call.canonical, settings).transform_stream(call)
