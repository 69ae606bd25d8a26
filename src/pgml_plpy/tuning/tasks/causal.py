"""text-generation and conversation: a causal language model.

text-generation learns every token of a text column (each text ends with the end-of-text token, so that
the tuned model learns to stop). conversation renders system / user / assistant columns through the
model's chat template and learns the assistant's reply only (the prompt's tokens are masked out of the
loss); it trains LoRA adapters by default. Both report the test split's loss and perplexity.
"""

from __future__ import annotations

from ...errors import InvalidParameter
from .. import metrics
from ..data import Relation, Rows
from .base import Role, TuneTask


class CausalLM(TuneTask):
    auto_class = "AutoModelForCausalLM"
    peft_task_type = "CAUSAL_LM"

    def collator(self, model, tokenizer):
        import transformers

        return transformers.DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100)

    def evaluate(self, trainer, model, tokenizer, rows, features):
        loss = trainer.evaluate(features, metric_key_prefix="test").get("test_loss", float("nan"))
        return metrics.language_model(loss)


class TextGeneration(CausalLM):
    roles = {"text": Role("text_column", "text", "text")}
    y_role = "text"

    def encode(self, model, tokenizer, rows):
        length = self.max_length(model, tokenizer)
        encoded = tokenizer([r["text"] for r in rows], truncation=True, max_length=length)
        out = []
        eos = tokenizer.eos_token_id
        for ids, mask in zip(encoded["input_ids"], encoded["attention_mask"]):
            if eos is not None and (not ids or ids[-1] != eos) and len(ids) < length:
                ids, mask = ids + [eos], mask + [1]
            out.append({"input_ids": ids, "attention_mask": mask, "labels": list(ids)})
        return out


class Conversation(CausalLM):
    roles = {"system": Role("system_column", "system", "text", required=False),
             "user": Role("user_column", "user", "text"),
             "assistant": Role("assistant_column", "assistant", "text")}
    y_role = "assistant"
    lora_by_default = True

    def load(self, source, settings):
        model, tokenizer = super().load(source, settings)
        template = self.hp.extras.get("chat_template")
        if template is not None:
            tokenizer.chat_template = template
        if not getattr(tokenizer, "chat_template", None):
            raise InvalidParameter(f"{source.name} has no chat template, so conversations cannot be rendered",
                                   hint="Use a chat (instruct) model, or pass a Jinja template as "
                                        "hyperparams.chat_template (it is saved with the tuned model).")
        return model, tokenizer

    @staticmethod
    def messages(row) -> list[dict]:
        system = row.get("system")
        head = [{"role": "system", "content": system}] if system else []
        return head + [{"role": "user", "content": row["user"]}]

    def features(self, model, tokenizer, rows):
        out = super().features(model, tokenizer, rows)
        kept = [f for f in out if any(label != -100 for label in f["labels"])]
        if len(kept) < len(out):
            self.notices.append(f"{len(out) - len(kept)} conversations left out: their prompt fills "
                                f"max_seq_length ({self.max_length(model, tokenizer)} tokens)")
        return kept

    def encode(self, model, tokenizer, rows):
        length = self.max_length(model, tokenizer)
        out = []
        for row in rows:
            messages = self.messages(row)
            prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": row["assistant"]}],
                                                 tokenize=False)
            ids = tokenizer(full, add_special_tokens=False, truncation=True, max_length=length)["input_ids"]
            if full.startswith(prompt):
                masked = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
            else:  # a template that renders the prompt differently once answered: learn it all
                masked = 0
            labels = [-100] * min(masked, len(ids)) + ids[masked:]
            out.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels})
        return out

    def check(self, rel: Relation, rows: Rows) -> None:
        super().check(rel, rows)
        if "system" not in self.columns and self.hp.dataset_args.get("system_column") is None:
            self.notices.append("no system column: conversations have no system message")
