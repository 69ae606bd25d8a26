"""The per-backend model cache, with least-recently-used eviction.

A PostgreSQL backend is one process per connection, so a module-level cache lives as
long as the connection: the second call of the same task and model costs only
inference. Keys hold everything that changes the loaded model. Settings cap how many
models and how many bytes of weights a backend keeps; past a cap the least recently
used go first, and unloading really frees them (references dropped, garbage collected,
the CUDA cache emptied).

A model loads on a worker thread (interrupts.start) while the backend keeps answering
cancels. A cancelled call leaves its load running: the next call that wants the model waits
for it, and a load that finishes meanwhile joins the cache at the next look (a failed one is
dropped, so the next call tries again). No entry ever holds a half-loaded model.
"""

from __future__ import annotations

import ctypes
import gc
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

from . import interrupts


@dataclass
class Entry:
    key: str
    kind: str            # what loaded it: transform, embed, rank, ...
    task: str
    model: str           # the name the caller used
    value: object
    load_seconds: float
    device: str = ""
    dtype: str = ""
    bytes: int = 0
    loaded_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.time)
    hits: int = 0


def torch_module(value):
    """The torch module behind a cached value (a task holds .model; models are modules)."""
    import torch

    return value if isinstance(value, torch.nn.Module) else getattr(value, "model", None)


def describe(module) -> tuple[str, str, int]:
    """(device, dtype, bytes of parameters and buffers, shared tensors counted once)."""
    if module is None:
        return "", "", 0
    seen, size, devices = set(), 0, set()
    dtypes = {str(p.dtype).replace("torch.", "") for p in module.parameters()}
    for tensor in list(module.parameters()) + list(module.buffers()):
        devices.add(str(tensor.device))
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            size += tensor.numel() * tensor.element_size()
    device_map = getattr(module, "hf_device_map", None)
    if device_map:
        devices = {str(d) for d in device_map.values()}
    return ",".join(sorted(devices)), ",".join(sorted(dtypes)), size


@dataclass
class Loading:
    """A load running on its worker thread; its future gives (value, seconds)."""

    future: Future
    kind: str
    task: str
    model: str


def _timed(load):
    started = time.perf_counter()
    value = load()
    return value, time.perf_counter() - started


class ModelCache:
    def __init__(self):
        self._entries: dict[str, Entry] = {}
        self._loading: dict[str, Loading] = {}
        # a shared runtime's replica calls from several threads; never held while a load is awaited
        self._lock = threading.RLock()
        self.max_models: int | None = None
        self.max_bytes: int | None = None

    def limit(self, max_models: int | None, max_bytes: int | None) -> None:
        """Apply the settings' caps (checked on every load)."""
        self.max_models, self.max_bytes = max_models, max_bytes

    def get(self, key: str, load, *, kind: str = "", task: str = "", model: str = ""):
        """The cached value for key; on a miss, load() runs on a worker thread (it must not call into
        the server) while this thread answers interrupts, and its value joins the cache."""
        with self._lock:
            self._adopt()
            entry = self._entries.get(key)
            if entry is not None:
                entry.hits += 1
                entry.last_used = time.time()
                return entry.value
            loading = self._loading.get(key)
            if loading is None:
                if self.max_models is not None:  # room before loading: the peak holds one model less
                    self._evict(lambda: len(self._entries) + len(self._loading) >= self.max_models)
                loading = self._loading[key] = Loading(interrupts.start(lambda: _timed(load), "pgml-load"),
                                                       kind, task, model)
        try:
            # a cancel raises here and leaves the load running, for the next call; a failed load raises its error
            return interrupts.wait(loading.future)[0]
        finally:
            self._adopt()  # the finished load joins the cache (a failed one is dropped)

    def _adopt(self) -> None:
        """Finished loads join the cache (evicting to make room); failed ones are dropped."""
        with self._lock:
            for key, loading in list(self._loading.items()):
                if not loading.future.done():
                    continue
                del self._loading[key]
                if loading.future.exception() is not None:
                    continue
                if self.max_models is not None:
                    self._evict(lambda: len(self._entries) >= self.max_models)
                value, seconds = loading.future.result()
                entry = Entry(key, loading.kind, loading.task, loading.model, value, seconds)
                entry.device, entry.dtype, entry.bytes = describe(torch_module(value))
                self._entries[key] = entry
                if self.max_bytes is not None:
                    self._evict(lambda: sum(e.bytes for e in self._entries.values()) > self.max_bytes, keep=key)

    def _evict(self, too_much, keep: str | None = None) -> None:
        """Unload least recently used entries (but keep) while too_much()."""
        while too_much():
            candidates = [e for e in self._entries.values() if e.key != keep]
            if not candidates:
                return
            oldest = min(candidates, key=lambda e: e.last_used)
            self._unload(lambda e: e is oldest)

    def entries(self) -> list[Entry]:
        with self._lock:
            self._adopt()
            return sorted(self._entries.values(), key=lambda e: e.loaded_at)

    def entry_of(self, value) -> Entry | None:
        with self._lock:
            return next((e for e in self._entries.values() if e.value is value), None)

    def unload(self, matches) -> list[Entry]:
        """Unload the entries for which matches(entry) is true and free their memory."""
        with self._lock:
            self._adopt()
            return self._unload(matches)

    def _unload(self, matches) -> list[Entry]:
        gone = [self._entries.pop(e.key) for e in list(self._entries.values()) if matches(e)]
        for entry in gone:
            entry.value = None
        if gone:
            release()
        return gone

    def __contains__(self, key: str) -> bool:
        """Whether key is cached or loading."""
        with self._lock:
            return key in self._entries or key in self._loading

    def __len__(self) -> int:
        return len(self._entries)


def release() -> None:
    """Collect what dropped references left, hand freed heap back to the OS and cached CUDA
    memory back to the device."""
    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc
            pass
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


MODELS = ModelCache()
