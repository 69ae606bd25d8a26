"""The hyperparams JSON of pgml.tune, checked before any data is read or model loaded.

PostgresML's shape: {"training_args": {...TrainingArguments...}, "dataset_args": {"text_column": ...},
"lora_config": {...}, "max_seq_length": 512, "load_in_8bit": false, "token": "..."}. Loader options
have the names pgml.transform's task JSON uses; the task extras are listed in EXTRAS.

PostgresML's flat form (its examples, and its docs before 2.8) is taken too: TrainingArguments at the top
level ({"learning_rate": 2e-5, "evaluation_strategy": "epoch"}, old names mapped to transformers 5's),
and the tokenization keys its tune read (FLAT_TASK_KEYS). One setting given in both forms is an error.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field

from ..errors import InvalidParameter
from ..inputs import LOADER_OPTIONS, parse_args
from ..tasks import TASKS, find

EXTRAS = {
    "max_seq_length": "longest input in tokens (longer inputs are truncated)",
    "max_target_length": "seq2seq: longest target in tokens; also the generation length for the test metrics",
    "doc_stride": "question-answering: overlap of the windows over long contexts",
    "max_answer_length": "question-answering: longest answer in tokens when scoring the test split",
    "prefix": "seq2seq: text put before every source (T5's 'summarize: '); the tuned model keeps it",
    "src_lang": "translation: source language code for tokenizers that take one (mBART, M2M100, NLLB)",
    "tgt_lang": "translation: target language code for tokenizers that take one",
    "chat_template": "conversation: a Jinja chat template for a model without one (saved with the model)",
    "lora_config": "peft LoraConfig arguments (conversation: on by default; false: full fine-tuning)",
    "generation_args": "seq2seq: generate() arguments for the test metrics (num_beams, ...)",
}
# PostgresML's flat task keys -> (the EXTRAS key they are, the tasks that took them; None: every task)
FLAT_TASK_KEYS = {
    "max_length": ("max_seq_length", None),
    "stride": ("doc_stride", ("question-answering",)),
    "max_input_length": ("max_seq_length", ("summarization",)),
    "max_summary_length": ("max_target_length", ("summarization",)),
}
# Kept by pgml.tune in pgml.models.hyperparams (as PostgresML did); accepted back on input.
RECORDED = ("model_name", "project_name")

# TrainingArguments that pgml_plpy decides: the value given is ignored, with a NOTICE saying why.
IGNORED_TRAINING_ARGS = {
    "output_dir": "checkpoints go to a temporary folder and the model into pgml.files",
    "overwrite_output_dir": "checkpoints go to a temporary folder and the model into pgml.files",
    "logging_dir": "progress goes to pgml.models.progress and pgml.logs",
    "push_to_hub": "the tuned model is stored in the database (pgml.files) and served by its project name",
    "hub_model_id": "nothing is pushed to the hub",
    "hub_token": "nothing is pushed to the hub",
    "hub_strategy": "nothing is pushed to the hub",
    "hub_private_repo": "nothing is pushed to the hub",
    "hub_always_push": "nothing is pushed to the hub",
    "hub_revision": "nothing is pushed to the hub",
    "report_to": "progress goes to NOTICEs, pgml.models.progress and pgml.logs",
    "disable_tqdm": "progress goes to NOTICEs, pgml.models.progress and pgml.logs",
    "dataloader_num_workers": "worker processes cannot be forked from a database backend",
    "dataloader_persistent_workers": "worker processes cannot be forked from a database backend",
    "dataloader_prefetch_factor": "worker processes cannot be forked from a database backend",
    "resume_from_checkpoint": "each tune starts from model_name",
}
# Values of those that agree with what pgml_plpy does anyway: no NOTICE for them.
SILENT = {"push_to_hub": (False,), "overwrite_output_dir": (True, False), "disable_tqdm": (True,),
          "report_to": ("none", [], ["none"], None), "dataloader_num_workers": (0,),
          "dataloader_persistent_workers": (False,), "dataloader_prefetch_factor": (None,),
          "resume_from_checkpoint": (None, False)}
# Names transformers renamed (old -> new), so that PostgresML-era hyperparams keep working.
RENAMED_TRAINING_ARGS = {"evaluation_strategy": "eval_strategy", "no_cuda": "use_cpu"}


@dataclass
class Hyperparams:
    training_args: dict = field(default_factory=dict)
    dataset_args: dict = field(default_factory=dict)
    loader: dict = field(default_factory=dict)      # pgml.transform's loader options
    extras: dict = field(default_factory=dict)      # EXTRAS
    model_name: str | None = None                   # a recorded hyperparams' model_name, if any
    notices: list[str] = field(default_factory=list)

    def record(self, model_name: str, project_name: str) -> dict:
        """What pgml.models.hyperparams keeps: the input (tokens left out) plus model and project names."""
        loader = {k: v for k, v in self.loader.items() if k != "token"}
        return {"training_args": self.training_args, "dataset_args": self.dataset_args, **loader, **self.extras,
                "model_name": model_name, "project_name": project_name}


def canonical_task(task: str) -> str:
    """The name pgml.tune records for a task it trains, from any name of the task."""
    if not isinstance(task, str) or not task.strip():
        raise InvalidParameter("task must be a non-empty string")
    found = find(task.strip())
    if found is None or found[1].tuning is None:
        raise InvalidParameter(f"pgml.tune cannot tune task {task!r}",
                               hint="Tasks: " + ", ".join(e.recorded for e in TASKS.values() if e.tuning) + ".")
    return found[1].recorded


def _object(value, what: str) -> dict:
    return dict(parse_args(value, what, None))


def _positive_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidParameter(f"{what} must be a positive integer, not {json.dumps(value)}")
    return value


@functools.cache
def training_arg_names() -> frozenset[str]:
    """TrainingArguments' keyword arguments, and the old names pgml.tune maps to theirs."""
    import dataclasses

    import transformers

    fields = {f.name for f in dataclasses.fields(transformers.TrainingArguments) if f.init}
    return frozenset(fields | set(RENAMED_TRAINING_ARGS))


def parse(hyperparams, task: str | None = None) -> Hyperparams:
    """hyperparams (JSON text or a dict) checked and split into its parts; task (pgml.tune's name of it)
    decides which of PostgresML's flat task keys apply."""
    if isinstance(hyperparams, str):
        try:
            hyperparams = json.loads(hyperparams)
        except ValueError as exc:
            raise InvalidParameter(f"hyperparams is not valid JSON: {exc}") from None
    raw = _object(hyperparams, "hyperparams")
    out = Hyperparams()
    out.training_args = _object(raw.pop("training_args", None), "hyperparams.training_args")
    out.dataset_args = _object(raw.pop("dataset_args", None), "hyperparams.dataset_args")
    for key in RECORDED:
        value = raw.pop(key, None)
        if key == "model_name" and value is not None:
            if not isinstance(value, str) or not value.strip():
                raise InvalidParameter("hyperparams.model_name must be a non-empty string")
            out.model_name = value.strip()
    for key in list(raw):
        if key in LOADER_OPTIONS:
            out.loader[key] = raw.pop(key)
        elif key in EXTRAS:
            out.extras[key] = raw.pop(key)
    _flat(raw, out, task)
    if raw:
        unknown = ", ".join(sorted(raw))
        flat = [f"{k} ({', '.join(FLAT_TASK_KEYS[k][1])} only)" for k in sorted(raw) if k in FLAT_TASK_KEYS]
        raise InvalidParameter(f"unknown key{'s' if len(raw) > 1 else ''} in hyperparams: {unknown}",
                               hint="Known keys: training_args, dataset_args, " + ", ".join(EXTRAS) + ", "
                                    + ", ".join(LOADER_OPTIONS) + ", and TrainingArguments' keyword arguments"
                                    + (f"; {', '.join(flat)}" if flat else "") + ".")
    if "use_auth_token" in out.loader:
        out.loader.setdefault("token", out.loader.pop("use_auth_token"))
    if "dtype" in out.loader:
        out.loader.setdefault("torch_dtype", out.loader.pop("dtype"))
    for key, value in out.dataset_args.items():
        if not isinstance(value, str) or not value:
            raise InvalidParameter(f"hyperparams.dataset_args.{key} must be a column name, not {json.dumps(value)}")
    for key in ("max_seq_length", "max_target_length", "doc_stride", "max_answer_length"):
        if key in out.extras:
            _positive_int(out.extras[key], f"hyperparams.{key}")
    for key in ("prefix", "src_lang", "tgt_lang", "chat_template"):
        if key in out.extras and not isinstance(out.extras[key], str):
            raise InvalidParameter(f"hyperparams.{key} must be a string")
    lora = out.extras.get("lora_config")
    if lora is not None and lora is not False and not isinstance(lora, dict):
        raise InvalidParameter("hyperparams.lora_config must be a JSON object of LoraConfig arguments, or false")
    _object(out.extras.get("generation_args"), "hyperparams.generation_args")
    training_args(out)  # checks names now, before any work
    return out


def _flat(raw: dict, out: Hyperparams, task: str | None) -> None:
    """PostgresML's flat keys moved from raw into their places in out."""
    for key in list(raw):
        name, tasks = FLAT_TASK_KEYS.get(key, (None, None))
        if name is None or (tasks is not None and task not in tasks):
            continue
        if name in out.extras:
            raise InvalidParameter(f"hyperparams gives {name} twice ({key} is PostgresML's name for it)",
                                   hint=f"Give {name} once.")
        out.extras[name] = raw.pop(key)
    flat = {key: raw.pop(key) for key in list(raw) if key in training_arg_names()}
    nested = {RENAMED_TRAINING_ARGS.get(k, k) for k in out.training_args}
    both = sorted({RENAMED_TRAINING_ARGS.get(k, k) for k in flat} & nested)
    if both:
        raise InvalidParameter(f"hyperparams gives {', '.join(both)} both at the top level and in training_args",
                               hint="Give each training argument once (training_args is the current form).")
    out.training_args.update(flat)


def training_args(h: Hyperparams) -> dict:
    """The user's TrainingArguments with renamed keys mapped and the ones pgml_plpy owns dropped."""
    args = {}
    for key, value in h.training_args.items():
        new = RENAMED_TRAINING_ARGS.get(key, key)
        if new != key and new in h.training_args:
            raise InvalidParameter(f"training_args gives both {key} and {new}, its transformers 5 name",
                                   hint=f"Give {new} only.")
        key = new
        if key in IGNORED_TRAINING_ARGS:
            if key in SILENT and value in SILENT[key]:
                continue
            notice = f"training_args.{key} is ignored: {IGNORED_TRAINING_ARGS[key]}"
            if notice not in h.notices:
                h.notices.append(notice)
            continue
        args[key] = value
    return args
