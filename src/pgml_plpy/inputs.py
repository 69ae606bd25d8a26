"""Conversion of SQL arguments (task, args, inputs) into validated Python values.

PL/Python hands JSONB over as text and arrays as (possibly nested) lists with None
for NULL elements; every check here names the argument and element at fault.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .errors import InvalidJson, InvalidParameter, LimitExceeded, NullValue

# Keys of the task JSON that change how a model is loaded (they are part of the
# model cache key). Everything else in the task JSON is an error.
LOADER_OPTIONS = {
    "device": "device to run on: cpu, cuda, cuda:N, mps or a GPU index",
    "device_map": "accelerate device map (auto, balanced, sequential or a JSON map)",
    "torch_dtype": "weights dtype: float32, float16, bfloat16 or auto",
    "dtype": "same as torch_dtype",
    "revision": "hub revision (branch, tag or commit)",
    "trust_remote_code": "run code shipped with the model (needs huggingface_trust_remote_code)",
    "token": "Hugging Face token for gated or private hub models",
    "use_auth_token": "old name of token",
    "load_in_8bit": "8-bit quantization with bitsandbytes (CUDA)",
    "load_in_4bit": "4-bit quantization with bitsandbytes (CUDA)",
    "attn_implementation": "attention kernel: eager, sdpa, flash_attention_2",
    "model_kwargs": "more keyword arguments for from_pretrained",
}


@dataclass(frozen=True)
class TaskSpec:
    task: str | None    # None: told from the model's config
    model: str | None
    options: dict

    def cache_key(self, canonical_task: str, model: str) -> str:
        return json.dumps([canonical_task, model, self.options], sort_keys=True)


def _loads(text: str, what: str):
    try:
        return json.loads(text)
    except (TypeError, ValueError) as exc:
        raise InvalidJson(f"{what} is not valid JSON: {exc}") from None


def parse_task(task, *, is_json: bool) -> TaskSpec:
    """The task argument: a task name (TEXT) or {"task", "model", loader options} (JSONB)."""
    if task is None:
        raise NullValue("task must not be NULL",
                        hint='Pass a task name such as \'text-classification\' or {"task": ..., "model": ...}.')
    if not is_json:
        stripped = task.strip()
        if not stripped.startswith("{"):
            if not stripped:
                raise InvalidParameter("task must not be empty")
            return TaskSpec(stripped, None, {})
        task = stripped  # a JSON object passed as TEXT: read it as the JSONB form
    spec = _loads(task, "task")
    if not isinstance(spec, dict):
        raise InvalidParameter(f"task must be a JSON object or a task name, not {json_kind(spec)}",
                               hint='Example: {"task": "text-classification", "model": "distilbert-base-uncased"}')
    spec = dict(spec)
    name = spec.pop("task", None)
    model = spec.pop("model", None)
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise InvalidParameter('"model" in the task JSON must be a non-empty string')
    if name is None and model is None:
        raise InvalidParameter('task JSON needs a "task" string or a "model" (whose config tells the task)',
                               hint='Example: {"task": "text-generation", "model": "openai-community/gpt2"}')
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise InvalidParameter('"task" in the task JSON must be a non-empty string',
                               hint='Example: {"task": "text-generation", "model": "openai-community/gpt2"}')
    unknown = sorted(set(spec) - set(LOADER_OPTIONS))
    if unknown:
        raise InvalidParameter(f"unknown key{'s' if len(unknown) > 1 else ''} in task JSON: {', '.join(unknown)}",
                               hint="Known keys: task, model, " + ", ".join(LOADER_OPTIONS) + ".")
    if "use_auth_token" in spec:
        spec.setdefault("token", spec.pop("use_auth_token"))
    if "dtype" in spec:
        spec.setdefault("torch_dtype", spec.pop("dtype"))
    return TaskSpec(name.strip() if name else None, model.strip() if model else None, spec)


def json_kind(value) -> str:
    """The JSON name of a decoded value's type, for messages."""
    return "null" if value is None else {bool: "boolean", int: "integer", float: "number", str: "string",
                                         list: "array", dict: "object"}.get(type(value), type(value).__name__)


def parse_args(args, what: str = "args", example: str | None = '{"max_new_tokens": 32}') -> dict:
    """A JSON object of keyword arguments (transform's args, the kwargs of the other functions),
    as JSON text or already decoded."""
    if args is None:
        return {}
    value = _loads(args, what) if isinstance(args, str) else args
    if not isinstance(value, dict):
        raise InvalidParameter(f"{what} must be a JSON object, not {json_kind(value)}",
                               hint=f"Example: '{example}'" if example else None)
    return value


def parse_inputs(inputs, *, is_json: bool) -> list:
    """The inputs argument: a non-empty one-dimensional array without NULLs.

    TEXT[] elements stay strings; JSONB[] elements are decoded.
    """
    if inputs is None:
        raise NullValue("inputs must not be NULL")
    if not isinstance(inputs, list):  # a bare string if PL/Python ever passes one
        inputs = [inputs]
    if not inputs:
        raise InvalidParameter("inputs is an empty array", hint="Pass at least one input, e.g. ARRAY['some text'].")
    out = []
    for i, item in enumerate(inputs, start=1):
        if isinstance(item, list):
            raise InvalidParameter("inputs must be a one-dimensional array")
        if item is None:
            raise NullValue(f"inputs[{i}] is NULL", hint="Filter NULLs out, e.g. array_remove(arr, NULL).")
        out.append(_loads(item, f"inputs[{i}]") if is_json else item)
    return out


def _chars(item) -> int:
    if isinstance(item, str):
        return len(item)
    if isinstance(item, dict):
        return sum(_chars(v) for v in item.values())
    if isinstance(item, list):
        return sum(_chars(v) for v in item)
    return 0


def check_input_limits(items: list, settings, what: str = "inputs") -> list:
    """The inputs, if within the settings' max_inputs and max_input_chars."""
    if len(items) > settings.max_inputs:
        raise LimitExceeded(f"{len(items)} {what} in one call, more than max_inputs ({settings.max_inputs})",
                            hint="Split the work into several calls, or a pgml_admin may raise max_inputs.")
    for i, item in enumerate(items, start=1):
        if _chars(item) > settings.max_input_chars:
            raise LimitExceeded(f"{what}[{i}] has {_chars(item)} characters, more than max_input_chars "
                                f"({settings.max_input_chars})",
                                hint="Shorten it (pgml.chunk splits long documents), or a pgml_admin may raise "
                                     "max_input_chars.")
    return items


def check_generation_limits(args: dict, settings) -> dict:
    """The args, if the tokens and sequences they ask a generation for are within the settings."""
    for name in ("max_new_tokens", "max_tokens", "min_new_tokens", "max_length", "min_length"):
        value = args.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > settings.max_new_tokens:
            raise LimitExceeded(f"{name} {value} is more than max_new_tokens ({settings.max_new_tokens})",
                                hint="A pgml_admin may raise max_new_tokens.")
    sequences = max([v for v in (args.get(name) for name in ("num_return_sequences", "n", "num_beams"))
                     if isinstance(v, int) and not isinstance(v, bool)] or [1])
    if sequences > settings.max_sequences:
        raise LimitExceeded(f"the generation asks for {sequences} sequences, more than max_sequences "
                            f"({settings.max_sequences})", hint="A pgml_admin may raise max_sequences.")
    return args
