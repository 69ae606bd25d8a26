"""The backend runtime: models loaded and run inside this PostgreSQL backend (the default).

Models stay in this backend's cache (cache.MODELS) for the connection's life. They load on a
worker thread (imports included) while the backend keeps answering cancels; inference runs
on the backend's main thread, where the forward hooks check for cancels.
"""

from __future__ import annotations

import json

from .. import tasks
from ..cache import MODELS
from ..embedder import Embedder
from ..errors import InvalidParameter, NotSupported, PgmlError, to_pgml_error
from ..models import Source, check_trust_remote_code, import_torch, permitted, resolve
from ..settings import Settings
from ..threads import threads
from . import EmbedRequest, RankRequest, TransformRequest


def use_threads(settings: Settings) -> None:
    """torch's thread count for this backend's next inference, from the settings (decided per call).

    Call it after the model is loaded: importing torch belongs to the load, on its worker thread."""
    import torch

    wanted = threads(settings)
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)


def load_task(task: str, model: str, options: dict, settings: Settings, deployed=None) -> tasks.Task:
    """The loaded task, from this process's cache when it is there, with torch's threads set for a call.

    deployed(name) says whether the model name is served from elsewhere (the tuning registry).
    What the settings allow (folders, whitelist, trust_remote_code) is checked on every call, also
    when the model is cached: the shared runtime's cache serves callers with different settings.
    """
    name, entry = tasks.lookup(task)
    found = deployed(model) if deployed is not None else None
    if found is None:
        permitted(model, settings)
        check_trust_remote_code(options, settings, model)
    key = json.dumps([name, found.key if found is not None else model, options], sort_keys=True)
    # A deployed model's files come from pgml.files: read on this (the main) thread, before the load.
    folder = found.folder() if found is not None and key not in MODELS else None

    def load():  # on a worker thread (cache.MODELS), imports included
        import_torch()
        source = Source(folder, True, {}) if found is not None else resolve(model, options, settings)
        return entry.inference.load(name, options, source, settings)

    loaded = MODELS.get(key, load, kind="transform", task=name, model=model)
    use_threads(settings)
    return loaded


class BackendRuntime:
    name = "backend"

    def _loaded(self, request: TransformRequest):
        task = load_task(request.task, request.model, request.options, request.settings, request.deployed)
        return task, task.prepare(request.inputs)

    def transform(self, request: TransformRequest):
        task, items = self._loaded(request)
        try:
            return task.run(items, request.args)
        except PgmlError:
            raise
        except Exception as exc:  # noqa: BLE001 - becomes one SQL error with a fitting SQLSTATE
            raise to_pgml_error(exc, f"{task.task} with {task.model.name_or_path}") from None

    def transform_stream(self, request: TransformRequest):
        task, items = self._loaded(request)
        if not hasattr(task, "stream"):
            raise NotSupported(f"transform_stream streams text-generation and conversational, not {task.task}",
                               hint="Use pgml.transform for this task.")
        return task.stream(items, request.args)

    def embed(self, request: EmbedRequest):
        from ..embeddings import load_embedder

        model = load_embedder(request.model, request.build, request.settings)
        if isinstance(model, Embedder):  # decides again before each batch: other calls come and go meanwhile
            vectors = model.encode(request.texts, before_batch=lambda: use_threads(request.settings),
                                   **request.call)
        else:
            use_threads(request.settings)
            vectors = model.encode(request.texts, convert_to_numpy=True, show_progress_bar=False, **request.call)
        return vectors.reshape(len(request.texts), -1)

    def rank(self, request: RankRequest):
        return self.rank_many(request, [(request.query, request.documents)])[0]

    def rank_many(self, request: RankRequest, queries: list[tuple[str, list[str]]]):
        """CrossEncoder.rank for several (query, documents) with the request's model and options, all
        pairs scored in one predict: per query, (corpus_id, score, text) of its documents, best first."""
        from ..embeddings import load_ranker

        model = load_ranker(request.model, request.build, request.settings)
        use_threads(request.settings)
        if model.num_labels != 1:
            raise InvalidParameter(f"pgml.rank needs a cross-encoder with one output (num_labels 1); "
                                   f"{request.model} has {model.num_labels}")
        call = dict(request.call)
        top_k, with_text = call.pop("top_k", None), call.pop("return_documents", True)
        pairs = [[query, document] for query, documents in queries for document in documents]
        scores = model.predict(pairs, show_progress_bar=False, convert_to_tensor=True,
                               **call).tolist() if pairs else []
        ranked, start = [], 0
        for _, documents in queries:
            found = [(i, float(scores[start + i]), document if with_text else None)
                     for i, document in enumerate(documents)]
            start += len(documents)
            ranked.append(sorted(found, key=lambda r: r[1], reverse=True)[:top_k])
        return ranked

    def check(self, route, settings) -> str:
        return "runs in each backend"


BACKEND = BackendRuntime()
