"""The per-backend model cache.

A PostgreSQL backend is one process per connection, so a module-level dict lives as
long as the connection: the second call of the same task and model in a backend
costs only inference. Keys hold everything that changes the loaded model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Entry:
    value: object
    load_seconds: float
    loaded_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.time)
    hits: int = 0


class ModelCache:
    def __init__(self):
        self._entries: dict[str, Entry] = {}

    def get(self, key: str, load):
        """The cached value for key, loading it with load() on a miss."""
        entry = self._entries.get(key)
        if entry is None:
            started = time.perf_counter()
            entry = Entry(load(), time.perf_counter() - started)
            self._entries[key] = entry
        else:
            entry.hits += 1
            entry.last_used = time.time()
        return entry.value

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)


MODELS = ModelCache()
