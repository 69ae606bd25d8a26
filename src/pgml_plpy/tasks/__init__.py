"""Task dispatch: task names, their implementations and default models."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidParameter
from .base import Task
from .pipelines import (FillMaskTask, TextClassificationTask, TextGenerationTask, TokenClassificationTask,
                        ZeroShotClassificationTask)
from .question_answering import QuestionAnsweringTask
from .seq2seq import TRANSLATION_TASK, Seq2SeqTask


@dataclass(frozen=True)
class TaskInfo:
    cls: type[Task]
    default_model: str  # the model a bare task name gets (transformers 4.x's defaults)


TASKS = {
    "fill-mask": TaskInfo(FillMaskTask, "distilbert/distilroberta-base"),
    "text-classification": TaskInfo(TextClassificationTask,
                                    "distilbert/distilbert-base-uncased-finetuned-sst-2-english"),
    "token-classification": TaskInfo(TokenClassificationTask, "dbmdz/bert-large-cased-finetuned-conll03-english"),
    "zero-shot-classification": TaskInfo(ZeroShotClassificationTask, "facebook/bart-large-mnli"),
    "text-generation": TaskInfo(TextGenerationTask, "openai-community/gpt2"),
    "conversational": TaskInfo(TextGenerationTask, "HuggingFaceTB/SmolLM2-135M-Instruct"),
    "question-answering": TaskInfo(QuestionAnsweringTask, "distilbert/distilbert-base-cased-distilled-squad"),
    "summarization": TaskInfo(Seq2SeqTask, "sshleifer/distilbart-cnn-12-6"),
    "translation": TaskInfo(Seq2SeqTask, "google-t5/t5-base"),
    "text2text-generation": TaskInfo(Seq2SeqTask, "google-t5/t5-base"),
}
ALIASES = {"sentiment-analysis": "text-classification", "ner": "token-classification"}


def lookup(name: str) -> tuple[str, TaskInfo]:
    """(task name to run, its TaskInfo); translation_xx_to_yy keeps its name (it selects a prefix)."""
    name = ALIASES.get(name, name)
    if TRANSLATION_TASK.match(name):
        return name, TASKS["translation"]
    if name not in TASKS:
        raise InvalidParameter(f"unknown task {name!r}",
                               hint="Tasks: " + ", ".join(sorted(TASKS)) + ", translation_xx_to_yy.")
    return name, TASKS[name]
