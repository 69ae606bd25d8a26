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
    TaskEntry("text2text-generation", ("text2text", "text-to-text-generation"), Seq2SeqTask, "google-t5/t5-base",
              tuning="seq2seq:Seq2Seq", tune_name="text2text", metric=("rougeL", True)),
    TaskEntry("text-generation", inference=TextGenerationTask, default_model="openai-community/gpt2",
              tuning="causal:TextGeneration", metric=("perplexity", False)),
    TaskEntry("conversational", ("conversation", "chat"), TextGenerationTask, "HuggingFaceTB/SmolLM2-135M-Instruct",
              tuning="causal:Conversation", tune_name="conversation", metric=("perplexity", False)),
)}
_NAMES = {name: entry for entry in TASKS.values() for name in (entry.name, *entry.aliases)}


# A task JSON naming only a model: the task is told from the model's config, offline. transformers'
# pipeline() asks the hub for the model's pipeline_tag; here the config's architectures are looked up in
# the lists of the Auto classes that load them (modeling_auto's mappings), the most specific first (BART's
# ForConditionalGeneration is a masked LM too).
TOLD_BY_ARCHITECTURE = (
    ("MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES", "question-answering"),
    ("MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES", "token-classification"),
    ("MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES", "text-classification"),
    ("MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES", "text2text-generation"),
    ("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", "text-generation"),
    ("MODEL_FOR_MASKED_LM_MAPPING_NAMES", "fill-mask"),
)
# model_type of the encoder-decoders made for translation only (the hub tags them translation)
TRANSLATION_MODELS = {"marian", "fsmt", "m2m_100", "nllb-moe"}


def infer(model: str, config: dict | None, args: dict) -> str:
    """The task a model serves when the call names none, from its config.json: the head its architecture
    has (a sequence classifier is text-classification, or zero-shot-classification when the call gives
    candidate_labels and the model has an entailment label); for an encoder-decoder, the one task its
    task_specific_params name, translation for translation models, text2text-generation otherwise."""
    from transformers.models.auto import modeling_auto

    hint = f'Name the task: {{"task": "text-classification", "model": "{model}"}}.'
    architectures = set((config or {}).get("architectures") or [])
    task = next((task for mapping, task in TOLD_BY_ARCHITECTURE
                 if architectures & {n for v in getattr(modeling_auto, mapping).values()
                                     for n in ((v,) if isinstance(v, str) else v)}), None)
    if task is None:
        what = "it has no config.json" if config is None else \
            f"architectures {sorted(architectures)}" if architectures else "its config names no architectures"
        raise InvalidParameter(f"the task of model {model} cannot be told from its config ({what})", hint=hint)
    if task == "text-classification" and "candidate_labels" in args:
        labels = [str(label).lower() for label in (config.get("id2label") or {}).values()]
        if not any(label.startswith("entail") for label in labels):
            raise InvalidParameter(f"model {model} has no entailment label, so it cannot do zero-shot-"
                                   "classification (args.candidate_labels)",
                                   hint="Use an NLI model (labels entailment / neutral / contradiction), or leave "
                                        "candidate_labels out for its own labels.")
        return "zero-shot-classification"
    if task == "text2text-generation":
        named = [name for name in (config.get("task_specific_params") or {}) if find(name) is not None]
        if len(named) > 1:
            raise InvalidParameter(f"model {model} is made for several tasks ({', '.join(named)}), so the task "
                                   "cannot be told", hint=f'Name one: {{"task": "{named[0]}", "model": "{model}"}}.')
        if named:
            return named[0]
        if config.get("model_type") in TRANSLATION_MODELS:
            return "translation"
    return task


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
