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
from .base import Task, batches, take

RETURN_NAMES = {"summarization": "summary", "translation": "translation", "text2text-generation": "generated"}
TRANSLATION_TASK = re.compile(r"^translation_([A-Za-z_-]+?)_to_([A-Za-z_-]+)$")
# The 4.x pipelines' own defaults, under the model's generation config.
PIPELINE_DEFAULTS = {"max_new_tokens": 256, "num_beams": 4}


def family(task: str) -> str:
    return "translation" if TRANSLATION_TASK.match(task) else task


class Seq2SeqTask(Task):
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

    def run(self, items, args):
        import torch

        args = dict(args)
        pre = take(args, ["truncation", "src_lang", "tgt_lang"])
        post = take(args, ["return_tensors", "return_text", "clean_up_tokenization_spaces"])
        batch_size = args.pop("batch_size", 1)
        stop_sequence = args.pop("stop_sequence", None)
        if stop_sequence is not None:
            ids = self.tokenizer.encode(stop_sequence, add_special_tokens=False)
            if not ids:
                raise InvalidParameter("stop_sequence encodes to no token")
            args["eos_token_id"] = ids[0]
        generate_args = {**self.generate_defaults, **args}
        if "max_length" in args and "max_new_tokens" not in args:
            generate_args.pop("max_new_tokens", None)  # as generate() itself: an explicit max_length wins
        results = []
        for chunk in batches(items, batch_size):
            encoded = self.encode(chunk, **pre)
            with torch.inference_mode():
                output_ids = self.model.generate(**encoded, **generate_args)
            per_input = output_ids.shape[0] // len(chunk)
            for i in range(len(chunk)):
                results.append([self.record(ids, **post) for ids in output_ids[i * per_input:(i + 1) * per_input]])
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
