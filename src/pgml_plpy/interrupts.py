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

_plpy = None
_plan = None
_last = 0.0


def bind(plpy) -> None:
    """Use plpy for the checks of the call now starting."""
    global _plpy
    _plpy = plpy


def check(force: bool = False) -> None:
    """Let the server act on a pending interrupt (it raises plpy.SPIError for a cancel)."""
    global _plan, _last
    if _plpy is None or threading.current_thread() is not threading.main_thread():
        return
    now = time.monotonic()
    if not force and now - _last < CHECK_INTERVAL:
        return
    _last = now
    if _plan is None:
        _plan = _plpy.prepare("SELECT 1")
    _plpy.execute(_plan)


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
