"""The tasks pgml.tune trains, one module per family."""

from __future__ import annotations

from ..params import Hyperparams, canonical_task
from .base import TuneTask
from .causal import Conversation, TextGeneration
from .classification import TextClassification, TextPairClassification
from .qa import QuestionAnswering
from .seq2seq import Seq2Seq
from .tokens import TokenClassification

CLASSES = {
    "text-classification": TextClassification,
    "text-pair-classification": TextPairClassification,
    "token-classification": TokenClassification,
    "question-answering": QuestionAnswering,
    "text-generation": TextGeneration,
    "conversation": Conversation,
}

# The pgml.transform task that serves a tuned model of each task.
SERVED_AS = {
    "text-classification": "text-classification",
    "text-pair-classification": "text-classification",
    "token-classification": "token-classification",
    "question-answering": "question-answering",
    "summarization": "summarization",
    "translation": "translation",
    "text2text": "text2text-generation",
    "text-generation": "text-generation",
    "conversation": "conversational",
}


def make(task_arg: str, hp: Hyperparams, y_column_name: str | None) -> TuneTask:
    task = canonical_task(task_arg)
    if task in ("summarization", "translation", "text2text"):
        return Seq2Seq(task, hp, y_column_name, task_arg=task_arg.strip())
    return CLASSES[task](task, hp, y_column_name)
