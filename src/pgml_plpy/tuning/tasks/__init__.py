"""The tasks pgml.tune trains, one module per family; the task registry (pgml_plpy.tasks) names them."""

from __future__ import annotations

from ...tasks import find
from ..params import Hyperparams, canonical_task
from .base import TuneTask


def make(task_arg: str, hp: Hyperparams, y_column_name: str | None) -> TuneTask:
    """The tuning task for a task name as the call gave it (translation_en_to_fr selects T5's prefix)."""
    task = canonical_task(task_arg)
    run_name, entry = find(task_arg.strip())
    return entry.tuning_class()(task, hp, y_column_name, run_name)
