"""OpenAI-compatible serving engines behind a route ("runtime": "openai").

vLLM, TGI, SGLang, Ollama, llama.cpp's server and `transformers serve` speak the OpenAI HTTP
API. A route to one sends (paths under the route's url, such as http://host:8000/v1):

- pgml.transform conversational, and text-generation with chat messages: POST /chat/completions;
  text-generation with text prompts: POST /completions, one request per prompt, all at once;
- pgml.transform_stream: the same with "stream": true, read as server-sent events;
- pgml.embed: POST /embeddings, `batch_size` texts per request, the batches at once;
- pgml.rank: POST /rerank in the shape vLLM, Infinity, Jina and llama.cpp share (Cohere's), else
  /rerank beside /v1 in text-embeddings-inference's shape.

Results have the shapes of the in-backend tasks. The API key is read on each call from where
the route says (an environment variable PGML_*, or a file under the secrets_path setting),
sent as a bearer token, and never shown: it is replaced in every error that leaves here.
"""

from __future__ import annotations

import contextlib
import json
import os
import ssl
from dataclasses import dataclass

from ..errors import (InstallError, InvalidParameter, InvalidSetting, NotSupported, PermissionDenied, PgmlError,
                      UndefinedObject, one_line, to_pgml_error)
from ..inputs import json_kind
from ..settings import Settings
from ..streaming import cut_at_stops
from ..tasks.pipelines import check_messages, cut_at_stop, is_message
from . import EmbedRequest, RankRequest, TransformRequest
from .http import Client
from .routes import Route, is_glob

GENERATION_TASKS = ("text-generation", "conversational")
EMBED_BATCH = 64          # texts per /embeddings request unless kwargs.batch_size says otherwise
MAX_KEY_BYTES = 16384     # an API key file larger than this is not a key
ARGS = ("max_tokens (max_new_tokens), temperature, top_p, stop, n (num_return_sequences), seed, do_sample, "
        "return_full_text")
HIDDEN = "[api key hidden]"


# ----------------------------------------------------------------------------------------- the key


def api_key(route: Route, settings: Settings) -> str | None:
    """The route's API key, read now from the server's environment or a file under secrets_path."""
    name = route.options.get("api_key_env")
    if name is not None:
        value = os.environ.get(name)
        if value is None:
            raise InstallError(f"{route.describe()}: the database server's environment has no {name}",
                               hint=f"Set {name} in the PostgreSQL server's environment (for example Environment= "
                                    "in its systemd unit) and restart the server.")
        return _key_text(value.encode(), f"the environment variable {name}", route)
    path = route.options.get("api_key_file")
    if path is None:
        return None
    folder = settings.secrets_path
    if folder is None or not os.path.isabs(folder):
        raise PermissionDenied(f"{route.describe()}: api_key_file needs the secrets_path setting, an absolute path "
                               f"(it is {json.dumps(folder)})",
                               hint="A superuser names the folder that holds the engines' key files: UPDATE "
                                    "pgml.settings SET value = '\"/etc/pgml/secrets\"' WHERE name = 'secrets_path'")
    root, real = os.path.realpath(folder), os.path.realpath(path)
    if real == root or os.path.commonpath([root, real]) != root:
        raise PermissionDenied(f"{route.describe()}: api_key_file {path} is not under secrets_path ({folder})",
                               hint="Keep the engines' key files in the secrets_path folder; symbolic links are "
                                    "followed before the check.")
    try:
        with open(real, "rb") as f:
            raw = f.read(MAX_KEY_BYTES + 1)
    except OSError as exc:
        raise InstallError(f"{route.describe()}: api_key_file {path} cannot be read: "
                           f"{exc.strerror or type(exc).__name__}",
                           hint="It must be a file that the server's OS user can read (chmod 600, owned by "
                                "it).") from None
    return _key_text(raw, f"api_key_file {path}", route)


def _key_text(raw: bytes, where: str, route: Route) -> str:
    """The key without surrounding whitespace; an error that never quotes it unless it is one
    line of printable ASCII (what an HTTP header can carry)."""
    key = raw.strip()
    if not key or len(key) > MAX_KEY_BYTES or not all(33 <= b < 127 for b in key):
        raise InvalidSetting(f"{route.describe()}: {where} does not hold an API key (one line of printable "
                             "ASCII characters without spaces)")
    return key.decode()


def _hide(error: PgmlError, key: str | None) -> PgmlError:
    if key:
        for name in ("message", "hint", "detail"):
            text = getattr(error, name)
            if text and key in text:
                setattr(error, name, text.replace(key, HIDDEN))
        error.args = (error.message,)
    return error


@contextlib.contextmanager
def _hidden(key: str | None):
    """Every error raised inside becomes a PgmlError with the key replaced (a cancel keeps 57014)."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - each error leaves as one PgmlError without the key
        raise _hide(to_pgml_error(exc, "openai runtime"), key) from None


# ------------------------------------------------------------------------------------ generation


@dataclass
class Generation:
    chat: bool
    inputs: list              # the chat's messages, or the prompts
    body: dict                # the request's OpenAI fields from args
    stops: list[str]
    sequences: int | None     # n, when the call asked for it
    full_text: bool           # text-generation: prompt + continuation (the pipeline's default)


def _count(args: dict, names: tuple[str, str]):
    found = [name for name in names if name in args]
    if len(found) > 1:
        raise InvalidParameter(f"give either {names[0]} or {names[1]}, not both")
    if not found:
        return None
    value = args.pop(found[0])
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidParameter(f"args.{found[0]} must be a positive integer, not {json.dumps(value)}")
    return value


def _number(args: dict, name: str, low: float, high: float | None, low_open: bool = False):
    value = args.pop(name)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (value > low if low_open else value >= low)
    if not ok or (high is not None and value > high):
        bounds = f"{'>' if low_open else '>='} {low:g}" + (f" and <= {high:g}" if high is not None else "")
        raise InvalidParameter(f"args.{name} must be a number {bounds}, not {json.dumps(value)}")
    return value


def _flag(args: dict, name: str) -> bool:
    value = args.pop(name)
    if not isinstance(value, bool):
        raise InvalidParameter(f"args.{name} must be true or false, not {json.dumps(value)}")
    return value


def generation(request: TransformRequest, route: Route) -> Generation:
    """The call as an OpenAI request: its inputs checked, its args mapped onto OpenAI's fields."""
    if request.canonical not in GENERATION_TASKS:
        raise NotSupported(f"{route.describe()} is an OpenAI-compatible engine: it serves text-generation and "
                           f"conversational, not {request.task}",
                           hint=f'Give the route a "task" so that {request.task} runs elsewhere, or route '
                                f"{request.model} for {request.canonical} to the backend.")
    if request.options:
        raise InvalidParameter(f"the task's {', '.join(sorted(request.options))} decide how a model loads in the "
                               f"backend; the engine of {route.describe()} loads its models itself",
                               hint='Pass {"task": ..., "model": ...} alone for a routed model.')
    chat = request.canonical == "conversational" or any(is_message(item) for item in request.inputs)
    if chat:
        inputs = check_messages(request.inputs)
    else:
        for i, item in enumerate(request.inputs, start=1):
            if not isinstance(item, str):
                raise InvalidParameter(f"text-generation takes text prompts or chat messages, but inputs[{i}] is "
                                       f"{json_kind(item)}")
        inputs = request.inputs
    args, body = dict(request.args), {}
    tokens = _count(args, ("max_tokens", "max_new_tokens"))
    if tokens is not None:
        body["max_tokens"] = tokens
    sequences = _count(args, ("n", "num_return_sequences"))
    if sequences is not None:
        body["n"] = sequences
    if "temperature" in args:
        body["temperature"] = _number(args, "temperature", 0, None)
    if "top_p" in args:
        body["top_p"] = _number(args, "top_p", 0, 1, low_open=True)
    if "do_sample" in args and not _flag(args, "do_sample"):
        body["temperature"] = 0  # greedy, as do_sample false is in the backend
    if "seed" in args:
        seed = args.pop("seed")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise InvalidParameter(f"args.seed must be an integer, not {json.dumps(seed)}")
        body["seed"] = seed
    stops = args.pop("stop", None)
    stops = [stops] if isinstance(stops, str) else stops or []
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise InvalidParameter("args.stop must be a non-empty string or a list of them")
    if stops:
        body["stop"] = stops
    full_text = True
    if "return_full_text" in args:
        if chat:
            raise InvalidParameter("args.return_full_text is for text prompts: a chat returns the reply alone")
        full_text = _flag(args, "return_full_text")
    if args:
        name = sorted(args)[0]
        raise InvalidParameter(f"args.{name} has no counterpart in the OpenAI API that {route.describe()} speaks",
                               hint=f"Args an engine route takes: {ARGS}.")
    return Generation(chat, inputs, body, stops, sequences, full_text)


def _texts(client: Client, answer, chat: bool, sequences: int | None) -> list[str]:
    """The generated texts of a (chat) completion answer, in choice order."""
    choices = answer.get("choices") if isinstance(answer, dict) else None
    if not isinstance(choices, list) or not choices or not all(isinstance(c, dict) for c in choices):
        raise client.malformed(f"an answer without choices: {one_line(json.dumps(answer))[:200]}")
    texts = []
    for choice in sorted(choices, key=lambda c: c.get("index") if isinstance(c.get("index"), int) else 0):
        message = choice.get("message")
        text = (message.get("content") if isinstance(message, dict) else None) if chat else choice.get("text")
        if chat and isinstance(message, dict) and text is None:
            text = ""  # a reply of tool calls alone
        if not isinstance(text, str):
            raise client.malformed(f"a choice without {'message.content' if chat else 'text'}: "
                                   f"{one_line(json.dumps(choice))[:200]}")
        texts.append(text)
    if sequences is not None and len(texts) != sequences:
        raise NotSupported(f"the engine at {client.base_url} answered {len(texts)} sequence(s) for n = {sequences}: "
                           "it does not generate several sequences per request",
                           hint="Ask for one sequence, or call once per sequence with sampling on.")
    return texts


def _stream_error(client: Client, event: dict) -> PgmlError:
    """An error the engine sent as a stream event ({"error": ...}), by its code where it gives one."""
    error = event["error"]
    code = error.get("code") if isinstance(error, dict) else None
    status = code if isinstance(code, int) and 400 <= code < 600 else 500
    return client.http_error(status, json.dumps(event).encode())


def _pieces(client: Client, lines, chat: bool):
    """Text pieces from a stream of server-sent events; an error if it ends before the generation
    finished (a finish_reason, or [DONE])."""
    for line in lines:
        if not line.startswith("data:"):
            continue  # blank separators, comments, event names
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            event = json.loads(data)
        except ValueError:
            raise client.malformed(f"a stream event that is not JSON: {one_line(data)[:200]!r}") from None
        if not isinstance(event, dict):
            raise client.malformed(f"a stream event that is not an object: {one_line(data)[:200]!r}")
        if "error" in event:
            raise _stream_error(client, event)
        finished = False
        for choice in event.get("choices") or []:
            delta = choice.get("delta") if isinstance(choice, dict) else None
            piece = (delta.get("content") if isinstance(delta, dict) else None) if chat else choice.get("text")
            if piece:
                if not isinstance(piece, str):
                    raise client.malformed(f"a stream event with a piece that is not text: {one_line(data)[:200]}")
                yield piece
            finished = finished or bool(choice.get("finish_reason"))
        if finished:
            return
    raise client.malformed("a stream that ended before the generation finished (no finish_reason, no [DONE]): "
                           "the engine may have stopped mid-generation")


def _stream(client: Client, lines, call: Generation, key: str | None):
    """The pieces of a streamed generation (lines: the connection's, opened on the first piece)."""
    try:
        with _hidden(key):
            yield from cut_at_stops(_pieces(client, lines, call.chat), call.stops)
    finally:
        lines.close()  # a stop string found, the cursor closed, or an error: the connection goes now


# ------------------------------------------------------------------------------------ embeddings


def _vectors(client: Client, answer, count: int) -> list[list[float]]:
    """The embeddings of one /embeddings answer, in input order (by each item's index)."""
    data = answer.get("data") if isinstance(answer, dict) else None
    try:
        items = sorted(data, key=lambda item: item["index"])
        indexes = [item["index"] for item in items]
        vectors = [item["embedding"] for item in items]
    except (TypeError, KeyError):
        raise client.malformed(f"an embeddings answer without data[].index and .embedding: "
                               f"{one_line(json.dumps(answer))[:200]}") from None
    if indexes != list(range(count)) or not all(isinstance(v, list) and v for v in vectors):
        raise client.malformed(f"{len(vectors)} embeddings (indexes {indexes[:8]}...) for {count} texts")
    return vectors


def _scores(client: Client, answer) -> list[tuple[int, float]]:
    """(index, score) from a rerank answer: {"results": [{"index", "relevance_score"}]} (Cohere's
    shape: vLLM, Infinity, Jina, llama.cpp) or [{"index", "score"}] (text-embeddings-inference)."""
    results, field = (answer.get("results"), "relevance_score") if isinstance(answer, dict) else (answer, "score")
    try:
        found = [(int(r["index"]), float(r[field])) for r in results]
    except (TypeError, KeyError, ValueError):
        raise client.malformed(f"a rerank answer without results[].index and .{field}: "
                               f"{one_line(json.dumps(answer))[:200]}") from None
    return found


def _unsupported_options(options: dict, function: str, route: Route) -> None:
    if options:
        raise InvalidParameter(f"{function}'s {', '.join(sorted(options))} cannot be sent to the engine of "
                               f"{route.describe()}", hint="Drop them for a routed model; the engine loads and runs "
                                                           "its models itself.")


# -------------------------------------------------------------------------------------- runtime


class OpenAIRuntime:
    name = "openai"

    def __init__(self, route: Route):
        self.route = route
        self.url = route.options["url"].rstrip("/")
        self.served_model = route.options.get("served_model")
        self._client: Client | None = None
        self._key: str | None = None

    def _verify(self):
        if not self.url.startswith("https:"):
            return True
        ca_file = self.route.options.get("ca_file")
        try:
            return ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise InstallError(f"{self.route.describe()}: ca_file {ca_file} cannot be used: "
                               f"{getattr(exc, 'strerror', None) or one_line(exc)}",
                               hint="It must be a PEM file of CA certificates that the server's OS user can "
                                    "read.") from None

    @contextlib.contextmanager
    def _calling(self, settings: Settings):
        """This call's client (with the key read now), every error raised inside without the key."""
        key = api_key(self.route, settings)
        with _hidden(key):
            if self._client is None or key != self._key:
                self._client = Client(self.route, self.url, verify=self._verify(),
                                      headers={"Authorization": f"Bearer {key}"} if key else {},
                                      serve_hint=f"Check that the engine runs and answers GET {self.url}/models.")
                self._key = key
            yield self._client

    def _model(self, model: str) -> str:
        return self.served_model or model

    def transform(self, request: TransformRequest):
        with self._calling(request.settings) as client:
            call = generation(request, self.route)
            if call.chat:
                answer = client.post("/chat/completions",
                                     {"model": self._model(request.model), "messages": call.inputs, **call.body})
                return [cut_at_stop(text, call.stops) for text in _texts(client, answer, True, call.sequences)]
            answers = client.post_all("/completions", [{"model": self._model(request.model), "prompt": prompt,
                                                        **call.body} for prompt in call.inputs])
            return [[{"generated_text": (prompt if call.full_text else "") + cut_at_stop(text, call.stops)}
                     for text in _texts(client, answer, False, call.sequences)]
                    for prompt, answer in zip(call.inputs, answers)]

    def transform_stream(self, request: TransformRequest):
        with self._calling(request.settings) as client:
            call = generation(request, self.route)
            if not call.chat and len(call.inputs) != 1:
                raise InvalidParameter("transform_stream takes one prompt", hint="Stream each prompt in its own call.")
            if call.sequences not in (None, 1):
                raise InvalidParameter("transform_stream generates one sequence (n / num_return_sequences 1)")
            if "return_full_text" in request.args:
                raise InvalidParameter("transform_stream streams the continuation alone: drop args.return_full_text")
            path, field = ("/chat/completions", "messages") if call.chat else ("/completions", "prompt")
            lines = client.stream(path, {"model": self._model(request.model), field: call.inputs if call.chat
                                         else call.inputs[0], **call.body, "stream": True})
            key = self._key
        return _stream(client, lines, call, key)

    def embed(self, request: EmbedRequest):
        import numpy as np

        with self._calling(request.settings) as client:
            build, call = dict(request.build), dict(request.call)
            truncate = build.pop("truncate_dim", None)
            size = call.pop("batch_size", EMBED_BATCH)
            normalize = call.pop("normalize_embeddings", False)
            prompt = call.pop("prompt", None)
            _unsupported_options({**build, **call}, "pgml.embed", self.route)
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise InvalidParameter(f"batch_size must be a positive integer, not {json.dumps(size)}")
            if truncate is not None and (isinstance(truncate, bool) or not isinstance(truncate, int) or truncate < 1):
                raise InvalidParameter(f"truncate_dim must be a positive integer, not {json.dumps(truncate)}")
            if prompt is not None and not isinstance(prompt, str):
                raise InvalidParameter("prompt must be a string")
            texts = [prompt + text for text in request.texts] if prompt else request.texts
            batches = [texts[i:i + size] for i in range(0, len(texts), size)]
            answers = client.post_all("/embeddings", [{"model": self._model(request.model), "input": batch,
                                                       "encoding_format": "float"} for batch in batches])
            rows = [v for batch, answer in zip(batches, answers) for v in _vectors(client, answer, len(batch))]
            try:
                vectors = np.asarray(rows, dtype=np.float32)
            except (TypeError, ValueError):
                raise client.malformed("embeddings that are not lists of numbers of one length") from None
            if vectors.ndim != 2:
                raise client.malformed("embeddings of different lengths")
            if truncate is not None:
                vectors = vectors[:, :truncate]
            if normalize:
                vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
            return vectors

    def rank(self, request: RankRequest):
        with self._calling(request.settings) as client:
            call = dict(request.call)
            top_k = call.pop("top_k", None)
            documents = call.pop("return_documents", True)
            _unsupported_options({**request.build, **call}, "pgml.rank", self.route)
            if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
                raise InvalidParameter(f"top_k must be a positive integer, not {json.dumps(top_k)}")
            scores = self._rerank(client, request)
            scores.sort(key=lambda pair: -pair[1])
            if any(not 0 <= i < len(request.documents) for i, _ in scores):
                raise client.malformed("rerank results for documents that were not sent")
            return [(i, score, request.documents[i] if documents else None) for i, score in scores[:top_k]]

    def _rerank(self, client: Client, request: RankRequest) -> list[tuple[int, float]]:
        """Cohere's shape at {url}/rerank, else text-embeddings-inference's beside /v1."""
        try:
            return _scores(client, client.post("/rerank", {
                "model": self._model(request.model), "query": request.query, "documents": request.documents,
                "return_documents": False}))
        except PgmlError as exc:
            if getattr(exc, "status", None) != 404:
                raise
            missing = exc
        if self.url.endswith("/v1"):
            try:
                return _scores(client, client.post(self.url[:-len("/v1")] + "/rerank", {
                    "query": request.query, "texts": request.documents, "return_text": False}))
            except PgmlError as exc:
                if getattr(exc, "status", None) != 404:
                    raise
        raise self._no_rerank(missing)

    def _no_rerank(self, error: PgmlError) -> NotSupported:
        return NotSupported(f"the engine at {self.url} has no rerank endpoint ({error.message})",
                            hint="Rerank on an engine that has one (vLLM, Infinity, text-embeddings-inference), or "
                                 'route task "rank" for this model to the backend.')

    def check(self, route: Route, settings: Settings) -> str:
        with self._calling(settings) as client:
            answer = client.get("/models")
            data = answer.get("data") if isinstance(answer, dict) else None
            if not isinstance(data, list) or not all(isinstance(m, dict) and isinstance(m.get("id"), str)
                                                      for m in data):
                raise client.malformed(f"a model list without data[].id: {one_line(json.dumps(answer))[:200]}")
            ids = [m["id"] for m in data]
            found = f"{self.url}: reachable" + (", key accepted" if self._key else "")
            served = self.served_model or (None if is_glob(route.model) else route.model)
            if served is None:
                return f"{found}; serves {', '.join(ids) or 'no model yet'}"
            if served not in ids:
                raise UndefinedObject(f"{found}, but it does not list {served} (it lists {', '.join(ids) or 'none'})",
                                      hint="Set the route's served_model to the name the engine serves the model "
                                           "under, or start the engine with the model loaded.")
            return f"{found}, serves {served}"


def runtime(route: Route) -> OpenAIRuntime:
    return OpenAIRuntime(route)
