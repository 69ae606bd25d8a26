"""Extractive question answering, as the transformers 4.x pipeline did it.

transformers 5 removed the question-answering pipeline. For the same model and
inputs this returns what 4.x returned: long contexts split into overlapping
chunks (max_seq_len / doc_stride), start/end probabilities over context tokens,
the best spans of at most max_answer_len tokens, spans widened to whole words,
answers with the same text merged, and {"score", "start", "end", "answer"} (one
object for one input and top_k 1, lists otherwise).
"""

from __future__ import annotations

from ..errors import InvalidParameter, NotSupported
from .base import ModelTask, Stages, batches, positive_int, split_args

PREPROCESS = ("max_seq_len", "doc_stride", "padding", "max_question_len")
FORWARD = ("batch_size",)
POSTPROCESS = ("top_k", "topk", "max_answer_len", "handle_impossible_answer", "align_to_words")


def _int(args, name, default):
    value = args.get(name, default)
    return value if value is None else positive_int(name, value)


def decode_spans(start, end, top_k, max_answer_len, undesired):
    """The top_k (start, end, score) spans with start <= end < start + max_answer_len."""
    import numpy as np  # here, not at the top: every settings read imports the task registry

    outer = np.matmul(start[:, None], end[None, :])
    candidates = np.tril(np.triu(outer), max_answer_len - 1)
    flat = candidates.flatten()
    if top_k == 1:
        order = [np.argmax(flat)]
    elif len(flat) < top_k:
        order = np.argsort(-flat)
    else:
        idx = np.argpartition(-flat, top_k)[0:top_k]
        order = idx[np.argsort(-flat[idx])]
    starts, ends = np.unravel_index(order, candidates.shape)
    # 4.x tested membership in the nonzero() of a (1, L) mask: its row indices (zeros) let
    # token 0 through as well. Zero-score spans only show up when top_k exceeds real answers.
    allowed = undesired.nonzero()[0]
    allowed = np.concatenate([np.zeros_like(allowed), allowed])
    keep = np.isin(starts, allowed) & np.isin(ends, allowed)
    starts, ends = starts[keep], ends[keep]
    return starts, ends, candidates[starts, ends]


def _softmax(logits):
    import numpy as np

    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum()


class QuestionAnsweringTask(ModelTask):
    """Each input is its own batch: its windows go through the model batch_size at a time."""

    auto_class = "AutoModelForQuestionAnswering"

    @staticmethod
    def json_text(task):
        return True  # each TEXT input holds {"question": ..., "context": ...}

    def prepare(self, items):
        for i, item in enumerate(items, start=1):
            if not isinstance(item, dict):
                raise InvalidParameter(f'question-answering inputs[{i}] must be a JSON object {{"question", "context"}}',
                                       hint='Example: ARRAY[\'{"question": "Where?", "context": "In Paris."}\']')
            for key in ("question", "context"):
                if not isinstance(item.get(key), str) or not item[key].strip():
                    raise InvalidParameter(f'question-answering inputs[{i}] needs a non-empty "{key}" string')
        if not self.tokenizer.is_fast:
            raise NotSupported(f"question-answering needs a fast tokenizer, {self.model.name_or_path} has none")
        return items

    def stages(self, args) -> Stages:
        stages = split_args("question-answering", args, preprocess=PREPROCESS, forward=FORWARD,
                            postprocess=POSTPROCESS)
        pre, post = stages.preprocess, stages.postprocess
        max_seq_len = _int(pre, "max_seq_len", min(self.tokenizer.model_max_length, 384))
        doc_stride = _int(pre, "doc_stride", min(max_seq_len // 2, 128))
        if doc_stride > max_seq_len:
            raise InvalidParameter(f"doc_stride ({doc_stride}) is larger than max_seq_len ({max_seq_len})")
        # max_question_len is taken, as 4.x took it: it only limited its slow-tokenizer path
        stages.preprocess = {"max_seq_len": max_seq_len, "doc_stride": doc_stride,
                             "padding": pre.get("padding", "do_not_pad")}
        stages.forward = {"batch_size": _int(stages.forward, "batch_size", 1)}
        stages.postprocess = {"top_k": _int(post, "top_k", _int(post, "topk", 1)),
                              "max_answer_len": _int(post, "max_answer_len", 15),
                              "handle_impossible": bool(post.get("handle_impossible_answer", False)),
                              "align_to_words": bool(post.get("align_to_words", True))}
        return stages

    def preprocess(self, inputs, max_seq_len, doc_stride, padding):
        (item,) = inputs
        return {"item": item, "spans": self.encode(item, max_seq_len, doc_stride, padding)}

    def finish(self, results):
        return results[0] if len(results) == 1 else results

    def encode(self, item, max_seq_len, doc_stride, padding):
        """The tokenized chunks of one example, with the mask of tokens that cannot be answers."""
        import numpy as np

        question_first = self.tokenizer.padding_side == "right"
        question, context = item["question"], item["context"]
        encoded = self.tokenizer(
            text=question if question_first else context,
            text_pair=context if question_first else question,
            padding=padding,
            truncation="only_second" if question_first else "only_first",
            max_length=max_seq_len, stride=doc_stride,
            return_token_type_ids=True, return_overflowing_tokens=True,
            return_offsets_mapping=True, return_special_tokens_mask=True)
        spans = []
        for i in range(len(encoded["input_ids"])):
            input_ids = encoded["input_ids"][i]
            p_mask = [int(tok != 1) if question_first else 0 for tok in encoded.sequence_ids(i)]
            if self.tokenizer.cls_token_id is not None:  # the CLS token stays (unanswerable questions)
                for j in np.nonzero(np.array(input_ids) == self.tokenizer.cls_token_id)[0]:
                    p_mask[j] = 0
            spans.append({
                "inputs": {k: encoded[k][i] for k in self.tokenizer.model_input_names if k in encoded},
                "p_mask": np.array(p_mask),
                "encoding": encoded.encodings[i],
            })
        return spans

    def forward(self, model_inputs, batch_size):
        logits = []
        for chunk in batches(model_inputs["spans"], batch_size):
            features = self.tokenizer.pad([s["inputs"] for s in chunk], return_tensors="pt")
            out = self.model(**{k: v.to(self.model.device) for k, v in features.items()})
            for row, span in enumerate(chunk):
                n = len(span["inputs"]["input_ids"])
                logits.append((out.start_logits[row, :n].float().cpu().numpy(),
                               out.end_logits[row, :n].float().cpu().numpy()))
        return {**model_inputs, "logits": logits}

    def postprocess(self, model_outputs, top_k, handle_impossible, max_answer_len, align_to_words):
        """The input's answers: one object for top_k 1, a list otherwise."""
        import numpy as np

        item, spans, logits = model_outputs["item"], model_outputs["spans"], model_outputs["logits"]
        context = item["context"]
        question_first = self.tokenizer.padding_side == "right"
        min_null_score = 1000000.0
        answers = []
        for span, (start, end) in zip(spans, logits):
            attention = np.array(span["inputs"].get("attention_mask", np.ones(len(start), dtype=int)))
            undesired = np.abs(span["p_mask"] - 1) & attention
            mask = undesired == 0
            start = _softmax(np.where(mask, -10000.0, start))
            end = _softmax(np.where(mask, -10000.0, end))
            if handle_impossible:
                min_null_score = min(min_null_score, float(start[0] * end[0]))
            start[0] = end[0] = 0.0
            pre_top_k = top_k * 2 + 10 if align_to_words else top_k
            offset = 0
            if self.tokenizer.padding_side == "left":
                offset = int((np.array(span["inputs"]["input_ids"]) == self.tokenizer.pad_token_id).sum())
            for s, e, score in zip(*decode_spans(start, end, pre_top_k, max_answer_len, undesired)):
                begin, finish = self.char_span(span["encoding"], s - offset, e - offset,
                                               1 if question_first else 0, align_to_words)
                text = context[begin:finish]
                same = next((a for a in answers if a["answer"].lower() == text.lower()), None)
                if same:
                    same["score"] += float(score)
                else:
                    answers.append({"score": float(score), "start": int(begin), "end": int(finish), "answer": text})
        if handle_impossible:
            answers.append({"score": min_null_score, "start": 0, "end": 0, "answer": ""})
        answers = sorted(answers, key=lambda a: a["score"], reverse=True)[:top_k]
        return [answers[0] if len(answers) == 1 else answers]

    @staticmethod
    def char_span(encoding, s, e, sequence_index, align_to_words):
        """Character offsets in the context of tokens s..e, widened to whole words when asked."""
        if align_to_words:
            try:
                start_word, end_word = encoding.token_to_word(s), encoding.token_to_word(e)
                return (encoding.word_to_chars(start_word, sequence_index=sequence_index)[0],
                        encoding.word_to_chars(end_word, sequence_index=sequence_index)[1])
            except Exception:  # noqa: BLE001 - tokenizers without words: keep the token offsets, as 4.x did
                pass
        return encoding.offsets[s][0], encoding.offsets[e][1]
