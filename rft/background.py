"""Long work for a web page (an evaluation, a comparison, a game), run so that the page can follow it
and stop it.

`run_reporting(work)` runs `work(report)` in a thread and is a generator the page iterates: it
yields the latest progress text every `poll_s` seconds, then the result. When the page stops
iterating (its Cancel button, or the browser tab closed: Gradio closes the generator in both
cases) the work is told to stop: its next `report(...)`, or the next token any generation inside it
decodes (`raise_if_cancelled`), raises `Cancelled`, so it ends there instead of keeping a core busy
for nobody.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any


class Cancelled(Exception):
    """Raised inside the work by `report` once nobody waits for its result."""


_work = threading.local()  # the stop flag of the work running on this thread, if any


def raise_if_cancelled() -> None:
    """Raises Cancelled when the work running on this thread is no longer waited for. Long loops
    deep inside the work (the generator's decode loop) call it, so a comparison or a game stops
    within a token of its page going away, with no callback passed down to them."""
    stop = getattr(_work, "stop", None)
    if stop is not None and stop.is_set():
        raise Cancelled()


@dataclass(frozen=True)
class Progress:
    text: str


@dataclass(frozen=True)
class Done:
    result: Any


def run_reporting(work: Callable[[Callable[[str], None]], Any], poll_s: float = 1.0,
                  first_text: str = "starting") -> Iterator[Progress | Done]:
    """Progress(text) while `work(report)` runs, then Done(result); the work's own error is raised."""
    stop = threading.Event()
    latest = {"text": first_text}
    outcome: dict[str, Any] = {}

    def report(text: str) -> None:
        raise_if_cancelled()
        latest["text"] = text

    def target() -> None:
        _work.stop = stop
        try:
            outcome["result"] = work(report)
        except BaseException as exc:  # handed to the page's thread, which raises it
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="page-work", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(poll_s)
            if thread.is_alive():
                yield Progress(latest["text"])
        if "error" in outcome:
            raise outcome["error"]
        yield Done(outcome["result"])
    finally:
        stop.set()
