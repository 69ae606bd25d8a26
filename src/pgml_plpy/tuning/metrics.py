"""Metrics on the test split, from well-kept packages that work offline.

Scales are those of the libraries Hugging Face users know them from: accuracy, F1, precision,
recall and ROUGE between 0 and 1; SQuAD exact match / F1 and sacrebleu's BLEU between 0 and 100.
"""

from __future__ import annotations

import collections
import math
import re
import string

from ..tasks import find


def target(task: str) -> tuple[str, bool]:
    """The metric that decides deployment for a task (any of its names), and whether greater is better."""
    return find(task)[1].metric


def better(task: str, new: dict | None, old: dict | None) -> bool:
    """Whether metrics new beat metrics old on the task's target metric (a missing old value loses)."""
    name, greater = target(task)
    new_value = (new or {}).get(name)
    old_value = (old or {}).get(name)
    if not _number(old_value):
        return True
    if not _number(new_value):
        return False
    return new_value > old_value if greater else new_value < old_value


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def classification(y_true: list[int], y_pred: list[int], n_labels: int) -> dict:
    """accuracy and macro-averaged F1 / precision / recall over every class of the table."""
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    labels = list(range(n_labels))
    precision, recall, f1, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average="macro",
                                                               zero_division=0)
    return {"accuracy": float(accuracy_score(y_true, y_pred)), "f1": float(f1), "precision": float(precision),
            "recall": float(recall)}


IOB = re.compile(r"^(O|[BIESL]-.+)$")


def tokens(true_tags: list[list[str]], pred_tags: list[list[str]]) -> dict:
    """Entity-level precision / recall / F1 (seqeval, micro-averaged, as the transformers examples report)
    when the tags are IOB names (O, B-PER, I-PER, ...); tag-level ones (macro) otherwise. Both with
    token accuracy."""
    flat_true = [t for seq in true_tags for t in seq]
    flat_pred = [t for seq in pred_tags for t in seq]
    accuracy = sum(a == b for a, b in zip(flat_true, flat_pred)) / max(len(flat_true), 1)
    if all(IOB.match(t) for t in set(flat_true) | set(flat_pred)):
        from seqeval.metrics import f1_score, precision_score, recall_score

        return {"accuracy": accuracy, "f1": float(f1_score(true_tags, pred_tags, zero_division=0)),
                "precision": float(precision_score(true_tags, pred_tags, zero_division=0)),
                "recall": float(recall_score(true_tags, pred_tags, zero_division=0))}
    from sklearn.metrics import precision_recall_fscore_support

    precision, recall, f1, _ = precision_recall_fscore_support(flat_true, flat_pred, average="macro",
                                                               zero_division=0)
    return {"accuracy": accuracy, "f1": float(f1), "precision": float(precision), "recall": float(recall)}


def _normalize_answer(text: str) -> str:
    """SQuAD's normalization: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _f1(prediction: str, truth: str) -> float:
    pred, gold = _normalize_answer(prediction).split(), _normalize_answer(truth).split()
    if not pred or not gold:
        return float(pred == gold)
    common = collections.Counter(pred) & collections.Counter(gold)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def squad(predictions: list[str], answers: list[list[str]]) -> dict:
    """SQuAD v1.1 / v2 exact match and F1 (0-100), each prediction against its best gold answer
    (an unanswerable question's gold answers are [""])."""
    em = f1 = 0.0
    for prediction, golds in zip(predictions, answers):
        golds = golds or [""]
        em += max(float(_normalize_answer(prediction) == _normalize_answer(g)) for g in golds)
        f1 += max(_f1(prediction, g) for g in golds)
    n = max(len(predictions), 1)
    return {"exact_match": 100 * em / n, "f1": 100 * f1 / n}


def seq2seq(predictions: list[str], references: list[str]) -> dict:
    """Mean ROUGE-1/2/L/Lsum F-measures (rouge-score, stemmed; Lsum splits on newlines), corpus BLEU and
    chrF (sacrebleu), and the mean generated length in words."""
    import sacrebleu
    from rouge_score import rouge_scorer

    kinds = ["rouge1", "rouge2", "rougeL", "rougeLsum"]
    scorer = rouge_scorer.RougeScorer(kinds, use_stemmer=True)
    sums = dict.fromkeys(kinds, 0.0)
    for prediction, reference in zip(predictions, references):
        scores = scorer.score(reference, prediction)
        for k in kinds:
            sums[k] += scores[k].fmeasure
    n = max(len(predictions), 1)
    out = {k: sums[k] / n for k in kinds}
    out["bleu"] = float(sacrebleu.corpus_bleu(predictions, [references]).score)
    out["chrf"] = float(sacrebleu.corpus_chrf(predictions, [references]).score)
    out["gen_len"] = sum(len(p.split()) for p in predictions) / n
    return out


def language_model(eval_loss: float) -> dict:
    return {"eval_loss": float(eval_loss), "perplexity": float(math.exp(min(eval_loss, 700)))}
