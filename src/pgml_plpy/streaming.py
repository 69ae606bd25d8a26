"""Streaming generated text out of a backend, piece by piece, without ever blocking for good.

generate() runs in a worker thread that only computes (it never calls into the server);
the backend's main thread hands the pieces on as they come and, while it waits, calls
into the server so that a cancel or statement_timeout stops it. Closing the stream (the
cursor closes, or an error) stops generation at its next step. An error in the worker
reaches the caller as an error, never as a stream that hangs.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Iterator

from . import interrupts

_END = object()
WAIT = 0.05  # seconds between interrupt checks while no piece arrives


def stream_generation(generate: Callable[..., object], tokenizer, stops: list[str]) -> Iterator[str]:
    """Text pieces of generate(streamer=..., stopping_criteria=...), cut at the first stop string."""
    from transformers import StoppingCriteria, StoppingCriteriaList, TextStreamer

    pieces: queue.Queue = queue.Queue()
    stop = threading.Event()
    failure: list[BaseException] = []

    class Streamer(TextStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False):
            if text:
                pieces.put(text)

    class Stopped(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            import torch

            return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool, device=input_ids.device)

    def work():
        try:
            generate(streamer=Streamer(tokenizer, skip_prompt=True, skip_special_tokens=True),
                     stopping_criteria=StoppingCriteriaList([Stopped()]))
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            failure.append(exc)
        finally:
            pieces.put(_END)

    worker = threading.Thread(target=work, name="pgml-generate", daemon=True)
    worker.start()
    try:
        yield from cut_at_stops(_drain(pieces), stops)
        if failure:
            raise failure[0]
    finally:
        stop.set()
        worker.join()


def _drain(pieces: queue.Queue) -> Iterator[str]:
    while True:
        try:
            piece = pieces.get(timeout=WAIT)
        except queue.Empty:
            interrupts.check()
            continue
        if piece is _END:
            return
        yield piece


def cut_at_stops(pieces: Iterator[str], stops: list[str]) -> Iterator[str]:
    """The pieces up to the first stop string (left out), holding back what could start one."""
    if not stops:
        yield from pieces
        return
    hold = max(len(s) for s in stops) - 1
    text, sent = "", 0
    for piece in pieces:
        text += piece
        found = [i for i in (text.find(s, sent) for s in stops) if i >= 0]
        if found:
            if min(found) > sent:
                yield text[sent:min(found)]
            return
        if len(text) - hold > sent:
            yield text[sent:len(text) - hold]
            sent = len(text) - hold
    if len(text) > sent:
        yield text[sent:]
