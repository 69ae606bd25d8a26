"""summarization, translation and text2text: an encoder-decoder model on source and target columns.

The source gets the prefix the model is served with (hyperparams.prefix, else T5's task prefix such as
"summarize: "), and the tuned model's config keeps exactly that prefix, so that pgml.transform adds the
same text the model was trained on. The test metrics come from generate() on the test split.
"""

from __future__ import annotations

from ... import interrupts
from ...errors import NotSupported
from .. import metrics
from .base import Role, TuneTask

TARGETS = {"summarization": "summary", "translation": "translation", "text2text": "target"}


class Seq2Seq(TuneTask):
    auto_class = "AutoModelForSeq2SeqLM"
    y_role = "target"
    peft_task_type = "SEQ_2_SEQ_LM"

    def __init__(self, task, hp, y_column_name, run_name=None):
        self.roles = {"source": Role("text_column", "text", "text"),
                      "target": Role("target_column", TARGETS[task], "text")}
        super().__init__(task, hp, y_column_name, run_name)
        self.prefix = ""

    def load(self, source, settings):
        model, tokenizer = super().load(source, settings)
        params = getattr(model.config, "task_specific_params", None) or {}
        self.prefix = (params.get(self.run_name) or {}).get("prefix") or getattr(model.config, "prefix", None) or ""
        given = self.hp.extras.get("prefix")
        if given is not None and given != self.prefix:
            if self.lora is not None:
                # an adapter is served with its base model's config, hence the base's prefix
                raise NotSupported("hyperparams.prefix cannot change the prefix of a LoRA-tuned model: it is "
                                   f"served with the base model's config (prefix {self.prefix!r})",
                                   hint="Leave prefix out, or train the whole model (lora_config false).")
            self.prefix = given
        for key in ("src_lang", "tgt_lang"):
            if key in self.hp.extras:
                setattr(tokenizer, key, self.hp.extras[key])
        return model, tokenizer

    @property
    def max_target_length(self) -> int:
        return self.hp.extras.get("max_target_length", 128)

    def encode(self, model, tokenizer, rows):
        encoded = tokenizer([self.prefix + r["source"] for r in rows], text_target=[r["target"] for r in rows],
                            truncation=True, max_length=self.max_length(model, tokenizer))
        if any(len(t) > self.max_target_length for t in encoded["labels"]):
            encoded["labels"] = [t[:self.max_target_length - 1] + t[-1:] if len(t) > self.max_target_length else t
                                 for t in encoded["labels"]]
        keys = [k for k in encoded.keys() if k != "token_type_ids"]
        return [{k: encoded[k][i] for k in keys} for i in range(len(rows))]

    def collator(self, model, tokenizer):
        import transformers

        return transformers.DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100)

    def evaluate(self, trainer, model, tokenizer, rows, features):
        import torch

        loss = trainer.evaluate(features, metric_key_prefix="test").get("test_loss", float("nan"))
        generate = {"max_new_tokens": self.max_target_length, **(self.hp.extras.get("generation_args") or {})}
        batch = trainer.args.per_device_eval_batch_size
        predicted = []
        model.eval()
        for start in range(0, len(rows), batch):
            interrupts.check()
            chunk = rows[start:start + batch]
            inputs = tokenizer([self.prefix + r["source"] for r in chunk], return_tensors="pt", padding=True,
                               truncation=True, max_length=self.max_length(model, tokenizer))
            inputs.pop("token_type_ids", None)
            inputs = {k: v.to(model.device) for k, v in inputs.items()}
            with torch.inference_mode():
                output = model.generate(**inputs, **generate)
            predicted += tokenizer.batch_decode(output, skip_special_tokens=True)
        result = metrics.seq2seq([p.strip() for p in predicted], [r["target"] for r in rows])
        result["eval_loss"] = float(loss)
        return result

    def finalize(self, model, tokenizer) -> None:
        """The served prefix is the trained one: config.prefix, with the per-task prefixes removed."""
        config = model.get_base_model().config if hasattr(model, "get_base_model") else model.config
        config.prefix = self.prefix
        params = getattr(config, "task_specific_params", None)
        if params:
            config.task_specific_params = {k: {p: v for p, v in (d or {}).items() if p != "prefix"}
                                           for k, d in params.items()}
