"""The Trainer run: TrainingArguments, LoRA through peft, progress reports, and saving the result.

Inside a backend: no tqdm bars and no log printing (progress goes to the report function), no
reporting integrations, no DataLoader worker processes (a backend must not fork), checkpoints in a
temporary folder. A pending cancel or statement_timeout is acted on between steps and, through the
hooks interrupts.watch put on the model, within its forward passes.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable

from .. import interrupts
from ..errors import InvalidParameter
from . import params
from .registry.files import PICKLES

# Progress reports: every REPORT_EVERY seconds for the first minute, then every REPORT_LATER.
REPORT_EVERY = 2.0
REPORT_LATER = 10.0
# Files of a saved model that are not kept (pickles are never restored into a server).
DROPPED_FILES = {"README.md", "training_args.bin"}


def training_arguments(hp: params.Hyperparams, output_dir: str, device):
    """TrainingArguments from hyperparams.training_args with pgml_plpy's own values where it decides."""
    import transformers

    given = params.training_args(hp)
    defaults = {"save_strategy": "no", "logging_strategy": "steps", "seed": 42}
    forced = {"output_dir": output_dir, "report_to": "none", "disable_tqdm": True, "dataloader_num_workers": 0,
              "push_to_hub": False}
    if device is not None and device.type == "cpu":
        forced["use_cpu"] = True
    try:
        return transformers.TrainingArguments(**{**defaults, **given, **forced})
    except TypeError as exc:
        raise InvalidParameter(f"hyperparams.training_args: {exc}".replace("TrainingArguments.__init__() ", ""),
                               hint="training_args are TrainingArguments' keyword arguments.") from None
    except ValueError as exc:
        raise InvalidParameter(f"hyperparams.training_args: {exc}") from None


def seed_of(hp: params.Hyperparams) -> int:
    seed = hp.training_args.get("seed", 42)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidParameter(f"training_args.seed must be an integer, not {seed!r}")
    return seed


def with_lora(model, config: dict):
    """model wrapped with LoRA adapters (peft); only the adapters train."""
    import peft

    try:
        lora = peft.LoraConfig(**config)
    except TypeError as exc:
        raise InvalidParameter(f"hyperparams.lora_config: {exc}",
                               hint="lora_config holds peft.LoraConfig arguments (r, lora_alpha, lora_dropout, "
                                    "target_modules, ...).") from None
    try:
        return peft.get_peft_model(model, lora)
    except ValueError as exc:
        raise InvalidParameter(f"hyperparams.lora_config: {exc}",
                               hint="Name the model's layers to adapt in lora_config.target_modules.") from None


def _callback_class():
    import transformers

    class Progress(transformers.TrainerCallback):
        """Asks the Trainer to log every few seconds and hands each log to report()."""

        def __init__(self, report: Callable[[dict], None]):
            self.report = report
            self.started = self.last = time.monotonic()

        def on_train_begin(self, args, state, control, **kwargs):
            self.started = self.last = time.monotonic()

        def on_step_end(self, args, state, control, **kwargs):
            interrupts.check()
            now = time.monotonic()
            if now - self.last >= (REPORT_EVERY if now - self.started < 60 else REPORT_LATER):
                control.should_log = True
            return control

        def on_log(self, args, state, control, logs=None, **kwargs):
            now = time.monotonic()
            self.last = now
            elapsed = now - self.started
            step, total = state.global_step, state.max_steps
            rate = step / elapsed if elapsed > 0 else 0.0
            record = {k: v for k, v in (logs or {}).items() if isinstance(v, (int, float))}
            record.update({"step": step, "total_steps": total, "epoch": float(state.epoch or 0.0),
                           "elapsed_seconds": round(elapsed, 3), "steps_per_second": round(rate, 4),
                           "eta_seconds": round((total - step) / rate, 1) if rate > 0 else None})
            self.report(record)

    return Progress


@dataclass
class Trained:
    model: object
    tokenizer: object
    trainer: object
    train_metrics: dict


def train(task, model, tokenizer, train_features: list[dict], test_features: list[dict],
          hp: params.Hyperparams, device, output_dir: str, report: Callable[[dict], None]) -> Trained:
    """Fine-tune model on train_features (test_features for evaluation during training, if asked)."""
    import transformers

    args = training_arguments(hp, output_dir, device)
    if task.lora is not None:
        model = with_lora(model, task.lora)
    strategy = getattr(args, "eval_strategy", "no")
    evaluating = getattr(strategy, "value", strategy) != "no"
    trainer = transformers.Trainer(model=model, args=args, train_dataset=train_features,
                                   eval_dataset=test_features if evaluating else None,
                                   data_collator=task.collator(model, tokenizer), processing_class=tokenizer,
                                   callbacks=[_callback_class()(report)])
    trainer.remove_callback(transformers.trainer_callback.PrinterCallback)
    result = trainer.train()
    train_metrics = {k: float(v) for k, v in result.metrics.items() if isinstance(v, (int, float))}
    train_metrics["total_steps"] = trainer.state.global_step
    return Trained(model, tokenizer, trainer, train_metrics)


def save(trained: Trained, task, folder: str) -> list[str]:
    """The tuned model (or its LoRA adapter) and tokenizer saved in folder; returns the files kept."""
    task.finalize(trained.model, trained.tokenizer)
    trained.model.save_pretrained(folder, safe_serialization=True)
    trained.tokenizer.save_pretrained(folder)
    kept = []
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, folder)
            if name in DROPPED_FILES or name.endswith(PICKLES):
                os.remove(path)
            else:
                kept.append(rel)
    return sorted(kept)
