"""summarization, translation and text2text-generation on encoder-decoder models.

transformers 5 removed these pipelines. This module reproduces what the 4.x
pipelines return for the same model, inputs and arguments: the same generation
defaults (max_new_tokens=256, num_beams=4 unless the model says otherwise), the
task's `prefix` and `task_specific_params`, translation language handling, the
same decoding and the same output shapes.
"""

from __future__ import annotations

import re

from ..errors import InvalidParameter
from .base import ModelTask, Stages, split_args

RETURN_NAMES = {"summarization": "summary", "translation": "translation", "text2text-generation": "generated"}
TRANSLATION_TASK = re.compile(r"^translation_([A-Za-z_-]+?)_to_([A-Za-z_-]+)$")
# The 4.x pipelines' own defaults, under the model's generation config.
PIPELINE_DEFAULTS = {"max_new_tokens": 256, "num_beams": 4}


def family(task: str) -> str:
    return "translation" if TRANSLATION_TASK.match(task) else task


class Seq2SeqTask(ModelTask):
    auto_class = "AutoModelForSeq2SeqLM"

    def __init__(self, task, model, tokenizer, device):
        super().__init__(task, model, tokenizer, device)
        self.return_name = RETURN_NAMES[family(task)]
        self.prefix = getattr(model.config, "prefix", None) or ""
        model_config = {k: v for k, v in model.generation_config.to_diff_dict().items()
                        if not k.startswith("_") and k != "transformers_version"}
        self.generate_defaults = {**model_config, **PIPELINE_DEFAULTS}
        # A model that sets its own max_length keeps it instead of the pipeline's max_new_tokens.
        if model_config.get("max_length") not in (None, 20):
            del self.generate_defaults["max_new_tokens"]
        task_params = dict((getattr(model.config, "task_specific_params", None) or {}).get(task) or {})
        if "prefix" in task_params:
            self.prefix = task_params.pop("prefix") or ""
        self.generate_defaults.update(task_params)
        if tokenizer.pad_token_id is not None and self.generate_defaults.get("pad_token_id") is None:
            self.generate_defaults["pad_token_id"] = tokenizer.pad_token_id

    def stages(self, args) -> Stages:
        """Tokenizer and decoding args by name; everything else is generate()'s, over the model's defaults."""
        stages = split_args(self.task, args, preprocess=("truncation", "src_lang", "tgt_lang"),
                            postprocess=("return_tensors", "return_text", "clean_up_tokenization_spaces"),
                            batched=True)
        generate = stages.forward
        stop_sequence = generate.pop("stop_sequence", None)
        if stop_sequence is not None:
            ids = self.tokenizer.encode(stop_sequence, add_special_tokens=False)
            if not ids:
                raise InvalidParameter("stop_sequence encodes to no token")
            generate["eos_token_id"] = ids[0]
        stages.forward = {**self.generate_defaults, **generate}
        if "max_length" in generate and "max_new_tokens" not in generate:
            stages.forward.pop("max_new_tokens", None)  # as generate() itself: an explicit max_length wins
        return stages

    def preprocess(self, inputs, **kwargs):
        return {"encoded": self.encode(inputs, **kwargs), "n": len(inputs)}

    def forward(self, model_inputs, **generate_args):
        output_ids = self.model.generate(**model_inputs["encoded"], **generate_args)
        return {"output_ids": output_ids, "n": model_inputs["n"]}

    def postprocess(self, model_outputs, **kwargs):
        """Per input, its generated sequences (num_return_sequences of them)."""
        output_ids, n = model_outputs["output_ids"], model_outputs["n"]
        per_input = output_ids.shape[0] // n
        return [[self.record(ids, **kwargs) for ids in output_ids[i * per_input:(i + 1) * per_input]]
                for i in range(n)]

    def finish(self, results):
        if all(len(r) == 1 for r in results):
            return [r[0] for r in results]
        return results

    def encode(self, texts, truncation=False, src_lang=None, tgt_lang=None):
        padding = len(texts) > 1
        if padding and self.tokenizer.pad_token_id is None:
            raise InvalidParameter(f"{self.model.name_or_path} has no pad token, so it needs batch_size 1")
        if family(self.task) == "translation" and src_lang is None and tgt_lang is None:
            match = TRANSLATION_TASK.match(self.task)
            if match:
                src_lang, tgt_lang = match.groups()
        build = getattr(self.tokenizer, "_build_translation_inputs", None)
        if family(self.task) == "translation" and build is not None:
            encoded = build(texts, return_tensors="pt", truncation=truncation, src_lang=src_lang,
                            tgt_lang=tgt_lang, padding=padding)
        else:
            encoded = self.tokenizer([self.prefix + t for t in texts], padding=padding, truncation=truncation,
                                     return_tensors="pt")
            encoded.pop("token_type_ids", None)
        return {k: v.to(self.model.device) if hasattr(v, "to") else v for k, v in encoded.items()}

    def record(self, ids, return_tensors=False, return_text=True, clean_up_tokenization_spaces=False):
        if return_tensors:
            return {f"{self.return_name}_token_ids": ids.tolist()}
        if not return_text:
            raise InvalidParameter("return_text false needs return_tensors true")
        return {f"{self.return_name}_text": self.tokenizer.decode(
            ids, skip_special_tokens=True, clean_up_tokenization_spaces=clean_up_tokenization_spaces)}
