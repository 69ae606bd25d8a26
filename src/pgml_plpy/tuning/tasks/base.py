"""What every tuning task shares: its columns, their checks, loading the base model, tokenizing in chunks."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from ... import interrupts
from ...errors import DatatypeMismatch, InvalidParameter, NotSupported
from ...models import Source, load_pretrained
from ...settings import Settings
from ..data import Column, Relation, Rows
from ..params import Hyperparams

CHUNK = 512  # rows tokenized between interrupt checks


@dataclass(frozen=True)
class Role:
    """One column the task reads: its dataset_args key, default column name and accepted types."""

    key: str              # dataset_args key, e.g. "text_column"
    default: str          # column name when neither dataset_args nor y_column_name says
    kind: str             # "text", "label", "tokens", "tags", "answer", "chat_text"
    required: bool = True


KINDS = {
    "text": "text (text, varchar)",
    "label": "class values (text, varchar, an integer type, boolean or an enum)",
    "tokens": "words: text[], a JSONB array of strings, or text split on whitespace",
    "tags": "one tag per word: text[], an integer array or a JSONB array",
    "answer": "the answer text, or SQuAD's JSONB {\"text\": [...], \"answer_start\": [...]}",
}


def kind_ok(kind: str, column: Column) -> bool:
    if kind == "text":
        return column.is_text
    if kind == "label":
        return column.is_label
    if kind == "tokens":
        return column.is_text or column.is_text_array or column.is_json
    if kind == "tags":
        return column.is_json or (column.category == "A" and (column.element_category == "S"
                                                               or column.element in ("int2", "int4", "int8")))
    if kind == "answer":
        return column.is_text or column.is_json
    raise AssertionError(kind)


class TuneTask(ABC):
    """A task pgml.tune trains: subclasses say which columns, model class and metrics."""

    auto_class = ""
    roles: dict[str, Role] = {}
    y_role = ""
    peft_task_type: str | None = None   # LoRA is supported (and stored as an adapter) where this is set
    lora_by_default = False
    stratify = False                     # whether 'stratified' sampling applies (classification)

    def __init__(self, task: str, hp: Hyperparams, y_column_name: str | None, run_name: str | None = None):
        self.task = task                      # the name pgml.tune records
        self.run_name = run_name or task      # pgml.transform's name of the task called (translation_en_to_fr)
        self.hp = hp
        self.y_column_name = y_column_name
        self.columns: dict[str, str] = {}
        self.notices: list[str] = []
        unknown = sorted(set(hp.dataset_args) - {r.key for r in self.roles.values()})
        if unknown:
            raise InvalidParameter(f"{task} does not take dataset_args {', '.join(unknown)}",
                                   hint="It takes " + ", ".join(r.key for r in self.roles.values()) + ".")
        self.lora = self._lora_config()

    # ------------------------------------------------------------------ columns and rows

    def bind(self, rel: Relation) -> dict[str, str]:
        """role -> column of rel, checked: named by dataset_args, y_column_name (the target) or the default."""
        named = {}
        for role, spec in self.roles.items():
            given = self.hp.dataset_args.get(spec.key)
            if role == self.y_role and self.y_column_name:
                if given and given != self.y_column_name:
                    raise InvalidParameter(f"y_column_name {self.y_column_name} and dataset_args.{spec.key} "
                                           f"{given} name different columns", hint="Give one of them.")
                given = self.y_column_name
            named[role] = given
        for role, spec in self.roles.items():
            column = named[role] or spec.default
            if named[role] is None and column not in rel.columns:
                if not spec.required:
                    continue
                column = self._infer(rel, role, spec, named) or column
            col = rel.column(column, spec.key if role != self.y_role else f"{spec.key}, y_column_name")
            if not kind_ok(spec.kind, col):
                raise DatatypeMismatch(f"column {column} of {rel.name} is {col.type}, but {self.task} needs "
                                       f"{KINDS[spec.kind]} there",
                                       hint="Cast it in a view, or name another column.")
            self.columns[role] = column
        return self.columns

    def _infer(self, rel: Relation, role: str, spec: Role, named: dict) -> str | None:
        """The only text column left for the one text input whose default column is absent (PostgresML 2.7
        read every column but y as the input)."""
        texts = [r for r, s in self.roles.items() if s.kind == "text" and s.required]
        if ([r for r in texts if r != self.y_role] or texts) != [role]:
            return None
        taken = {c for c in named.values() if c} | {s.default for s in self.roles.values()}
        candidates = [c.name for c in rel.columns.values() if c.is_text and c.name not in taken]
        if len(candidates) == 1:
            self.notices.append(f"{spec.key} is {candidates[0]}, the only text column left")
            return candidates[0]
        return None

    @property
    def optional_roles(self) -> set[str]:
        return {r for r, s in self.roles.items() if not s.required}

    def check(self, rel: Relation, rows: Rows) -> None:
        """Errors about the data found, before any training (subclasses add theirs)."""
        if not rows.values:
            why = f" ({rows.describe_skips()})" if rows.nulls else ""
            raise InvalidParameter(f"{rel.name} has no rows to train on: {rows.total} rows, "
                                   f"{rows.skipped} skipped{why}",
                                   hint="NULLs in the columns the task reads are skipped.")

    def labels_for_split(self, rows: Rows) -> list | None:
        """Values whose proportions a stratified split keeps (None: split at random)."""
        return None

    # ------------------------------------------------------------------ model

    def model_kwargs(self) -> dict:
        """from_pretrained arguments the task adds (labels, ...)."""
        return {}

    def load(self, source: Source, settings: Settings):
        """(model, tokenizer) for training: the loader options as pgml.transform handles them."""
        import transformers

        options = dict(self.hp.loader)
        extra = dict(options.get("model_kwargs") or {})
        if not isinstance(extra, dict):
            raise InvalidParameter("model_kwargs must be a JSON object")
        options["model_kwargs"] = {**extra, **self.model_kwargs()}
        model, tokenizer, _ = load_pretrained(getattr(transformers, self.auto_class), options, source, settings,
                                              f"tuning {self.task}")
        if tokenizer.pad_token is None:
            # GPT-2 style tokenizers have no pad token: pad with end of text (masked out of the loss)
            if tokenizer.eos_token is None:
                raise NotSupported(f"{source.name}'s tokenizer has neither a pad nor an end-of-text token")
            tokenizer.pad_token = tokenizer.eos_token
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        return model, tokenizer

    def needs_fast_tokenizer(self, tokenizer) -> None:
        if not tokenizer.is_fast:
            raise NotSupported(f"{self.task} needs a fast tokenizer (word and character offsets), and "
                               f"{tokenizer.name_or_path} has none")

    def _lora_config(self):
        value = self.hp.extras.get("lora_config")
        if value is False or (value is None and not self.lora_by_default):
            return None
        if self.peft_task_type is None:
            raise NotSupported(f"LoRA (lora_config) is not supported for {self.task}",
                               hint="It is for conversation, text-generation, summarization, translation and "
                                    "text2text. Leave lora_config out to train the whole model.")
        config = dict(value or {"r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "bias": "none"})
        given = config.get("task_type")
        if given is not None and given != self.peft_task_type:
            raise InvalidParameter(f"lora_config.task_type {given} does not fit {self.task} "
                                   f"({self.peft_task_type})")
        config["task_type"] = self.peft_task_type
        return config

    # ------------------------------------------------------------------ features and evaluation

    def max_length(self, model, tokenizer, default: int = 512) -> int:
        """max_seq_length, or the model's own limit (and at most default)."""
        limits = [tokenizer.model_max_length, getattr(model.config, "max_position_embeddings", None),
                  getattr(model.config, "n_positions", None)]
        limits = [x for x in limits if isinstance(x, int) and 0 < x < 1_000_000]
        model_limit = min(limits) if limits else default
        given = self.hp.extras.get("max_seq_length")
        if given is not None:
            return min(given, model_limit)
        return min(model_limit, default)

    def features(self, model, tokenizer, rows: list[dict]) -> list[dict]:
        """The Trainer's examples for rows (dicts of lists of ints)."""
        out = []
        for start in range(0, len(rows), CHUNK):
            interrupts.check()
            out += self.encode(model, tokenizer, rows[start:start + CHUNK])
        return out

    @abstractmethod
    def encode(self, model, tokenizer, rows: list[dict]) -> list[dict]:
        """The Trainer's examples for a chunk of rows."""

    def collator(self, model, tokenizer):
        import transformers

        return transformers.DataCollatorWithPadding(tokenizer)

    @abstractmethod
    def evaluate(self, trainer, model, tokenizer, rows: list[dict], features: list[dict]) -> dict:
        """The task's metrics on the test rows."""

    def finalize(self, model, tokenizer) -> None:
        """Changes to the model's config or tokenizer before they are saved (the default: none)."""

    def describe(self) -> str:
        return ", ".join(f"{self.roles[r].key} {c}" for r, c in self.columns.items())


def predictions(output):
    """The logits array of a Trainer.predict output (models may return extra arrays)."""
    pred = output.predictions
    return pred[0] if isinstance(pred, tuple) else pred
