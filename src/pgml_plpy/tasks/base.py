"""What every task shares: loading its model and tokenizer, checking text inputs, and the one shape of a run.

Every task runs as a transformers Pipeline does: the call's args split by stage, then preprocess ->
forward (under torch.inference_mode) -> postprocess. The tasks transformers 5 still has a pipeline for
(PipelineTask) hand the args to it; the tasks it dropped (question-answering, the seq2seq tasks) are
ModelTasks, which do the same here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from ..errors import InvalidParameter
from ..models import Source, load_pretrained
from ..settings import Settings


class Task(ABC):
    """A loaded model serving one task; `run(items, args)` returns a JSON-able result.

    Subclasses name the transformers Auto class that loads their model and implement
    `run`; `prepare` checks and converts the decoded inputs.
    """

    auto_class: str = ""

    def __init__(self, task: str, model, tokenizer, device):
        self.task = task
        self.model = model
        self.tokenizer = tokenizer
        self.device = device

    @classmethod
    def load(cls, task: str, options: dict, source: Source, settings: Settings) -> "Task":
        import transformers

        model, tokenizer, device = load_pretrained(getattr(transformers, cls.auto_class), options, source,
                                                   settings, task)
        return cls(task, model, tokenizer, device)

    @staticmethod
    def json_text(task: str) -> bool:
        """Whether this task's TEXT[] inputs hold JSON (question-answering's {"question", "context"})."""
        return False

    def prepare(self, items: list) -> list:
        """The decoded inputs checked and converted for this task (text by default)."""
        for i, item in enumerate(items, start=1):
            if not isinstance(item, str):
                raise InvalidParameter(f"{self.task} takes text inputs, but inputs[{i}] is "
                                       f"{type(item).__name__}",
                                       hint="Pass TEXT[] inputs (or JSONB[] holding strings).")
        return items

    @abstractmethod
    def run(self, items: list, args: dict):
        """The task's result for the prepared inputs and the call's args."""


@dataclass
class Stages:
    """A call's args split by the stage that takes them, as a Pipeline's _sanitize_parameters does."""

    preprocess: dict = field(default_factory=dict)
    forward: dict = field(default_factory=dict)
    postprocess: dict = field(default_factory=dict)
    batch_size: int = 1   # inputs per preprocess call


def split_args(task: str, args: dict, *, preprocess=(), postprocess=(), forward=None,
               batched: bool = False) -> Stages:
    """args by stage. forward None: every arg not named elsewhere goes to forward (generate()'s);
    otherwise an arg no stage names is an error. batched: batch_size sets inputs per preprocess call."""
    args = dict(args)
    stages = Stages(take(args, preprocess), {}, take(args, postprocess))
    if batched and "batch_size" in args:
        stages.batch_size = positive_int("batch_size", args.pop("batch_size"))
    if forward is None:
        stages.forward = args
    else:
        stages.forward = take(args, forward)
        if args:
            known = sorted({*preprocess, *forward, *postprocess, *(("batch_size",) if batched else ())})
            raise InvalidParameter(f"{task} does not take {', '.join(sorted(args))}",
                                   hint="It takes " + ", ".join(known) + ".")
    return stages


class ModelTask(Task):
    """A task run here rather than by a transformers pipeline, in a pipeline's shape."""

    @abstractmethod
    def stages(self, args: dict) -> Stages:
        """The call's args checked and split by stage (split_args)."""

    @abstractmethod
    def preprocess(self, inputs: list, **kwargs):
        """Model inputs for a batch of stages.batch_size inputs."""

    @abstractmethod
    def forward(self, model_inputs, **kwargs):
        """The model's outputs (run under torch.inference_mode)."""

    @abstractmethod
    def postprocess(self, model_outputs, **kwargs) -> list:
        """One result per input of the batch."""

    def finish(self, results: list):
        """The call's result from the results of every input (the list, by default)."""
        return results

    def run(self, items, args):
        import torch

        stages = self.stages(args)
        results = []
        for batch in batches(items, stages.batch_size):
            model_inputs = self.preprocess(batch, **stages.preprocess)
            with torch.inference_mode():
                model_outputs = self.forward(model_inputs, **stages.forward)
            results += self.postprocess(model_outputs, **stages.postprocess)
        return self.finish(results)


def take(args: dict, names) -> dict:
    """Remove and return the args named in names (those present)."""
    return {name: args.pop(name) for name in list(names) if name in args}


def positive_int(name: str, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidParameter(f"{name} must be a positive integer, not {value!r}")
    return value


def batches(items: list, batch_size):
    positive_int("batch_size", batch_size)
    for start in range(0, len(items), batch_size):
        yield items[start:start + batch_size]
