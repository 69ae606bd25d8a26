"""What every task shares: loading its model and tokenizer, and checking text inputs."""

from __future__ import annotations

from abc import ABC, abstractmethod

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


def take(args: dict, names) -> dict:
    """Remove and return the args named in names (those present)."""
    return {name: args.pop(name) for name in list(names) if name in args}


def batches(items: list, batch_size):
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidParameter(f"batch_size must be a positive integer, not {batch_size!r}")
    for start in range(0, len(items), batch_size):
        yield items[start:start + batch_size]
