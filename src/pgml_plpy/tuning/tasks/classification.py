"""text-classification and text-pair-classification: a sequence classification head whose labels are
the class values found in the table."""

from __future__ import annotations

from ...errors import InvalidParameter
from .. import metrics
from ..data import Relation, Rows
from .base import Role, TuneTask, predictions


def label_name(value) -> str:
    """A class value as PostgreSQL writes it (booleans as true / false)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _sort_key(value):
    return (0, value, "") if isinstance(value, (bool, int)) else (1, 0, str(value))


class TextClassification(TuneTask):
    auto_class = "AutoModelForSequenceClassification"
    roles = {"text": Role("text_column", "text", "text"), "label": Role("class_column", "class", "label")}
    y_role = "label"
    stratify = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.values: list = []      # class values, sorted; label i is values[i]
        self.names: list[str] = []

    def check(self, rel: Relation, rows: Rows) -> None:
        super().check(rel, rows)
        column = rel.columns[self.columns["label"]]
        self.values = sorted({r["label"] for r in rows.values}, key=_sort_key)
        names = column.class_names
        if names is not None and all(isinstance(v, int) and 0 <= v < len(names) for v in self.values):
            self.names = [names[v] for v in self.values]   # a ClassLabel column: its names
        else:
            self.names = [label_name(v) for v in self.values]
        if len(self.values) < 2:
            raise InvalidParameter(f"column {self.columns['label']} of {rel.name} holds one class only "
                                   f"({self.names[0]!r}): a classifier needs at least two",
                                   hint="Check the y_column_name, or the rows the relation returns.")
        if len(set(self.names)) != len(self.names):
            raise InvalidParameter(f"column {self.columns['label']} of {rel.name} has classes that read the same "
                                   "as text", hint="Cast the column to text in a view.")
        self.index = {v: i for i, v in enumerate(self.values)}

    def labels_for_split(self, rows: Rows) -> list:
        return [r["label"] for r in rows.values]

    def model_kwargs(self) -> dict:
        id2label = dict(enumerate(self.names))
        return {"num_labels": len(self.names), "id2label": id2label,
                "label2id": {name: i for i, name in id2label.items()},
                "problem_type": "single_label_classification", "ignore_mismatched_sizes": True}

    def texts(self, rows):
        return ([r["text"] for r in rows],)

    def encode(self, model, tokenizer, rows):
        encoded = tokenizer(*self.texts(rows), truncation=True, max_length=self.max_length(model, tokenizer))
        keys = list(encoded.keys())
        return [{**{k: encoded[k][i] for k in keys}, "labels": self.index[r["label"]]} for i, r in enumerate(rows)]

    def evaluate(self, trainer, model, tokenizer, rows, features):
        output = trainer.predict(features)
        predicted = predictions(output).argmax(-1).tolist()
        result = metrics.classification([f["labels"] for f in features], predicted, len(self.names))
        result["eval_loss"] = float(output.metrics.get("test_loss", float("nan")))
        return result


class TextPairClassification(TextClassification):
    roles = {"text1": Role("text1_column", "text1", "text"), "text2": Role("text2_column", "text2", "text"),
             "label": Role("class_column", "class", "label")}

    def texts(self, rows):
        return [r["text1"] for r in rows], [r["text2"] for r in rows]
