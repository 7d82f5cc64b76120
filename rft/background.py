"""Long work for a web page (an evaluation, a comparison, a game), run so that the page can follow it
and stop it.

`run_reporting(work)` runs `work(report)` in a thread and is a generator the page iterates: it
yields the latest progress text every `poll_s` seconds, then the result. The work is told to stop
when the page's Stop button sets the `stop` event handed in (`StopRequests`), or when the page stops
iterating (the browser tab closed: Gradio closes the generator). Its next `report(...)`, or the
next token any generation inside it decodes (`raise_if_cancelled`), then raises `Cancelled`, so it
ends there instead of keeping a core busy for nobody.

A Stop button sets an event rather than cancelling the page's event in Gradio: the handler then
ends by itself, with its own last message ("Stopped."), where a cancelled event races its last
progress update against the Stop button's message and leaves an error badge on its outputs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any


class Cancelled(Exception):
    """Raised inside the work by `report` once nobody waits for its result."""


_work = threading.local()  # the stop flags of the work running on this thread, if any


def raise_if_cancelled() -> None:
    """Raises Cancelled when the work running on this thread is no longer waited for. Long loops
    deep inside the work (the generator's decode loop) call it, so a comparison or a game stops
    within a token of its page going away, with no callback passed down to them."""
    if any(flag.is_set() for flag in getattr(_work, "stops", ())):
        raise Cancelled()


@dataclass(frozen=True)
class Progress:
    text: str


@dataclass(frozen=True)
class Done:
    result: Any


def run_reporting(work: Callable[[Callable[[str], None]], Any], poll_s: float = 1.0,
                  first_text: str = "starting", stop: threading.Event | None = None) -> Iterator[Progress | Done]:
    """Progress(text) while `work(report)` runs, then Done(result); the work's own error is raised,
    and `Cancelled` when `stop` was set before the work finished. `stop` outlives this work (a game's
    turns share one), so the page going away sets a flag of this work's own."""
    page_gone = threading.Event()
    stops = (page_gone,) if stop is None else (page_gone, stop)
    latest = {"text": first_text}
    outcome: dict[str, Any] = {}

    def report(text: str) -> None:
        raise_if_cancelled()
        latest["text"] = text

    def target() -> None:
        _work.stops = stops
        try:
            outcome["result"] = work(report)
        except BaseException as exc:  # handed to the page's thread, which raises it
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="page-work", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(poll_s)
            if thread.is_alive() and not any(flag.is_set() for flag in stops):
                yield Progress(latest["text"])
        if "error" in outcome:
            raise outcome["error"]
        yield Done(outcome["result"])
    finally:
        page_gone.set()


class StopRequests:
    """The Stop buttons of one kind of page work, one event per page (Gradio's session hash): the
    handler takes a fresh event when it starts and hands it to `run_reporting`; Stop sets it."""

    def __init__(self) -> None:
        self._events: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def start(self, page: str) -> threading.Event:
        with self._lock:
            self._events[page] = event = threading.Event()
        return event

    def stop(self, page: str) -> None:
        with self._lock:
            event = self._events.pop(page, None)
        if event is not None:
            event.set()
