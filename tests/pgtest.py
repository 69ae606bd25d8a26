"""Small helpers for tests that talk SQL."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest
from psycopg.types.json import Jsonb


INSTALL = Path(__file__).resolve().parent.parent / "sql" / "install.sql"


def install(dsn: str, venv: str) -> subprocess.CompletedProcess:
    """Run sql/install.sql with psql as the install's user: the install, or the upgrade."""
    return subprocess.run(["psql", "-X", "-q", "-d", dsn, "-v", "ON_ERROR_STOP=1", "-v", f"venv={venv}",
                           "-f", str(INSTALL)], capture_output=True, text=True)


def one(conn, query, params=None):
    """The first column of the first row."""
    return conn.execute(query, params).fetchone()[0]


def sql_error(conn, query, params=None) -> psycopg.Error:
    """The error a statement raises (it must raise), with the backend still usable after it."""
    with pytest.raises(psycopg.Error) as info:
        conn.execute(query, params)
    assert conn.execute("SELECT 1").fetchone()[0] == 1
    return info.value


def notices(conn) -> list[str]:
    """The NOTICE messages conn receives from now on: a list that fills as they arrive."""
    seen = []
    conn.add_notice_handler(lambda diag: seen.append(diag.message_primary))
    return seen


def in_backend(conn, code: str) -> list[str]:
    """Run Python code in conn's backend (a plpython3u DO block, as a superuser); the NOTICEs it raised."""
    seen = []

    def handler(diag):
        seen.append(diag.message_primary)

    conn.add_notice_handler(handler)
    try:
        conn.execute("DO LANGUAGE plpython3u $$\n" + code + "\n$$")
    finally:
        conn.remove_notice_handler(handler)
    return seen


def rss_kb(conn) -> int:
    """The backend's resident memory after a garbage collection, read inside it."""
    return int(in_backend(conn, "import gc; gc.collect(); plpy.notice([l for l in open('/proc/self/status') "
                                "if l.startswith('VmRSS')][0].split()[1])")[-1])


def threads(conn) -> list[str]:
    """The names of the threads running in conn's backend."""
    return in_backend(conn, "import threading; plpy.notice(','.join(t.name for t in threading.enumerate()))"
                      )[-1].split(",")


def task(name: str, model: str, **options) -> Jsonb:
    return Jsonb({"task": name, "model": model, **options})


def readable_tree(root: str) -> None:
    """Make root readable by the server's OS user (dirs 755, files 644)."""
    for path, dirs, files in os.walk(root):
        os.chmod(path, 0o755)
        for name in files:
            os.chmod(os.path.join(path, name), 0o644)


def hf_cache(root: str, model_folder: str, repos: list[str]) -> None:
    """A Hugging Face hub cache under root holding model_folder as each of the hub ids in repos."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    for repo in repos:
        folder = os.path.join(root, "models--" + repo.replace("/", "--"))
        shutil.copytree(model_folder, os.path.join(folder, "snapshots", commit))
        os.makedirs(os.path.join(folder, "refs"))
        with open(os.path.join(folder, "refs", "main"), "w") as f:
            f.write(commit)
    readable_tree(root)


def eventually(check, timeout: float = 120.0, every: float = 0.2, what: str = "the condition"):
    """check()'s first truthy result, polled until timeout seconds pass (then the test fails)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not hold within {timeout:.0f} s (last: {result!r})")
        time.sleep(every)


def same(ours, theirs, path="$", rel=1e-4, abs=1e-6):
    """Equal up to float rounding (results of other thread counts, batches, runtimes or library versions):
    texts, spans and shapes exactly, numbers to `rel` relative or `abs` absolute."""
    if isinstance(theirs, float):
        assert isinstance(ours, (int, float)) and math.isclose(ours, theirs, rel_tol=rel, abs_tol=abs), (
            f"{path}: {ours} != {theirs}")
    elif isinstance(theirs, dict):
        assert isinstance(ours, dict) and set(ours) == set(theirs), f"{path}: {ours} != {theirs}"
        for key in theirs:
            same(ours[key], theirs[key], f"{path}.{key}", rel, abs)
    elif isinstance(theirs, (list, tuple)):
        assert isinstance(ours, (list, tuple)) and len(ours) == len(theirs), f"{path}: {ours} != {theirs}"
        for i, (a, b) in enumerate(zip(ours, theirs)):
            same(a, b, f"{path}[{i}]", rel, abs)
    else:
        assert ours == theirs, f"{path}: {ours!r} != {theirs!r}"


def long_gpt2_folder(models: dict) -> str:
    """A GPT-2 with random weights and room for 2000 tokens: generations that take seconds."""
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = os.path.join(os.path.dirname(models["gpt2-chat"]), "gpt2-long-random")
    if not os.path.isdir(folder):
        shutil.copytree(models["gpt2-chat"], folder + ".tmp")
        config = GPT2Config.from_pretrained(models["gpt2-chat"], n_positions=2048, n_layer=4, n_embd=256)
        GPT2LMHeadModel(config).save_pretrained(folder + ".tmp")
        readable_tree(folder + ".tmp")
        os.rename(folder + ".tmp", folder)
    return folder
