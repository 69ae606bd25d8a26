"""What one model replica of the shared runtime does, apart from Ray Serve itself.

Each request carries its caller's load policy; the replica builds Settings from it (plus its
own: torch threads, model cache caps, models cache folder) and calls the backend's own task
code (runtimes/backend.py), so that a routed call gives what the backend would. Models live
in this process's cache (cache.MODELS), one copy shared by every caller, loaded on first
use and evicted least recently used under max_models / max_model_bytes.

Work runs in threads, one call at a time per model; each thread carries its request's
cancel flag (interrupts.cancel_on), which the model hooks consult on every forward pass, so
a caller that goes away stops the work. Concurrent requests (embed, rank and the
classification tasks) that share a model and options run as one call: continuous batching,
where the calls that arrive while the model is busy run together as soon as it is free,
without a window to wait for a batch to fill. But clients that call in a loop split into
cohorts that take turns, each run half full (8 clients: runs of 4, where a run of 8 costs
MiniLM on a CPU much less than two runs of 4, its weights read once per run). So a run that
starts within the last run's time after it waits a little (GATHER of that time, at most
GATHER_MAX) for as many calls as there were then (the last run's and those that waited for
it): the callers just answered are likely to call again. A lone caller runs at once.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

from .. import interrupts
from ..cache import MODELS
from ..errors import InvalidParameter, ModelNotFound, to_pgml_error
from ..runtimes import Deployed, EmbedRequest, RankRequest, TransformRequest
from ..runtimes.backend import BACKEND, load_task
from ..runtimes.http import RuntimeProtocolViolation
from ..runtimes.ray import pack_array, settings_of
from ..settings import Settings
from ..tuning.registry import files as stored
from ..tuning.registry.serving import serving_folder

# Tasks whose result is one item per input, in input order: concurrent calls run as one.
BATCHED = frozenset({"text-classification", "token-classification", "zero-shot-classification"})
BATCH_SIZE = 64  # the pipeline batch size for merged calls that set none
MAX_BATCH = 64   # calls merged into one run at most
GATHER = 0.5     # of the last run's time: how long a run waits at most for the last run's callers
GATHER_MAX = 0.02  # seconds it waits at most
MAX_POLICIES = 256  # callers' policies whose Settings are kept
# How long torch's idle OpenMP threads spin before they sleep (GNU OpenMP, read when torch loads). By
# default 300000 rounds, about 10 ms on a current x86 CPU: after each run the replica's threads would
# spin through the time its callers need the cores to take the answers and call again. 10000 rounds
# still span the gaps between one forward pass's operations. An operator's own value is kept.
SPIN = "10000"


def error_body(exc: BaseException, doing: str) -> dict:
    err = to_pgml_error(exc, doing)
    return {"error": {"message": err.message, "sqlstate": err.sqlstate, "hint": err.hint, "detail": err.detail}}


class Parts:
    """Parts of tuned models' files as they arrive, named by their SHA-256, until the folder they make
    up is built (files.materialize checks every file again)."""

    def __init__(self, root: Path):
        self.root = root
        self.parts = root / "parts"
        self.parts.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.received = 0  # parts received so far

    def add(self, sent: dict) -> None:
        for sha, text in (sent or {}).items():
            data = base64.b64decode(text)
            if hashlib.sha256(data).hexdigest() != sha:
                raise RuntimeProtocolViolation(f"a part of a tuned model arrived damaged (it does not hash to {sha})")
            fd, tmp = tempfile.mkstemp(dir=self.parts, prefix=".")
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, self.parts / sha)
            self.received += 1

    def folder(self, files: list) -> Path | list:
        """The folder of a manifest's files, or the [path, part index] pairs still missing."""
        found = stored.restored(files, self.root)
        if found is not None:
            return found
        need = [[path, index] for path, shas, _ in files for index, sha in enumerate(shas)
                if not (self.parts / sha).exists()]
        if need:
            return need
        shas = {path: shas for path, shas, _ in files}

        def write(path: str, fh) -> None:
            for sha in shas[path]:
                fh.write((self.parts / sha).read_bytes())

        folder = stored.materialize(files, self.root, write)
        for sha in {sha for _, parts, _ in files for sha in parts}:
            (self.parts / sha).unlink(missing_ok=True)
        return folder


def _all_gone(futures: list) -> threading.Event:
    """An event set once every one of the futures is cancelled (their callers went away)."""
    event = threading.Event()
    for future in futures:
        future.add_done_callback(lambda _: all(f.cancelled() for f in futures) and event.set())
    return event


class Replica:
    def __init__(self, config: dict):
        os.environ.setdefault("GOMP_SPINCOUNT", SPIN)
        self.own = {"torch_threads": max(1, int(config["torch_threads"])), "max_models": config["max_models"],
                    "max_model_bytes": config["max_model_bytes"], "models_cache": config["models_cache"]}
        MODELS.limit(self.own["max_models"], self.own["max_model_bytes"])
        self.files = Parts(stored.cache_root(Settings(**self.own)))
        self.locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.queues: dict[str, list] = defaultdict(list)  # batch key -> [(item, future)] waiting for the model
        self.arrived: dict[str, asyncio.Event] = defaultdict(asyncio.Event)  # batch key -> set on each new call
        self.callers: dict[str, tuple] = {}  # batch key -> (calls at the end of its last run, its seconds, end)
        self.running = 0
        self.cancelled = 0
        self.largest_batch = 0
        self.batches = self.batched = 0  # runs of grouped calls, and the calls they served
        self.direct = 0  # calls on the replica's own port (not through the serve command)
        self.announced: set[str] = set()
        self.policies: dict[str, Settings] = {}  # a request's policy (JSON) -> its Settings

    def settings(self, payload: dict) -> Settings:
        """The Settings of a request's policy, built (and checked) once per policy: callers of a
        database mostly send the same one, and building them took about a sixth of the event loop's
        work per call (py-spy)."""
        value = payload.get("policy")
        key = json.dumps(value, sort_keys=True)
        found = self.policies.get(key)
        if found is None:
            if len(self.policies) >= MAX_POLICIES:
                self.policies.clear()
            found = self.policies[key] = settings_of(value, **self.own)
        return found

    # --------------------------------------------------------------------------------- threads

    async def run(self, model: str, fn):
        """fn() in a worker thread, one at a time per model; cancelling the caller stops it at its next
        forward pass (or stream step) and waits until it has stopped."""
        async with self.locks[model]:
            return await self.thread(fn)

    async def thread(self, fn, event: threading.Event | None = None):
        """fn() in a worker thread; cancelling the caller (or setting event) stops it."""
        event = event or threading.Event()

        def work():
            with interrupts.cancel_on(event):
                return fn()

        self.running += 1
        future = asyncio.get_running_loop().run_in_executor(None, work)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            event.set()
            self.cancelled += 1
            await asyncio.wait([future])
            if not future.cancelled():
                future.exception()  # retrieved (the work's own Cancelled): no "never retrieved" traceback
            raise
        finally:
            self.running -= 1
            self.announce()

    def announce(self) -> None:
        """Print each model this replica loads (the serve command shows the replicas' output)."""
        for entry in MODELS.entries():
            if entry.key not in self.announced:
                self.announced.add(entry.key)
                print(f"pgml_plpy serve: loaded {entry.kind} {entry.task} {entry.model} on {entry.device} "
                      f"({entry.bytes >> 20} MiB) in {entry.load_seconds:.1f} s", flush=True)
        self.announced &= {entry.key for entry in MODELS.entries()}

    # ------------------------------------------------------------------------------- requests

    async def prepared(self, payload: dict) -> TransformRequest | list:
        """transform_request, in a worker thread when the call brings a tuned model's files to write."""
        if payload.get("deployed") is not None:
            return await asyncio.to_thread(self.transform_request, payload)
        return self.transform_request(payload)

    def transform_request(self, payload: dict) -> TransformRequest | list:
        """The request (its tuned model's files in place), or the file parts this replica still needs."""
        settings = self.settings(payload)
        deployed = None
        if payload.get("deployed") is not None:
            files, base = payload["deployed"]["files"], payload["deployed"].get("base")
            self.files.add(payload.get("parts"))
            folder = self.files.folder(files)
            if isinstance(folder, list):
                return folder
            found = Deployed(key=f"files:{stored.files_key(files)}", task=payload["deployed"]["task"],
                             folder=lambda: serving_folder(folder, base, settings))
            deployed = lambda name: found if name == payload["model"] else None  # noqa: E731
        args = payload["args"]
        if not isinstance(args, dict) or not isinstance(payload["inputs"], list):
            raise InvalidParameter("args must be a JSON object and inputs a list")
        return TransformRequest(task=payload["task"], canonical=payload["canonical"], model=payload["model"],
                                options=payload["options"], args=args, inputs=payload["inputs"], settings=settings,
                                deployed=deployed)

    def embed_request(self, payload: dict) -> EmbedRequest:
        return EmbedRequest(payload["model"], payload["texts"], payload["build"], payload["call"],
                            self.settings(payload))

    def rank_request(self, payload: dict) -> RankRequest:
        return RankRequest(payload["model"], payload["query"], payload["documents"], payload["build"],
                           payload["call"], self.settings(payload))

    # ---------------------------------------------------------------------------------- batches

    async def batch(self, item, key: str, run):
        """run(items) -> one result per item, for this item and every call with the same key (model and
        options) waiting for the model: the calls that arrive while it is busy run together once it is
        free. A failing run fails its own calls only; a run whose callers have all gone away stops."""
        queue = self.queues[key]
        future = asyncio.get_running_loop().create_future()
        queue.append((item, future))
        self.arrived[key].set()
        if len(queue) == 1:
            asyncio.ensure_future(self._drain(item.model, key, run))
        return await future

    async def _drain(self, model: str, key: str, run) -> None:
        async with self.locks[model]:
            queue = self.queues[key]
            while queue:
                await self._gather(key)
                group = [(item, future) for item, future in queue[:MAX_BATCH] if not future.done()]
                del queue[:MAX_BATCH]
                if not group:
                    continue
                self.largest_batch = max(self.largest_batch, len(group))
                self.batches, self.batched = self.batches + 1, self.batched + len(group)
                items = [item for item, _ in group]
                started = time.monotonic()
                try:
                    answers = await self.thread(lambda: run(items), _all_gone([future for _, future in group]))
                except Exception as exc:  # noqa: BLE001 - each caller gets the error
                    answers = [exc] * len(group)
                ended = time.monotonic()
                self.callers[key] = (len(group) + len(queue), ended - started, ended)
                if len(self.callers) > MAX_BATCH:  # keys of calls' options that no longer come: forgotten
                    self.callers = {k: v for k, v in self.callers.items() if ended - v[2] <= v[1]}
                for (_, future), answer in zip(group, answers):
                    if future.done():
                        continue
                    if isinstance(answer, BaseException):
                        future.set_exception(answer)
                    else:
                        future.set_result(answer)
            if not queue:
                del self.queues[key]
                self.arrived.pop(key, None)

    async def _gather(self, key: str) -> None:
        """When the key's last run ended within its own time: until the queue holds as many calls as
        there were then, for GATHER of that time at most (GATHER_MAX)."""
        calls, took, ended = self.callers.get(key, (0, 0.0, 0.0))
        if time.monotonic() - ended > took:
            self.callers.pop(key, None)
            return
        queue, arrived = self.queues[key], self.arrived[key]
        deadline = time.monotonic() + min(GATHER * took, GATHER_MAX)
        while len(queue) < min(calls, MAX_BATCH) and (left := deadline - time.monotonic()) > 0:
            arrived.clear()
            try:
                await asyncio.wait_for(arrived.wait(), left)
            except asyncio.TimeoutError:
                return

    @staticmethod
    def _key(*parts) -> str:
        return json.dumps(parts, sort_keys=True, default=repr)

    async def embed(self, request: EmbedRequest):
        def run(group):
            merged = EmbedRequest(group[0].model, [t for r in group for t in r.texts], group[0].build,
                                  group[0].call, group[0].settings)
            vectors, answers, start = BACKEND.embed(merged), [], 0
            for r in group:
                answers.append(pack_array(vectors[start:start + len(r.texts)]))
                start += len(r.texts)
            return answers

        return await self.batch(request, self._key("embed", request.model, request.build, request.call,
                                                     request.settings), run)

    async def rank(self, request: RankRequest):
        def run(group):
            return BACKEND.rank_many(group[0], [(r.query, r.documents) for r in group])

        return await self.batch(request, self._key("rank", request.model, request.build, request.call,
                                                     request.settings), run)

    async def transform_batched(self, request: TransformRequest):
        """A call of a BATCHED task, run together with the same task's concurrent calls."""
        def run(group):
            if len(group) == 1:
                return [BACKEND.transform(group[0])]
            first = group[0]
            items = [item for r in group for item in r.inputs]
            args = {"batch_size": min(len(items), BATCH_SIZE), **first.args}
            merged = TransformRequest(first.task, first.canonical, first.model, first.options, args, items,
                                      first.settings, first.deployed)
            results, answers, start = BACKEND.transform(merged), [], 0
            for r in group:
                answers.append(results[start:start + len(r.inputs)])
                start += len(r.inputs)
            return answers

        found = request.deployed(request.model) if request.deployed is not None else None
        return await self.batch(request, self._key(request.task, request.model, found.key if found else None,
                                                     request.options, request.args, request.settings), run)

    # ----------------------------------------------------------------------------------- others

    async def stream(self, body: bytes):
        """For a request's JSON body, lines of JSON (bytes): {"need": [...]} first when files are missing,
        else {"piece": text} as they are generated, or {"error": {...}} (before the first piece or
        mid-stream)."""
        end = object()
        try:
            request = await self.prepared(json.loads(body))
            if isinstance(request, list):
                yield json.dumps({"need": request}).encode() + b"\n"
                return
            async with self.locks[request.model]:
                pieces = await self.thread(lambda: BACKEND.transform_stream(request))
                try:
                    while (piece := await self.thread(lambda: next(pieces, end))) is not end:
                        yield json.dumps({"piece": piece}).encode() + b"\n"
                finally:
                    await self.thread(pieces.close)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported to the caller as the stream's last line
            yield json.dumps(error_body(exc, "transform_stream")).encode() + b"\n"

    def check(self, payload: dict) -> str:
        """The route's model answering (run in a worker thread)."""
        from .. import tasks
        from ..models import resolve

        model, task, settings = payload["model"], payload.get("task"), self.settings(payload)
        if task == "embedding":
            vectors = BACKEND.embed(EmbedRequest(model, ["pgml validate"], {}, {}, settings))
            return f"{model} answers with {vectors.shape[1]} dimensions"
        if task == "rank":
            BACKEND.rank(RankRequest(model, "pgml", ["validate"], {}, {}, settings))
            return f"{model} ranks"
        if task is not None:
            loaded = load_task(tasks.lookup(task)[0], model, {}, settings)
            return f"{model} loaded for {task} on {loaded.device or 'its device map'}"
        try:
            source = resolve(model, {}, settings)
        except ModelNotFound as exc:  # a project name: its files come from the database with each call
            return f"{model} is not on the runtime's machine ({exc.message}); fine for a project name"
        return f"{model} found ({'folder' if source.is_local else 'hub id'} {source.name})"

    def state(self) -> dict:
        return {"running": self.running, "cancelled": self.cancelled, "pid": os.getpid(),
                "largest_batch": self.largest_batch, "batches": self.batches, "batched": self.batched,
                "direct": self.direct,
                "parts_received": self.files.received,
                "loaded": [{"kind": e.kind, "task": e.task, "model": e.model, "device": e.device, "dtype": e.dtype,
                            "bytes": e.bytes, "load_seconds": e.load_seconds, "loaded_at": e.loaded_at,
                            "last_used": e.last_used, "hits": e.hits} for e in MODELS.entries()]}
