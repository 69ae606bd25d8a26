"""How many torch threads a call gets: the `torch_threads` setting, decided per call.

A number is used as it is. "auto" shares the cores this process may use among the work that
wants them right now: the backends running pgml model calls (this one included; each marks
itself with an advisory lock, and the marks are counted) and, on Linux, the threads other
processes have running at this moment (/proc/loadavg, scaled to this process's share of the
machine's cores). A lone call on a quiet server gets every core; concurrent calls, or a machine busy with other work,
get fewer, because torch slows down badly when its threads outnumber the free cores (two
threads on a busy 2-core machine ran 3-4x slower than one). CALL pgml.embed_table decides
again before each batch.
"""

from __future__ import annotations

import os

from .settings import Settings

# A transaction-level shared advisory lock marks a backend running pgml model calls (key: "pgml", 1). Any role
# sees every backend's locks in pg_locks, unlike the state and query of other roles' backends in
# pg_stat_activity; the lock goes with the transaction, whatever ends it.
MARK = "SELECT pg_catalog.pg_advisory_xact_lock_shared(1886809452, 1)"
MARKED = ("SELECT count(*)::int AS n FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND classid = 1886809452 "
          "AND objid = 1 AND objsubid = 2 AND granted")

_db = None


def bind(db) -> None:
    """Use db (a db.Database) to count the backends at work for the call now starting (unbound, as in a
    process without a database, this one is alone)."""
    global _db
    _db = db


def active_backends() -> int:
    """Backends of this server running pgml model calls right now, this one included: this one marks
    itself until its transaction ends, and counts the marks."""
    if _db is None:
        return 1
    _db.execute(MARK)
    return _db.execute(MARKED)[0]["n"]


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def running_elsewhere() -> float:
    """Threads of other processes running or ready to run right now, as many as compete for this
    process's cores (0 where /proc does not tell)."""
    try:
        with open("/proc/loadavg") as f:
            running = int(f.read().split()[3].split("/")[0])
        mine = 0
        for task in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{task}/stat") as f:
                mine += f.read().rsplit(")", 1)[1].split()[0] == "R"
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(0, running - mine) * cores() / (os.cpu_count() or 1)


def threads(settings: Settings) -> int:
    """torch threads for the call now starting."""
    if settings.torch_threads != "auto":
        return settings.torch_threads
    return max(1, int(cores() // max(active_backends(), 1 + running_elsewhere())))
