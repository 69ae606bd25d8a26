"""Letting PostgreSQL's cancel, statement_timeout and pg_terminate_backend reach Python work.

A backend processes those interrupts only when it runs its own code; Python running a
model does not. So every model gets forward hooks (on itself and on each block of its
layer lists) that call into the server at most every CHECK_INTERVAL seconds: a pending
cancel then raises out of the model call as PostgreSQL's own error, within about that
interval plus one block's time. Only the backend's main thread may call into the server.
"""

from __future__ import annotations

import threading
import time

CHECK_INTERVAL = 0.1  # seconds

_db = None
_last = 0.0


def bind(db) -> None:
    """Use db (a db.Database) for the checks of the call now starting."""
    global _db
    _db = db


def check(force: bool = False) -> None:
    """Let the server act on a pending interrupt (it raises PostgreSQL's error for a cancel)."""
    global _last
    if _db is None or threading.current_thread() is not threading.main_thread():
        return
    now = time.monotonic()
    if not force and now - _last < CHECK_INTERVAL:
        return
    _last = now
    _db.check_interrupts()


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
