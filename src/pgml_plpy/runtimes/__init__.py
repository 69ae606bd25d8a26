"""Where a model runs: the one seam between the SQL calls and the code that runs models.

Every model call (transform, transform_stream, embed, rank) is parsed and checked in the
backend, then handed as a request to the runtime its route names: the backend itself (the
default), or another kind declared in routes.KINDS. A runtime implements the Runtime
protocol; results have the same shapes wherever a model runs.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol

from ..settings import Settings
from . import routes


@dataclass(frozen=True)
class Deployed:
    """A model served by another name (a tuned model deployed under its project's name).

    The backend loads it from folder(); a runtime elsewhere gets files() and asks for the parts
    it lacks, which read() hands over checked against their SHA-256.
    """

    key: str                    # changes whenever another model is deployed under the name
    folder: Callable[[], str]   # its files as a local folder, fetched when it must be loaded
    task: str                   # the project's task (pgml.tune's name): what serves it when the call names none
    files: Callable[[], list] | None = None          # [[path, [part sha256, ...], size], ...]
    read: Callable[[str, int], bytes] | None = None  # (path, part index) -> that part's checked bytes
    base: dict | None = None    # a LoRA adapter's base model: {"model": id or folder, "options": {...}}


@dataclass
class TransformRequest:
    task: str                   # the task as it runs (translation_en_to_fr keeps its name)
    canonical: str              # its canonical name (what routes match)
    model: str                  # model id, folder or project name, the task's default applied
    options: dict               # loader options of the task JSON
    args: dict                  # the call's args
    inputs: list                # decoded inputs, within the settings' limits
    settings: Settings
    deployed: Callable[[str], Deployed | None] | None = None  # the tuning registry's lookup


@dataclass
class EmbedRequest:
    model: str
    texts: list[str]
    build: dict                 # options that build the model (part of its cache key)
    call: dict                  # options of the encode call
    settings: Settings


@dataclass
class RankRequest:
    model: str
    query: str
    documents: list[str]
    build: dict
    call: dict
    settings: Settings


class Runtime(Protocol):
    name: str

    def transform(self, request: TransformRequest):
        """The task's JSON-able result, in the shapes of the in-backend tasks."""

    def transform_stream(self, request: TransformRequest) -> Iterator[str]:
        """Text pieces of one generation as they come; closing the iterator stops the work."""

    def embed(self, request: EmbedRequest):
        """The embeddings, rows in input order: a float32 numpy array of shape (len(texts), dimensions), or
        rows of floats from a runtime that returns float32 values (no numpy to import in the backend)."""

    def rank(self, request: RankRequest) -> list[tuple[int, float, str | None]]:
        """(corpus_id, score, text) of the documents, best first."""

    def check(self, route: routes.Route, settings: Settings) -> str:
        """pgml.validate's finding for a route to this runtime (reachable, authenticated, the model
        served), as one line; raises what is wrong."""


_RUNTIMES: dict[tuple, Runtime] = {}


def runtime_for(model: str, task: str, settings: Settings) -> Runtime:
    """The runtime that serves model for the canonical task: the first matching route's, else the backend."""
    return runtime_of(routes.match(settings.runtimes, model, task))


def runtime_of(route: routes.Route | None) -> Runtime:
    """The runtime of a route (None: the backend)."""
    kind = routes.KINDS[route.runtime] if route is not None else None
    if kind is None or kind.module is None:
        from .backend import BACKEND

        return BACKEND
    key = (route.runtime, tuple(sorted((k, repr(v)) for k, v in route.options.items())))
    if key not in _RUNTIMES:
        _RUNTIMES[key] = importlib.import_module(kind.module).runtime(route)
    return _RUNTIMES[key]
