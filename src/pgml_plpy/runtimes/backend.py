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
from ..errors import NotSupported, PgmlError, to_pgml_error
from ..models import Source, import_torch, resolve
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
    """The loaded task, from this backend's cache when it is there, with torch's threads set for a call.

    deployed(name) says whether the model name is served from elsewhere (the tuning registry).
    """
    name, entry = tasks.lookup(task)
    found = deployed(model) if deployed is not None else None
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
        from ..embeddings import load_ranker

        model = load_ranker(request.model, request.build, request.settings)
        use_threads(request.settings)
        ranked = model.rank(request.query, request.documents, show_progress_bar=False,
                            **{"return_documents": True, **request.call})
        return [(int(r["corpus_id"]), float(r["score"]), r.get("text")) for r in ranked]

    def check(self, route, settings) -> str:
        return "runs in each backend"


BACKEND = BackendRuntime()
