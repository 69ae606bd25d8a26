"""Sentence embeddings for the common sentence-transformers models, without importing sentence-transformers.

Most embedding models are saved as a transformers model, a pooling of its token embeddings (mean,
CLS, max) and often a normalization: modules.json names Transformer, Pooling and Normalize.
Importing sentence-transformers costs a new connection seconds before its first pgml.embed (its
package imports scikit-learn, pandas and more). For exactly these stacks, with the options their
files and pgml.embed can give them, `stack` reads the folder and `Embedder` computes what
SentenceTransformer.encode computes, step for step: the same tokenizer settings, length-sorted
batches, forward pass, pooling arithmetic, truncation and normalization, so the vectors are the
same to the bit (tests/test_embed.py compares them). Any other model (another module, a custom
option, remote code) returns None from `stack` and sentence-transformers loads it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from .errors import InvalidParameter

# Options of pgml.embed that this path honours; any other model option goes to sentence-transformers.
OPTIONS = {"device", "truncate_dim", "revision", "token"}
MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens")
# Pooling's old boolean keys, in the order sentence-transformers concatenates their outputs.
_LEGACY_MODES = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max",
                 "pooling_mode_mean_tokens": "mean", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                 "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}
# A text-only Transformer module's settings as sentence-transformers saves them (older saves omit them).
_TRANSFORMER_DEFAULTS = {
    "transformer_task": "feature-extraction",
    "modality_config": {"text": {"method": "forward", "method_output_name": "last_hidden_state"}},
    "module_output_name": "token_embeddings",
    "do_lower_case": False,
}
_NORMALIZE_DEFAULTS = {"module_input_name": "sentence_embedding", "module_output_name": "sentence_embedding"}
_OTHER_TRANSFORMER_CONFIGS = ("sentence_roberta_config.json", "sentence_distilbert_config.json",
                              "sentence_camembert_config.json", "sentence_albert_config.json",
                              "sentence_xlm-roberta_config.json", "sentence_xlnet_config.json")


@dataclass(frozen=True)
class Stack:
    """What a Transformer + Pooling (+ Normalize) model's files say."""

    max_seq_length: int | None
    modes: tuple[str, ...]
    normalize: bool
    prompts: dict = field(default_factory=dict)
    default_prompt_name: str | None = None
    truncate_dim: int | None = None


def _read(folder: str, name: str):
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _class_names(modules) -> list[str] | None:
    if not isinstance(modules, list):
        return None
    names = []
    for module in modules:
        kind = module.get("type", "") if isinstance(module, dict) else ""
        if set(module) - {"idx", "name", "path", "type"} or not kind.startswith("sentence_transformers."):
            return None
        names.append(kind.rsplit(".", 1)[-1])
    return names


def stack(folder: str, options: dict) -> Stack | None:
    """The stack of the model in folder when this module computes it as sentence-transformers would."""
    if set(options) - OPTIONS or os.path.exists(os.path.join(folder, "adapter_config.json")):
        return None
    modules = _read(folder, "modules.json")
    names = _class_names(modules)
    if names not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]) or modules[0]["path"]:
        return None
    if any(os.path.exists(os.path.join(folder, name)) for name in _OTHER_TRANSFORMER_CONFIGS):
        return None
    transformer = dict(_read(folder, "sentence_bert_config.json") or {})
    max_seq_length = transformer.pop("max_seq_length", None)
    if any(key not in _TRANSFORMER_DEFAULTS or value != _TRANSFORMER_DEFAULTS[key]
           for key, value in transformer.items()):
        return None
    modes = _pooling_modes(_read(os.path.join(folder, modules[1]["path"]), "config.json") or {})
    if modes is None:
        return None
    if len(modules) == 3:
        normalize = _read(os.path.join(folder, modules[2]["path"]), "config.json") or {}
        if any(_NORMALIZE_DEFAULTS.get(key) != value for key, value in normalize.items()):
            return None
    config = _read(folder, "config_sentence_transformers.json") or {}
    if config.get("model_type", "SentenceTransformer") != "SentenceTransformer":
        return None
    return Stack(max_seq_length, modes, len(modules) == 3, dict(config.get("prompts") or {}),
                 config.get("default_prompt_name"), config.get("truncate_dim"))


def _pooling_modes(config: dict) -> tuple[str, ...] | None:
    config = dict(config)
    legacy = {key: config.pop(key) for key in list(config) if key in _LEGACY_MODES}
    if config.pop("include_prompt", True) is not True:
        return None
    mode = config.pop("pooling_mode", None)
    config.pop("embedding_dimension", None)
    config.pop("word_embedding_dimension", None)
    if config:
        return None
    if mode is None:
        mode = tuple(name for key, name in _LEGACY_MODES.items() if legacy.get(key)) or ("mean",)
    modes = (mode,) if isinstance(mode, str) else tuple(mode)
    return modes if modes and all(m in MODES for m in modes) else None


class Embedder:
    """SentenceTransformer.encode for a Transformer + Pooling (+ Normalize) stack."""

    def __init__(self, folder: str, stack: Stack, options: dict, device, allow_pickle: bool):
        import transformers

        config = transformers.AutoConfig.from_pretrained(folder)
        if hasattr(config, "use_cache"):  # as sentence-transformers loads it
            config.use_cache = False
        self.model = transformers.AutoModel.from_pretrained(folder, config=config,
                                                            **({} if allow_pickle else {"use_safetensors": True}))
        tokenizer_kwargs = {} if stack.max_seq_length is None else {"model_max_length": stack.max_seq_length}
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(folder, **tokenizer_kwargs)
        if stack.max_seq_length is None and getattr(config, "max_position_embeddings", -1) != -1:
            self.tokenizer.model_max_length = min(self.tokenizer.model_max_length, config.max_position_embeddings)
        if device is not None:
            self.model.to(device)
        self.model.eval()
        self.stack = stack
        self.truncate_dim = options.get("truncate_dim", stack.truncate_dim)

    @property
    def device(self):
        return next(self.model.parameters()).device

    def _prompt(self, prompt: str | None, prompt_name: str | None) -> str | None:
        if prompt is not None:
            return prompt
        if prompt_name is not None:
            if prompt_name not in self.stack.prompts:
                raise InvalidParameter(f"prompt_name {prompt_name!r} is not one of this model's prompts",
                                       hint="Its prompts: " + (", ".join(sorted(self.stack.prompts)) or "none") + ".")
            return self.stack.prompts[prompt_name]
        if self.stack.default_prompt_name is not None:
            return self.stack.prompts.get(self.stack.default_prompt_name)
        return None

    def encode(self, texts: list[str], *, prompt: str | None = None, prompt_name: str | None = None,
               normalize_embeddings: bool = False, batch_size: int = 32, before_batch=None):
        """A float numpy array (len(texts), dimensions), as SentenceTransformer.encode(texts, ...) returns;
        before_batch() runs before each batch (the backend decides its threads again there)."""
        import numpy as np
        import torch

        prompt = self._prompt(prompt, prompt_name)
        order = np.argsort([-len(text) for text in texts])
        rows = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                if before_batch is not None:
                    before_batch()
                batch = [texts[i] for i in order[start:start + batch_size]]
                if prompt:
                    batch = [prompt + text for text in batch]
                features = self.tokenizer(batch, padding=True, truncation="longest_first", return_tensors="pt")
                features = {k: v.to(self.device) for k, v in features.items()}
                tokens = self.model(**features, return_dict=True).last_hidden_state
                embeddings = self._pool(tokens, features["attention_mask"])
                if self.stack.normalize:
                    embeddings = torch.nn.functional.normalize(embeddings, p=2, dim=-1)
                if self.truncate_dim is not None:
                    embeddings = embeddings[..., :self.truncate_dim]
                if normalize_embeddings:
                    embeddings = torch.nn.functional.normalize(embeddings, p=2, dim=1)
                rows.extend(embeddings.cpu())
        rows = [rows[i] for i in np.argsort(order)]
        stacked = torch.stack(rows)
        if stacked.dtype == torch.bfloat16:
            stacked = stacked.float()
        return stacked.numpy()

    def _pool(self, tokens, attention_mask):
        """sentence-transformers' Pooling of the token embeddings, its arithmetic kept."""
        import torch

        accumulate = torch.float32 if tokens.dtype in (torch.float16, torch.bfloat16) else tokens.dtype
        outputs, mean_sum, mean_mask = [], None, None
        for mode in self.stack.modes:
            if mode == "cls":
                first = attention_mask.to(torch.int).argmax(dim=1)
                index = first.unsqueeze(-1).unsqueeze(1).expand(-1, 1, tokens.shape[-1])
                outputs.append(torch.gather(tokens, 1, index).squeeze(1))
            elif mode == "max":
                mask = attention_mask.unsqueeze(-1).expand_as(tokens).to(tokens.dtype)
                outputs.append(tokens.masked_fill(mask == 0, float("-inf")).max(dim=1).values)
            else:  # mean, mean_sqrt_len_tokens
                if mean_sum is None:
                    mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
                    mean_sum = (tokens * mask).sum(dim=1, dtype=accumulate)
                    mean_mask = torch.clamp(mask.sum(dim=1, dtype=accumulate), min=1e-9)
                mean = mean_sum / (mean_mask if mode == "mean" else torch.sqrt(mean_mask))
                outputs.append(mean.to(tokens.dtype))
        return torch.cat(outputs, dim=-1)
