"""The task registry: one entry per task, for pgml.transform and pgml.tune alike.

As transformers' SUPPORTED_TASKS, each entry says everything about one task: its name and the other
names it answers to (one vocabulary for both functions: every name either takes, and the names
stored in pgml.projects), the class that runs it in pgml.transform and the model a bare task name
gets, the class that trains it in pgml.tune, the metric that decides whether a tuned model is
deployed, and the pgml.transform task that serves a tuned model.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from ..errors import InvalidParameter
from .base import Task
from .pipelines import (FillMaskTask, TextClassificationTask, TextGenerationTask, TokenClassificationTask,
                        ZeroShotClassificationTask)
from .question_answering import QuestionAnsweringTask
from .seq2seq import TRANSLATION_TASK, Seq2SeqTask


@dataclass(frozen=True)
class TaskEntry:
    name: str
    aliases: tuple[str, ...] = ()
    inference: type[Task] | None = None   # what pgml.transform runs (None: a pgml.tune task only)
    default_model: str | None = None      # the model a bare task name gets (transformers 4.x's defaults)
    tuning: str | None = None             # pgml.tune's class, "module:Class" in pgml_plpy.tuning.tasks
    tune_name: str | None = None          # the name pgml.tune records and returns, when not name
    metric: tuple[str, bool] | None = None  # the tuned model's target metric, and whether greater is better
    served_as: str | None = None          # the pgml.transform task serving a tuned model, when not name

    @property
    def recorded(self) -> str:
        """The task name pgml.tune stores in pgml.projects and returns (PostgresML's fine-tuning names)."""
        return self.tune_name or self.name

    @property
    def serving(self) -> str:
        return self.served_as or self.name

    def tuning_class(self):
        """pgml.tune's class for the task (imported here: pgml.transform never loads the training code)."""
        module, cls = self.tuning.split(":")
        return getattr(importlib.import_module(f"pgml_plpy.tuning.tasks.{module}"), cls)


TASKS = {entry.name: entry for entry in (
    # key-mask and text-to-text-generation: the names of PostgresML's LLM page ("Supported tasks")
    TaskEntry("fill-mask", ("key-mask",), FillMaskTask, "distilbert/distilroberta-base"),
    TaskEntry("text-classification", ("sentiment-analysis",), TextClassificationTask,
              "distilbert/distilbert-base-uncased-finetuned-sst-2-english",
              tuning="classification:TextClassification", metric=("f1", True)),
    TaskEntry("text-pair-classification", tuning="classification:TextPairClassification", metric=("f1", True),
              served_as="text-classification"),
    TaskEntry("token-classification", ("ner",), TokenClassificationTask,
              "dbmdz/bert-large-cased-finetuned-conll03-english", tuning="tokens:TokenClassification",
              metric=("f1", True)),
    TaskEntry("zero-shot-classification", inference=ZeroShotClassificationTask,
              default_model="facebook/bart-large-mnli"),
    TaskEntry("question-answering", inference=QuestionAnsweringTask,
              default_model="distilbert/distilbert-base-cased-distilled-squad", tuning="qa:QuestionAnswering",
              metric=("f1", True)),
    TaskEntry("summarization", inference=Seq2SeqTask, default_model="sshleifer/distilbart-cnn-12-6",
              tuning="seq2seq:Seq2Seq", metric=("rougeL", True)),
    TaskEntry("translation", inference=Seq2SeqTask, default_model="google-t5/t5-base", tuning="seq2seq:Seq2Seq",
              metric=("bleu", True)),
    TaskEntry("text2text-generation", ("text2text", "text-to-text-generation"), Seq2SeqTask, "google-t5/t5-base", tuning="seq2seq:Seq2Seq",
              tune_name="text2text", metric=("rougeL", True)),
    TaskEntry("text-generation", inference=TextGenerationTask, default_model="openai-community/gpt2",
              tuning="causal:TextGeneration", metric=("perplexity", False)),
    TaskEntry("conversational", ("conversation", "chat"), TextGenerationTask, "HuggingFaceTB/SmolLM2-135M-Instruct",
              tuning="causal:Conversation", tune_name="conversation", metric=("perplexity", False)),
)}
_NAMES = {name: entry for entry in TASKS.values() for name in (entry.name, *entry.aliases)}


def find(name: str) -> tuple[str, TaskEntry] | None:
    """(the name to run, its entry) for any name of a task; None for a name no task has.
    translation_xx_to_yy keeps its name (it selects the languages)."""
    if TRANSLATION_TASK.match(name):
        return name, TASKS["translation"]
    entry = _NAMES.get(name)
    return (entry.name, entry) if entry is not None else None


def lookup(name: str) -> tuple[str, TaskEntry]:
    """pgml.transform's task: (the name to run, its entry)."""
    found = find(name)
    if found is None:
        raise InvalidParameter(f"unknown task {name!r}",
                               hint="Tasks: " + ", ".join(n for n, e in sorted(TASKS.items()) if e.inference)
                                    + ", translation_xx_to_yy.")
    if found[1].inference is None:
        raise InvalidParameter(f"{name} is a pgml.tune task: pgml.transform serves its models as "
                               f"{found[1].serving}", hint=f"Call pgml.transform with task {found[1].serving}.")
    return found
