"""token-classification: one tag per word, from an array or JSONB column; words from an array, JSONB or
text split on whitespace. Only each word's first sub-token carries its tag (the transformers recipe)."""

from __future__ import annotations

from ...errors import InvalidParameter
from .. import metrics
from ..data import Relation, Rows
from .base import Role, TuneTask, predictions
from .classification import _sort_key, label_name


class TokenClassification(TuneTask):
    auto_class = "AutoModelForTokenClassification"
    roles = {"tokens": Role("text_column", "tokens", "tokens"), "tags": Role("class_column", "ner_tags", "tags")}
    y_role = "tags"

    def check(self, rel: Relation, rows: Rows) -> None:
        super().check(rel, rows)
        tokens_col, tags_col = self.columns["tokens"], self.columns["tags"]
        for n, row in enumerate(rows.values, start=1):
            words = row["tokens"]
            if isinstance(words, str):
                words = words.split()
            if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
                raise InvalidParameter(f"row {n} of {rel.name}: {tokens_col} is not a list of words")
            tags = row["tags"]
            if not isinstance(tags, list) or not all(isinstance(t, (str, int)) and not isinstance(t, bool)
                                                     for t in tags):
                raise InvalidParameter(f"row {n} of {rel.name}: {tags_col} is not a list of tags (strings or "
                                       "integers)")
            if len(words) != len(tags):
                raise InvalidParameter(f"row {n} of {rel.name}: {len(words)} words in {tokens_col} but "
                                       f"{len(tags)} tags in {tags_col}", hint="Every word needs one tag.")
            row["tokens"], row["tags"] = words, tags
        self.values = sorted({t for r in rows.values for t in r["tags"]}, key=_sort_key)
        if len(self.values) < 2:
            raise InvalidParameter(f"column {tags_col} of {rel.name} holds one tag only: a tagger needs at least "
                                   "two")
        self.names = [label_name(v) for v in self.values]
        self.index = {v: i for i, v in enumerate(self.values)}

    def model_kwargs(self) -> dict:
        id2label = dict(enumerate(self.names))
        return {"num_labels": len(self.names), "id2label": id2label,
                "label2id": {name: i for i, name in id2label.items()}, "ignore_mismatched_sizes": True}

    def load(self, source, settings):
        model, tokenizer = super().load(source, settings)
        self.needs_fast_tokenizer(tokenizer)
        return model, tokenizer

    def encode(self, model, tokenizer, rows):
        encoded = tokenizer([r["tokens"] for r in rows], is_split_into_words=True, truncation=True,
                            max_length=self.max_length(model, tokenizer))
        out = []
        for i, row in enumerate(rows):
            labels, previous = [], None
            for word in encoded.word_ids(i):
                labels.append(-100 if word is None or word == previous else self.index[row["tags"][word]])
                previous = word
            out.append({**{k: encoded[k][i] for k in encoded.keys()}, "labels": labels})
        return out

    def collator(self, model, tokenizer):
        import transformers

        return transformers.DataCollatorForTokenClassification(tokenizer)

    def evaluate(self, trainer, model, tokenizer, rows, features):
        output = trainer.predict(features)
        predicted = predictions(output).argmax(-1)
        true_tags, pred_tags = [], []
        for feature, row_pred in zip(features, predicted):
            truth, guess = [], []
            for label, p in zip(feature["labels"], row_pred):
                if label != -100:
                    truth.append(self.names[label])
                    guess.append(self.names[int(p)])
            true_tags.append(truth)
            pred_tags.append(guess)
        result = metrics.tokens(true_tags, pred_tags)
        result["eval_loss"] = float(output.metrics.get("test_loss", float("nan")))
        return result
