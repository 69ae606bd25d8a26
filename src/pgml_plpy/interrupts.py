"""Letting PostgreSQL's cancel, statement_timeout and pg_terminate_backend reach Python work.

A backend processes those interrupts only when it runs its own code; Python running a
model does not. So every model gets forward hooks (on itself and on each block of its
layer lists) that call into the server at most every CHECK_INTERVAL seconds: a pending
cancel then raises out of the model call as PostgreSQL's own error, within about that
interval plus one block's time. Only the backend's main thread may call into the server.

Work that has no forward passes to hook (importing torch, loading a model) runs on a worker
thread instead (`start`), while the main thread waits for it in short slices and checks
for interrupts between them (`wait`). A cancel leaves that work running; the backend's exit
stops it first (see `_join_at_backend_exit`).

Outside a backend (the shared runtime's replicas), work runs in a thread that carries its
request's cancel flag (cancel_on): the same hooks stop it once the flag is set.
"""

from __future__ import annotations

import ctypes
import threading
import time
from concurrent.futures import Future
from concurrent.futures import wait as wait_for
from contextlib import contextmanager
from typing import Callable

from .errors import Cancelled

CHECK_INTERVAL = 0.1  # seconds
SLICE = 0.05  # seconds the main thread waits for a worker between interrupt checks

_db = None
_last = 0.0
_thread = threading.local()  # .cancel: the threading.Event of the request this thread works for


@contextmanager
def cancel_on(event: threading.Event):
    """Work in this thread stops at its next check once event is set (it raises Cancelled)."""
    _thread.cancel = event
    try:
        yield
    finally:
        _thread.cancel = None


def bind(db) -> None:
    """Use db (a db.Database) for the checks of the call now starting."""
    global _db
    _db = db


def check(force: bool = False) -> None:
    """Let the server act on a pending interrupt (it raises PostgreSQL's error for a cancel)."""
    global _last
    event = getattr(_thread, "cancel", None)
    if event is not None and event.is_set():
        raise Cancelled("canceling the request: its caller went away")
    if _db is None or threading.current_thread() is not threading.main_thread():
        return
    now = time.monotonic()
    if not force and now - _last < CHECK_INTERVAL:
        return
    _last = now
    _db.check_interrupts()


_workers: set[threading.Thread] = set()
_exit_hook = None


def start(fn: Callable[[], object], name: str) -> Future:
    """fn() running on a new daemon thread, as a future of its result or exception.

    fn must not call into the server. The thread ends when fn returns, whoever waits or not.
    """
    _join_at_backend_exit()
    future: Future = Future()

    def work():
        future.set_running_or_notify_cancel()
        try:
            future.set_result(fn())
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits for the future
            future.set_exception(exc)
        finally:
            _workers.discard(threading.current_thread())

    thread = threading.Thread(target=work, name=name, daemon=True)
    _workers.add(thread)
    thread.start()
    return future


def wait(future: Future):
    """The future's result, waited for in slices with an interrupt check after each.

    A cancel raises here and leaves the future running (whoever asks next waits for it). Where
    nothing is bound (another thread, a process without a server), it simply waits.
    """
    while not wait_for([future], timeout=SLICE).done:
        check(force=True)
    return future.result()


def _stop_workers(code, arg) -> None:
    """Stop the worker threads at their next Python instruction, and wait until they have ended."""
    for thread in list(_workers):
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(SystemExit))
    for thread in list(_workers):
        thread.join()


def _join_at_backend_exit() -> None:
    """Make this backend's exit stop its worker threads first.

    A backend that exits (its client went away, pg_terminate_backend) runs the C++ destructors of
    torch's libraries; a thread still loading a model would run that library's code meanwhile and
    crash the backend, and PostgreSQL answers a crashed backend by restarting all of them.
    PostgreSQL's own exit callbacks (on_proc_exit) run before those destructors: one stops the
    workers at their next Python instruction (after the library call they are in, if any) and
    waits for them. Outside a backend there is no such callback, and nothing to do.
    """
    global _exit_hook
    if _exit_hook is not None:
        return
    program = ctypes.CDLL(None)
    if not hasattr(program, "on_proc_exit"):
        _exit_hook = False
        return
    _exit_hook = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_size_t)(_stop_workers)
    program.on_proc_exit.argtypes = [type(_exit_hook), ctypes.c_size_t]
    program.on_proc_exit.restype = None
    program.on_proc_exit(_exit_hook, 0)


def _hook(module, args):
    check()


def watch(model) -> None:
    """Check for interrupts before every forward pass of model and of each of its layer blocks."""
    import torch

    model.register_forward_pre_hook(_hook)
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList):
            for block in module:
                block.register_forward_pre_hook(_hook)
