"""Unit tests of the pure-Python core: no PostgreSQL, no models."""

import re
from pathlib import Path

import numpy as np
import pytest
from fakedb import FakeDatabase

import pgml_plpy
from pgml_plpy import errors, settings
from pgml_plpy.inputs import TaskSpec, parse_args, parse_inputs, parse_task
from pgml_plpy.tasks import lookup
from pgml_plpy.tasks.pipelines import cut_at_stop, openai_args
from pgml_plpy.tasks.question_answering import decode_spans

REPO = Path(__file__).resolve().parent.parent


def test_sql_and_package_versions_match():
    sql = (REPO / "sql" / "functions" / "housekeeping.sql").read_text()
    assert re.search(r"SELECT '([^']+)'::text", sql).group(1) == pgml_plpy.__version__


def test_task_text_and_json_forms():
    assert parse_task("translation_en_to_fr", is_json=False).task == "translation_en_to_fr"
    spec = parse_task('{"task": "text-generation", "model": "gpt2", "dtype": "float16", "device": "cpu"}',
                      is_json=True)
    assert (spec.task, spec.model, spec.options) == ("text-generation", "gpt2",
                                                      {"torch_dtype": "float16", "device": "cpu"})
    # a JSON object passed as TEXT reads as the JSONB form
    assert parse_task(' {"task": "fill-mask"}', is_json=False).task == "fill-mask"
    with pytest.raises(errors.InvalidParameter, match="empty"):
        parse_task(" ", is_json=False)
    # a model alone: its config tells the task (as Hugging Face's pipeline(model=...) does)
    assert parse_task('{"model": "roberta-large-mnli"}', is_json=True) == TaskSpec(None, "roberta-large-mnli", {})


@pytest.mark.parametrize("task, error, fragment", [
    (None, errors.NullValue, "NULL"),
    ("{bad", errors.InvalidJson, "not valid JSON"),
    ('"text"', errors.InvalidParameter, "JSON object"),
    ('{"device": "cpu"}', errors.InvalidParameter, '"task" string or a "model"'),
    ('{"task": 3, "model": "x"}', errors.InvalidParameter, '"task" in the task JSON'),
    ('{"task": "fill-mask", "model": 3}', errors.InvalidParameter, "model"),
    ('{"task": "fill-mask", "devise": "cpu"}', errors.InvalidParameter, "devise"),
])
def test_bad_tasks(task, error, fragment):
    with pytest.raises(error, match=re.escape(fragment)):
        parse_task(task, is_json=True)


def test_cache_key_covers_every_loader_option():
    a = parse_task('{"task": "fill-mask", "model": "m", "torch_dtype": "float16"}', is_json=True)
    b = parse_task('{"task": "fill-mask", "model": "m", "torch_dtype": "bfloat16"}', is_json=True)
    c = parse_task('{"task": "fill-mask", "model": "m", "dtype": "float16"}', is_json=True)
    assert a.cache_key("fill-mask", "m") != b.cache_key("fill-mask", "m")
    assert a.cache_key("fill-mask", "m") == c.cache_key("fill-mask", "m")


def test_args_and_inputs():
    assert parse_args(None) == {} and parse_args('{"a": 1}') == {"a": 1}
    with pytest.raises(errors.InvalidParameter):
        parse_args("[1]")
    assert parse_inputs(["a", "b"], is_json=False) == ["a", "b"]
    assert parse_inputs(['{"q": 1}'], is_json=True) == [{"q": 1}]
    with pytest.raises(errors.NullValue, match=r"inputs\[2\]"):
        parse_inputs(["a", None], is_json=False)
    with pytest.raises(errors.InvalidParameter, match="empty"):
        parse_inputs([], is_json=False)
    with pytest.raises(errors.InvalidParameter, match="one-dimensional"):
        parse_inputs([["a"]], is_json=False)
    with pytest.raises(errors.InvalidJson, match=r"inputs\[1\]"):
        parse_inputs(["{nope"], is_json=True)


def test_task_names():
    assert lookup("sentiment-analysis")[0] == "text-classification"
    assert lookup("translation_en_to_de")[0] == "translation_en_to_de"
    with pytest.raises(errors.InvalidParameter, match="unknown task"):
        lookup("image-classification")


def test_settings_validation():
    assert settings.from_rows([("torch_threads", "4"), ("hub_downloads", "true")]) == settings.Settings(
        hub_downloads=True, torch_threads=4)
    assert settings.Settings().torch_threads == "auto"
    assert settings.from_rows([("torch_threads", '"auto"')]).torch_threads == "auto"
    for value in ("0", '"fast"', '"4"', "1.5", "true"):
        with pytest.raises(errors.InvalidSetting, match='torch_threads is .*, expected a positive integer or "auto"') as bad:
            settings.from_rows([("torch_threads", value)])
        assert bad.value.sqlstate == "22023"  # invalid_parameter_value, as a bad route in the runtimes setting
    with pytest.raises(errors.InvalidSetting, match="unknown setting"):
        settings.from_rows([("venv", '"/x"')])
    assert {name for name, _, _ in settings.defaults()} == set(settings.DESCRIPTIONS)


def test_library_errors_become_sql_errors():
    assert errors.to_pgml_error(ValueError("bad\nflag"), "x").sqlstate == "22023"
    assert errors.to_pgml_error(ValueError("bad\nflag"), "x").message == "x: bad flag"
    assert errors.to_pgml_error(MemoryError(), "x").sqlstate == "53200"
    assert errors.to_pgml_error(RuntimeError("boom"), "x").message == "x: RuntimeError: boom"
    long = errors.to_pgml_error(RuntimeError("y" * 1000), "x")
    assert len(long.message) < 450 and long.detail == "y" * 1000


def test_openai_args():
    args, stops = openai_args({"max_tokens": 5, "n": 2, "stop": "\n", "temperature": 0.5}, tokenizer="tok")
    assert args == {"max_new_tokens": 5, "num_return_sequences": 2, "stop_strings": ["\n"], "tokenizer": "tok",
                    "temperature": 0.5, "do_sample": True}
    assert stops == ["\n"]
    assert openai_args({"temperature": 0}, None)[0] == {"do_sample": False}
    with pytest.raises(errors.InvalidParameter):
        openai_args({"max_tokens": 1, "max_new_tokens": 2}, None)
    with pytest.raises(errors.InvalidParameter):
        openai_args({"stop": [""]}, None)
    assert cut_at_stop("one. two\nthree", ["\n", "."]) == "one"


def test_decode_spans_keeps_short_spans_in_context():
    start = np.array([0.0, 0.1, 0.7, 0.2], dtype=np.float32)
    end = np.array([0.0, 0.1, 0.1, 0.8], dtype=np.float32)
    starts, ends, scores = decode_spans(start, end, 1, 15, np.array([0, 1, 1, 1]))
    assert (starts.tolist(), ends.tolist()) == ([2], [3])
    assert scores[0] == pytest.approx(0.56)
    # max_answer_len 1 allows single tokens only
    starts, ends, _ = decode_spans(start, end, 1, 1, np.array([0, 1, 1, 1]))
    assert starts.tolist() == ends.tolist()


def test_torch_threads_come_from_the_setting():
    import torch

    from pgml_plpy.runtimes.backend import use_threads

    before = torch.get_num_threads()
    try:
        use_threads(settings.Settings(torch_threads=2))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_auto_threads_share_the_cores(monkeypatch):
    from pgml_plpy import threads

    cores = threads.cores()
    auto = settings.Settings(torch_threads="auto")
    elsewhere, active = [0.0], [1]
    monkeypatch.setattr(threads, "running_elsewhere", lambda: elsewhere[0])
    db = FakeDatabase().on("pg_locks", lambda params: [{"n": active[0]}])
    try:
        threads.bind(None)  # no database, a quiet machine: this process gets every core
        assert threads.threads(auto) == cores
        threads.bind(db)
        for active[0] in (1, 2, 3, cores, 4 * cores):  # backends running model calls share them
            assert threads.threads(auto) == max(1, cores // active[0])
        assert len(db.ran("pg_advisory_xact_lock_shared")) == 5  # each decision marks this backend as at work
        active[0] = 1
        for busy in (1.0, 2.5, cores + 3.0):  # so do other processes' running threads
            elsewhere[0] = busy
            assert threads.threads(auto) == max(1, int(cores // (1 + busy)))
        assert threads.threads(settings.Settings(torch_threads=7)) == 7  # a number wins
    finally:
        threads.bind(None)


def test_running_elsewhere_reads_the_machine():
    from pgml_plpy import threads

    assert 0 <= threads.running_elsewhere() < 100000


class _Cancel(Exception):
    """What a cancel looks like to the code: the interrupt check raises."""


class _Server(FakeDatabase):
    """A database whose interrupt check raises once cancelled is set."""

    def __init__(self):
        super().__init__()
        self.cancelled = False

    def check_interrupts(self) -> None:
        if self.cancelled:
            self.cancelled = False
            raise _Cancel()


def _pgml_threads():
    import threading

    return [t for t in threading.enumerate() if t.name.startswith("pgml-")]


def test_a_cancelled_load_finishes_into_the_cache_for_the_next_call():
    import threading

    from pgml_plpy import interrupts
    from pgml_plpy.cache import ModelCache

    cache, server, release, calls = ModelCache(), _Server(), threading.Event(), []

    def load():
        calls.append(1)
        release.wait(60)
        return "model"

    interrupts.bind(server)
    try:
        server.cancelled = True
        with pytest.raises(_Cancel):
            cache.get("k", load, kind="embed", model="m")
        assert "k" in cache and cache.entries() == [] and len(_pgml_threads()) == 1  # still loading, not cached
        release.set()
        assert cache.get("k", load, kind="embed", model="m") == "model"
        assert calls == [1]  # the next call waited for the same load
        assert [(e.kind, e.model, e.hits) for e in cache.entries()] == [("embed", "m", 0)]
        assert cache.get("k", load) == "model" and cache.entries()[0].hits == 1
        for thread in _pgml_threads():
            thread.join(60)
        assert _pgml_threads() == []
    finally:
        interrupts.bind(None)


def test_workers_are_stopped_at_their_next_python_instruction_when_a_backend_exits():
    import threading
    import time

    from pgml_plpy import interrupts

    looping = threading.Event()

    def load_forever():
        while True:
            looping.set()
            time.sleep(0.01)

    future = interrupts.start(load_forever, "pgml-load")
    assert looping.wait(60)
    interrupts._stop_workers(0, 0)  # what the backend's exit callback runs
    assert _pgml_threads() == [] and isinstance(future.exception(0), SystemExit)


def test_a_cancelled_load_that_fails_is_dropped_and_the_next_call_loads_again():
    import threading

    from pgml_plpy import interrupts
    from pgml_plpy.cache import ModelCache

    cache, server, release, calls = ModelCache(), _Server(), threading.Event(), []

    def load():
        calls.append(1)
        if len(calls) == 1:
            release.wait(60)
            raise errors.ModelNotFound("gone")
        return "model"

    interrupts.bind(server)
    try:
        server.cancelled = True
        with pytest.raises(_Cancel):
            cache.get("k", load)
        release.set()
        for thread in _pgml_threads():
            thread.join(60)
        assert cache.entries() == [] and "k" not in cache  # no half-loaded entry
        assert cache.get("k", load) == "model" and len(calls) == 2
        with pytest.raises(errors.ModelNotFound, match="bad"):
            cache.get("other", lambda: (_ for _ in ()).throw(errors.ModelNotFound("bad")))
        assert "other" not in cache
    finally:
        interrupts.bind(None)


def test_callers_on_many_threads_share_one_load_per_model(monkeypatch):
    """A shared runtime's replica calls the cache from several threads at once (no server bound)."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from pgml_plpy import cache as cache_module

    monkeypatch.setattr(cache_module, "release", lambda: None)  # a full gc per eviction: seconds, no race
    cache, calls, lock = cache_module.ModelCache(), [], threading.Lock()
    cache.limit(3, None)

    def loader(key):
        def load():
            with lock:
                calls.append(key)
            time.sleep(0.002)  # other threads come in meanwhile
            return f"model {key}"
        return load

    keys = [f"k{i % 5}" for i in range(200)]
    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(lambda key: cache.get(key, loader(key)), keys))
    assert got == [f"model {key}" for key in keys]
    assert len(cache) <= 3 and len(calls) >= 4  # each key loaded once per stay in the cache


def test_disk_full_and_unwritable_folders_say_what_to_fix():
    import errno

    full = errors.to_pgml_error(OSError(errno.ENOSPC, "No space left on device"), "restoring model 3")
    assert (full.sqlstate, full.message) == ("53100", "restoring model 3: disk full: [Errno 28] No space left on device")
    assert "pgml.validate" in full.hint
    denied = errors.to_pgml_error(PermissionError(errno.EACCES, "Permission denied"), "x")
    assert denied.sqlstate == "58030" and "OS user" in denied.hint
