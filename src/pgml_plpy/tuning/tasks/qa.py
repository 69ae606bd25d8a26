"""question-answering: extractive spans from question, context and answer columns (SQuAD's recipe:
long contexts in overlapping windows, the answer's tokens as start / end labels, the CLS token for
windows without the answer and for unanswerable questions)."""

from __future__ import annotations

import numpy as np

from ...errors import InvalidParameter
from .. import metrics
from ..data import Relation, Rows
from .base import Role, TuneTask

N_BEST = 20


def _answer(value, context: str) -> tuple[list[str], int | None]:
    """(gold answer texts, start of the first in context) from a text or SQuAD JSONB answer; ([""], None)
    for an unanswerable question, (texts, -1) when the answer is not in the context."""
    start = None
    if isinstance(value, dict):
        texts = value.get("text", [])
        starts = value.get("answer_start", [])
        texts = [texts] if isinstance(texts, str) else texts
        starts = [starts] if isinstance(starts, int) else starts
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise InvalidParameter('a JSON answer needs "text": a string or a list of strings')
        if starts and isinstance(starts, list) and isinstance(starts[0], int):
            start = starts[0]
    elif isinstance(value, str):
        texts = [value]
    else:
        raise InvalidParameter("an answer must be text or SQuAD's JSON {\"text\": [...], \"answer_start\": [...]}")
    texts = [t for t in texts if t.strip()]
    if not texts:
        return [""], None
    if start is None or context[start:start + len(texts[0])] != texts[0]:
        start = context.find(texts[0])
    return texts, start


class QuestionAnswering(TuneTask):
    auto_class = "AutoModelForQuestionAnswering"
    roles = {"question": Role("question_column", "question", "text"),
             "context": Role("context_column", "context", "text"),
             "answer": Role("answer_column", "answers", "answer")}
    y_role = "answer"

    def check(self, rel: Relation, rows: Rows) -> None:
        super().check(rel, rows)
        kept, missing = [], 0
        for n, row in enumerate(rows.values, start=1):
            try:
                texts, start = _answer(row["answer"], row["context"])
            except InvalidParameter as exc:
                raise InvalidParameter(f"row {n} of {rel.name}: {exc.message}") from None
            if start == -1:
                missing += 1
                continue
            row["answers"], row["start"] = texts, start
            kept.append(row)
        if missing:
            rows.other[f"with an answer not in {self.columns['context']}"] = missing
            rows.values[:] = kept
        if not kept:
            raise InvalidParameter(f"no row of {rel.name} has its answer in its context")

    def load(self, source, settings):
        model, tokenizer = super().load(source, settings)
        self.needs_fast_tokenizer(tokenizer)
        return model, tokenizer

    def _windows(self, model, tokenizer, rows):
        length = self.max_length(model, tokenizer, 384)
        stride = self.hp.extras.get("doc_stride", min(128, length // 4))
        if stride >= length:
            raise InvalidParameter(f"doc_stride ({stride}) must be smaller than max_seq_length ({length})")
        return tokenizer([r["question"].lstrip() for r in rows], [r["context"] for r in rows],
                         truncation="only_second", max_length=length, stride=stride,
                         return_overflowing_tokens=True, return_offsets_mapping=True)

    def encode(self, model, tokenizer, rows):
        encoded = self._windows(model, tokenizer, rows)
        out = []
        for i in range(len(encoded["input_ids"])):
            row = rows[encoded["overflow_to_sample_mapping"][i]]
            offsets, sequence = encoded["offset_mapping"][i], encoded.sequence_ids(i)
            cls = encoded["input_ids"][i].index(tokenizer.cls_token_id) if tokenizer.cls_token_id in \
                encoded["input_ids"][i] else 0
            start_pos = end_pos = cls
            if row["start"] is not None:
                first, last = row["start"], row["start"] + len(row["answers"][0])
                context = [j for j, s in enumerate(sequence) if s == 1]
                if context and offsets[context[0]][0] <= first and offsets[context[-1]][1] >= last:
                    start_pos = next(j for j in context if offsets[j][1] > first)
                    end_pos = next(j for j in reversed(context) if offsets[j][0] < last)
            feature = {k: encoded[k][i] for k in encoded.keys() if k not in ("offset_mapping",
                                                                               "overflow_to_sample_mapping")}
            out.append({**feature, "start_positions": start_pos, "end_positions": end_pos})
        return out

    def evaluate(self, trainer, model, tokenizer, rows, features):
        # the windows of encode(), in the same order, with their offsets
        output = trainer.predict(features)
        loss = output.metrics.get("test_loss", float("nan"))
        encoded = self._windows(model, tokenizer, rows)
        start_logits, end_logits = output.predictions[:2]
        max_answer = self.hp.extras.get("max_answer_length", 30)
        allow_empty = any(r["start"] is None for r in rows)
        best: dict[int, tuple[float, str]] = {}
        null: dict[int, float] = {}
        for i in range(len(features)):
            example = encoded["overflow_to_sample_mapping"][i]
            context = rows[example]["context"]
            offsets, sequence = encoded["offset_mapping"][i], encoded.sequence_ids(i)
            n = len(features[i]["input_ids"])
            start, end = np.asarray(start_logits[i][:n]), np.asarray(end_logits[i][:n])
            null[example] = min(null.get(example, np.inf), float(start[0] + end[0]))
            for s in np.argsort(start)[::-1][:N_BEST]:
                for e in np.argsort(end)[::-1][:N_BEST]:
                    if sequence[s] != 1 or sequence[e] != 1 or e < s or e - s + 1 > max_answer:
                        continue
                    score = float(start[s] + end[e])
                    if example not in best or score > best[example][0]:
                        best[example] = (score, context[offsets[s][0]:offsets[e][1]])
        answers = []
        for example in range(len(rows)):
            score, text = best.get(example, (-np.inf, ""))
            if allow_empty and null.get(example, -np.inf) > score:
                text = ""
            answers.append(text)
        result = metrics.squad(answers, [r["answers"] for r in rows])
        result["eval_loss"] = float(loss)
        return result
