"""What the benchmarks share: the texts, a throwaway cluster, and the timing loop."""

from __future__ import annotations

import os

# As inside a backend (server.py): the tokenizer's own thread pool would compete with torch's
# threads on the direct side and make the comparison unequal.
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import contextlib  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

WORDS = ("the service was quick and friendly but the food arrived cold and the room was far too noisy "
         "for a quiet dinner with family on a rainy evening in the old part of town").split()


def sentences(n: int) -> list[str]:
    """n deterministic sentences of 12 to 25 words."""
    return [" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(12 + i % 14)) for i in range(n)]


@contextlib.contextmanager
def database(dsn: str | None):
    """The DSN given, or a throwaway cluster with pgml_plpy installed from this checkout."""
    if dsn is not None:
        yield dsn
        return
    from localengine import free_port
    from localpg import LocalCluster

    cluster = LocalCluster(tempfile.mkdtemp(prefix="pgml_bench_"), free_port()).start()
    try:
        cluster.install(REPO / ".venv")
        yield cluster.dsn
    finally:
        cluster.stop()


def alternate(rounds: int, **runs) -> dict[str, float]:
    """Median seconds of each run, the runs alternating round by round so that drift hits all. A run is a
    function, or a pair (setup, function) whose setup is not timed."""
    times = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            if isinstance(run, tuple):
                setup, run = run
                setup()
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(t) for name, t in times.items()}
