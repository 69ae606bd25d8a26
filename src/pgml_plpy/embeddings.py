"""pgml.embed and pgml.rank: sentence-transformers bi-encoders and cross-encoders from SQL.

kwargs hold two kinds of options: those that build the model (part of the cache key,
so a second call with another device gets its own model) and those of the call.
Vectors leave as PostgreSQL array literals ('{...}') that SQL casts to REAL[]: PL/Python
converts a returned list one float at a time through its text form, which costs more
than the encoding's own margin; one `%` format per row does the same work in C.

Bi-encoders whose files name the common Transformer + Pooling (+ Normalize) stack run through
embedder.py (transformers alone, the same vectors); others load through sentence-transformers.
"""

from __future__ import annotations

import json
import os

from . import interrupts
from .cache import MODELS
from .embedder import Embedder, stack
from .errors import InvalidParameter, ModelNotFound, NullValue, one_line
from .inputs import check_input_limits, parse_args, parse_inputs
from .models import (check_placement, check_trust_remote_code, device_for, import_torch, permitted, pickle_refused,
                     resolve)
from .runtimes import EmbedRequest, RankRequest, runtime_for
from .settings import Settings

DEFAULT_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"
_HUB_OPTIONS = {"device", "revision", "trust_remote_code", "token", "model_kwargs", "config_kwargs",
                "processor_kwargs", "tokenizer_kwargs"}
EMBED_BUILD = _HUB_OPTIONS | {"truncate_dim"}
EMBED_CALL = {"prompt", "prompt_name", "normalize_embeddings", "batch_size"}
RANK_BUILD = _HUB_OPTIONS | {"max_length"}
RANK_CALL = {"top_k", "return_documents", "batch_size", "prompt", "prompt_name"}


# sentence-transformers class -> (the SQL function that loads it, the task loaded_models shows)
_KINDS = {"SentenceTransformer": ("embed", "embedding"), "CrossEncoder": ("rank", "rank")}


def split_kwargs(kwargs, build: set, call: set, function: str) -> tuple[dict, dict]:
    """(options that build the model, options of the call) from the kwargs JSON text."""
    value = parse_args(kwargs, "kwargs")
    unknown = sorted(set(value) - build - call)
    if unknown:
        raise InvalidParameter(f"{function} does not take {', '.join(unknown)}",
                               hint=f"Model options: {', '.join(sorted(build))}; call options: "
                                    f"{', '.join(sorted(call))}.")
    return ({k: v for k, v in value.items() if k in build}, {k: v for k, v in value.items() if k in call})


def _model_name(model) -> str:
    if not isinstance(model, str) or not model.strip():
        raise NullValue("the model name must not be NULL or empty", hint=f"Example: '{DEFAULT_EMBEDDER}'")
    return model


def _load(cls_name: str, model: str, options: dict, settings: Settings):
    permitted(model, settings)  # every call: the cache may hold what another role loaded
    check_trust_remote_code(options, settings, model)  # and the shared runtime's, what another server's role did

    def load():  # on a worker thread (cache.MODELS), imports included
        import_torch()
        device = device_for(options)
        source = resolve(model, options, settings)
        try:
            loaded = _light(cls_name, source, options, settings, device)
            if loaded is None:
                loaded = _sentence_transformers(cls_name, model, source, options, settings, device)
        except OSError as exc:
            if not settings.allow_pickle and "safetensors" in str(exc):
                raise pickle_refused(model) from None
            raise ModelNotFound(f"loading {model}: {one_line(exc)}") from None
        check_placement(loaded.device, device, model)
        interrupts.watch(loaded.model if isinstance(loaded, Embedder) else loaded)
        return loaded

    kind, task = _KINDS[cls_name]
    return MODELS.get(json.dumps([cls_name, model, options], sort_keys=True), load, kind=kind, task=task,
                      model=model)


def _light(cls_name: str, source, options: dict, settings: Settings, device) -> Embedder | None:
    """An Embedder for a bi-encoder whose stack embedder.py computes (without sentence-transformers'
    imports), else None. A hub id qualifies when its files are in the cache."""
    if cls_name != "SentenceTransformer" or (settings.hub_downloads and not source.is_local):
        return None
    folder = source.name
    if not source.is_local:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(source.name, "modules.json", cache_dir=settings.huggingface_cache,
                                        revision=options.get("revision"))
        if not isinstance(cached, str):
            return None
        folder = os.path.dirname(cached)
    found = stack(folder, options)
    return Embedder(folder, found, options, device, settings.allow_pickle) if found is not None else None


def _sentence_transformers(cls_name: str, model: str, source, options: dict, settings: Settings, device):
    import sentence_transformers

    kwargs = {k: v for k, v in options.items() if k != "device"}
    if check_trust_remote_code(options, settings, model):
        kwargs["trust_remote_code"] = True
    if not settings.allow_pickle:
        kwargs["model_kwargs"] = {**(kwargs.get("model_kwargs") or {}), "use_safetensors": True}
    return getattr(sentence_transformers, cls_name)(
        source.name, device=str(device), cache_folder=settings.huggingface_cache,
        local_files_only=not settings.hub_downloads, **kwargs)


def _texts(values, what: str, settings: Settings) -> list[str]:
    texts = parse_inputs(values, is_json=False)
    for i, text in enumerate(texts, start=1):
        if not isinstance(text, str):
            raise InvalidParameter(f"{what}[{i}] must be text")
    return check_input_limits(texts, settings, what)


_FORMATS: dict[tuple[int, str], str] = {}


def array_literals(vectors, brackets: str = "{}") -> list[str]:
    """Each row of a float matrix (a numpy array, or rows of floats) as an array literal, exact for
    float32 (9 significant digits).

    brackets "{}" gives REAL[] literals, "[]" pgvector's.
    """
    rows = vectors.tolist() if hasattr(vectors, "tolist") else vectors
    if not rows:
        return []
    dim = len(rows[0])
    fmt = _FORMATS.get((dim, brackets))
    if fmt is None:
        fmt = _FORMATS[(dim, brackets)] = brackets[0] + ",".join(["%.9g"] * dim) + brackets[1]
    literals = []
    for row in rows:
        literals.append(fmt % tuple(row))
        interrupts.check()  # at most every CHECK_INTERVAL: thousands of rows take a while
    return literals


def load_embedder(model: str, build: dict, settings: Settings):
    """The SentenceTransformer for model and kwargs' model options, from this backend's cache."""
    return _load("SentenceTransformer", model, build, settings)


def load_ranker(model: str, build: dict, settings: Settings):
    """The CrossEncoder for model and kwargs' model options, from this backend's cache."""
    return _load("CrossEncoder", model, build, settings)


def embed_request(transformer, texts: list[str], kwargs, settings: Settings) -> EmbedRequest:
    """pgml.embed's arguments checked: kwargs split into model and encode options."""
    build, call = split_kwargs(kwargs, EMBED_BUILD, EMBED_CALL, "pgml.embed")
    return EmbedRequest(_model_name(transformer), texts, build, call, settings)


def encoder(transformer, kwargs, settings: Settings, brackets: str = "{}"):
    """A function from texts to their embeddings as array literals, wherever the model runs."""
    request = embed_request(transformer, [], kwargs, settings)
    runtime = runtime_for(request.model, "embedding", settings)

    def encode(texts: list[str]) -> list[str]:
        request.texts = texts
        return array_literals(runtime.embed(request), brackets)

    return encode


def embed(transformer, inputs, kwargs, settings: Settings) -> list[str]:
    """Embeddings of the inputs, in input order, as REAL[] literals."""
    texts = _texts(inputs, "inputs", settings)
    return encoder(transformer, kwargs, settings)(texts)


def rank(transformer, query, documents, kwargs, settings: Settings) -> list[tuple[int, float, str | None]]:
    """(corpus_id, score, text) of the documents, best first, as CrossEncoder.rank gives them."""
    build, call = split_kwargs(kwargs, RANK_BUILD, RANK_CALL, "pgml.rank")
    if query is None:
        raise NullValue("query must not be NULL")
    request = RankRequest(_model_name(transformer), query, _texts(documents, "documents", settings), build, call,
                          settings)
    return runtime_for(request.model, "rank", settings).rank(request)
