"""pgml.transform: task, args and inputs in, a JSON-able result out, wherever the model runs."""

from __future__ import annotations

from typing import Callable

from . import tasks
from .errors import InvalidParameter, ModelNotFound, PgmlError
from .inputs import TaskSpec, check_generation_limits, check_input_limits, parse_args, parse_inputs, parse_task
from .models import read_config, resolve
from .runtimes import Deployed, TransformRequest, runtime_for
from .settings import Settings


def request(task_arg, args_arg, inputs_arg, *, task_is_json: bool, inputs_are_json: bool, settings: Settings,
            deployed: Callable[[str], Deployed | None] | None = None) -> TransformRequest:
    """The call checked (task, model, args, inputs, limits) before any model is involved."""
    spec = parse_task(task_arg, is_json=task_is_json)
    args = parse_args(args_arg)
    name, entry, model = task_of(spec, args, settings, deployed)
    raw = parse_inputs(inputs_arg, is_json=inputs_are_json or entry.inference.json_text(name))
    check_input_limits(raw, settings)
    check_generation_limits(args, settings)
    return TransformRequest(task=name, canonical=entry.name, model=model, options=spec.options, args=args,
                            inputs=raw, settings=settings, deployed=deployed)


def task_of(spec: TaskSpec, args: dict, settings: Settings,
            deployed: Callable[[str], Deployed | None] | None = None) -> tuple[str, tasks.TaskEntry, str]:
    """(the task to run, its entry, the model): the task's default model applied, and the task of a spec
    naming only a model told from its project (a tuned model's name) or from the model's config."""
    if spec.task is not None:
        name, entry = tasks.lookup(spec.task)
        return name, entry, spec.model or entry.default_model
    found = deployed(spec.model) if deployed is not None else None
    if found is not None:
        told = tasks.find(found.task)[1].serving
    else:
        try:
            config = read_config(resolve(spec.model, spec.options, settings))
        except ModelNotFound as exc:  # not on this server (a route may serve it): the call must name the task
            raise InvalidParameter(f"the task of model {spec.model} cannot be told: {exc.message}",
                                   hint=f'Name the task: {{"task": "text-classification", "model": "{spec.model}"}}.'
                                   ) from None
        told = tasks.infer(spec.model, config, args)
    return (*tasks.lookup(told), spec.model)


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


def predict(project: str, texts: list, pairs: list | None, *, settings: Settings,
            deployed: Callable[[str], Deployed | None]) -> list:
    """pgml.predict / predict_batch: the label a tuned text-classification project gives each text (or each
    text and pair, for a text-pair-classification project); None for a NULL input."""
    found = deployed(project)
    if found is None:
        raise PgmlError(f"there is no project {project}", sqlstate="42704",
                        hint="pgml.predict serves projects tuned by pgml.tune (listed in pgml.projects); run a hub "
                             "model with pgml.transform.")
    wanted = "text-classification" if pairs is None else "text-pair-classification"
    entry = tasks.find(found.task)[1]
    if entry.name != wanted:
        calls = {"text-classification": "pgml.predict(project, input) or pgml.predict_batch(project, inputs)",
                 "text-pair-classification": "pgml.predict(project, text1, text2)"}
        hint = (f"Call {calls[entry.name]}." if entry.name in calls else
                f'pgml.transform serves it: pgml.transform(\'{{"task": "{entry.serving}", "model": "{project}"}}\''
                "::jsonb, inputs => ARRAY[...]).")
        raise PgmlError(f"project {project} is a {found.task} project; pgml.predict with "
                        f"{'two texts' if pairs else 'one text'} serves {wanted} projects", sqlstate="42809",
                        hint=hint)
    keep = [i for i, text in enumerate(texts) if text is not None and (pairs is None or pairs[i] is not None)]
    labels = [None] * len(texts)
    if keep:
        items = [texts[i] if pairs is None else {"text": texts[i], "text_pair": pairs[i]} for i in keep]
        name = "text-classification"
        call = TransformRequest(task=name, canonical=name, model=project, options={}, args={},
                                inputs=check_input_limits(items, settings), settings=settings, deployed=deployed)
        for i, result in zip(keep, runtime_for(project, name, settings).transform(call)):
            labels[i] = result["label"]
    return labels
