"""Page work that reports progress and stops when the page stops waiting for it."""

import threading
import time

import pytest

from rft.background import Cancelled, Done, Progress, StopRequests, run_reporting


def test_progress_then_the_result():
    def work(report):
        for batch in range(3):
            report(f"{batch} done")
            time.sleep(0.05)
        return "table"

    items = list(run_reporting(work, poll_s=0.02))
    assert isinstance(items[-1], Done) and items[-1].result == "table"
    assert all(isinstance(item, Progress) for item in items[:-1]) and len(items) > 1


def test_the_works_error_reaches_the_page():
    def work(report):
        raise ValueError("no held-out rows")

    with pytest.raises(ValueError, match="no held-out rows"):
        list(run_reporting(work, poll_s=0.01))


def test_closing_the_generator_stops_the_work_at_its_next_report():
    batches_done, ended = [], threading.Event()

    def work(report):
        try:
            for batch in range(1000):
                time.sleep(0.02)
                report(f"{batch}")
                batches_done.append(batch)
        except Cancelled:
            ended.set()
            raise

    updates = run_reporting(work, poll_s=0.05)
    assert isinstance(next(updates), Progress)
    updates.close()  # what Gradio does on Cancel, or when the browser tab closes
    assert ended.wait(2)
    stopped_at = len(batches_done)
    time.sleep(0.1)
    assert len(batches_done) == stopped_at < 1000


def test_a_stop_request_ends_the_work_and_reaches_the_page_as_cancelled():
    """The Stop button's path: the page's own handler sees Cancelled and writes its last message."""
    stops, batches_done = StopRequests(), []

    def work(report):
        for batch in range(1000):
            time.sleep(0.02)
            report(f"{batch}")
            batches_done.append(batch)

    updates = run_reporting(work, poll_s=0.05, stop=stops.start("page-1"))
    assert isinstance(next(updates), Progress)
    stops.stop("page-2")  # another page's Stop leaves this work alone
    assert isinstance(next(updates), Progress)
    stops.stop("page-1")
    with pytest.raises(Cancelled):
        list(updates)
    assert len(batches_done) < 1000


def test_a_generation_inside_the_work_stops_within_a_token(tiny_model_dir, monkeypatch):
    from rft import generation
    from rft.models import load_for_inference

    model, tokenizer = load_for_inference(str(tiny_model_dir), device="cpu")
    prompt = tokenizer("Say something", return_tensors="pt")
    tokens_decoded = []
    real_pick = generation._pick

    def counting_pick(*args):
        tokens_decoded.append(1)
        time.sleep(0.01)  # a slow machine: the page goes away mid-generation
        return real_pick(*args)

    def work(report):
        report("generating")
        return generation.generate(model, prompt.input_ids, prompt.attention_mask, 1, 5000, [-1],
                                   tokenizer.pad_token_id, temperature=1.0)

    monkeypatch.setattr(generation, "_pick", counting_pick)
    updates = run_reporting(work, poll_s=0.05)
    next(updates)
    updates.close()
    time.sleep(0.3)
    stopped_at = len(tokens_decoded)
    time.sleep(0.2)
    assert len(tokens_decoded) == stopped_at < 5000
