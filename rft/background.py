"""Long work for a web page (an evaluation, a comparison, a game), run so that the page can follow it
and stop it.

`run_reporting(work)` runs `work(report)` in a thread and is a generator the page iterates: it
yields the latest progress text every `poll_s` seconds, then the result. When the page stops
iterating (its Cancel button, or the browser tab closed: Gradio closes the generator in both
cases) the work is told to stop: its next `report(...)` raises `Cancelled`, so it ends at its next
batch instead of keeping a core busy for nobody.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any


class Cancelled(Exception):
    """Raised inside the work by `report` once nobody waits for its result."""


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
        if stop.is_set():
            raise Cancelled()
        latest["text"] = text

    def target() -> None:
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
