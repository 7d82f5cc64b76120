"""Soak: a long GRPO run of the tiny model while a real Chromium keeps the dashboard's Monitor open.

    make soak                                                   # 300 steps, 7 samples
    PYTHONPATH=. .venv/bin/python tests/soak.py [--steps N] [--samples K]

Starts the dashboard as a subprocess over a scratch runs directory, opens its Monitor tab in
Chromium (whose timers poll the run the whole time), starts a run through rft.jobs (what the Launch
button calls), and samples at the start and at the end (each once the Monitor shows it) and evenly
between: the trainer's step, the step the Monitor shows, the dashboard process's resident memory,
and how long the dashboard takes to answer a page request. It prints the figures and judges
nothing: a growing memory or response time is for the reader to see.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from dashboard_driver import VIEWPORT, launch_chromium, monitor_step, open_tab, running_dashboard, write_word_prompts
from tiny_model import build_tiny_model, bundled_model_dir
from waiting import wait_for

from rft import jobs
from rft.config import DataConfig, ModelConfig, RewardsConfig, RunConfig, SamplingConfig, ScheduleConfig
from rft.runs import ACTIVE_STATES, effective_state, read_status

DEFAULT_STEPS = 300
DEFAULT_SAMPLES = 7
POLL_S = 1.0
MONITOR_CATCH_UP_S = 60
REQUESTS_PER_SAMPLE = 3  # the median of a few page requests, so one slow answer does not decide the figure
HEADER = "| time (s) | step | Monitor shows | UI RSS (MB) | GET / (ms) |\n|---:|---:|---:|---:|---:|"  # Markdown


@dataclass
class Sample:
    elapsed_s: float
    step: int
    monitor_step: int | None
    ui_rss_mb: float
    response_ms: float

    def row(self) -> str:
        shown = "-" if self.monitor_step is None else str(self.monitor_step)
        return f"| {self.elapsed_s:.0f} | {self.step} | {shown} | {self.ui_rss_mb:.1f} | {self.response_ms:.1f} |"


def soak_config(model_dir: Path, dataset: Path, steps: int) -> RunConfig:
    return RunConfig(
        name="soak",
        model=ModelConfig(name_or_path=str(model_dir), device="cpu"),
        data=DataConfig(preset=None, path=str(dataset)),
        rewards=RewardsConfig(source="def brevity(prompt, completion, example):\n"
                                     "    return -len(completion) / 100\n"),
        sampling=SamplingConfig(num_generations=4, max_completion_length=16),
        schedule=ScheduleConfig(max_steps=steps),
    )


def response_ms(url: str) -> float:
    """How long the dashboard takes to answer GET / (the page a browser loads), in milliseconds."""
    timings = []
    for _ in range(REQUESTS_PER_SAMPLE):
        began = time.perf_counter()
        with urllib.request.urlopen(url, timeout=60) as answer:
            answer.read()
        timings.append(1000 * (time.perf_counter() - began))
    return statistics.median(timings)


def monitor_shows(page, step: int) -> bool:
    shown = monitor_step(page)
    return shown is not None and shown >= step


def milestones(steps: int, samples: int) -> list[int]:
    """The steps to sample at: 0 (the start), `steps` (the end) and evenly between."""
    return sorted({round(steps * i / (samples - 1)) for i in range(samples)})


def run_soak(model_dir: Path, steps: int, samples: int, workdir: Path, report=print) -> list[Sample]:
    """Runs the soak in `workdir`, passing each sample's row to `report` as it is taken."""
    import psutil
    from playwright.sync_api import sync_playwright

    runs_dir = workdir / "runs"
    runs_dir.mkdir()
    dataset = write_word_prompts(workdir / "words.jsonl")
    taken: list[Sample] = []
    with running_dashboard(runs_dir, workdir / "dashboard.log") as (url, dashboard), sync_playwright() as playwright:
        ui_process = psutil.Process(dashboard.pid)
        chromium = launch_chromium(playwright)
        page = chromium.new_page(viewport=VIEWPORT)
        page.goto(url)
        run_dir = jobs.start_job(soak_config(model_dir, dataset, steps), runs_dir)
        began = time.time()
        open_tab(page, "Monitor")
        report(HEADER)
        try:
            for target in milestones(steps, samples):
                status = read_status(run_dir)
                while int(status.get("step") or 0) < target and effective_state(status) in ACTIVE_STATES:
                    time.sleep(POLL_S)
                    status = read_status(run_dir)
                if effective_state(status) == "failed":
                    raise RuntimeError(f"the soak's run failed: {status.get('error')}")
                reached_s = time.time() - began
                if target in (0, steps):  # the start and the end are sampled once the Monitor shows them
                    wait_for(lambda: monitor_shows(page, target), MONITOR_CATCH_UP_S,
                             f"the Monitor to show step {target}")
                sample = Sample(reached_s, int(status.get("step") or 0), monitor_step(page),
                                ui_process.memory_info().rss / 2**20, response_ms(url))
                taken.append(sample)
                report(sample.row())
        finally:
            if effective_state(read_status(run_dir)) in ACTIVE_STATES:
                jobs.kill_job(run_dir)
            chromium.close()
    return taken


def summary(samples: list[Sample]) -> str:
    first, last = samples[0], samples[-1]
    rate = (last.step - first.step) / (last.elapsed_s - first.elapsed_s) if last.elapsed_s > first.elapsed_s else 0.0
    return (f"{last.step} steps in {last.elapsed_s:.0f} s ({rate:.2f} steps/s); "
            f"UI RSS {first.ui_rss_mb:.1f} -> {last.ui_rss_mb:.1f} MB; "
            f"GET / {first.response_ms:.1f} -> {last.response_ms:.1f} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="GRPO steps of the run")
    parser.add_argument("--samples", type=int, default=DEFAULT_SAMPLES,
                        help="rows of the table, start and end included")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.samples < 2:
        parser.error("--steps must be at least 1 and --samples at least 2")
    with tempfile.TemporaryDirectory(prefix="rft-soak-") as scratch:
        workdir = Path(scratch)
        model_dir = build_tiny_model(workdir / "tiny-model", bundled_model_dir())
        samples = run_soak(model_dir, args.steps, args.samples, workdir, report=lambda line: print(line, flush=True))
    print(summary(samples))
    return 0


if __name__ == "__main__":
    sys.exit(main())
