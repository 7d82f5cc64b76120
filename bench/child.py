"""What every benchmark child process shares: read the workload, run one trainer, report as JSON.

Each trainer runs in its own fresh interpreter, so its peak memory is its own: nothing the other
trainer loaded or allocated is counted.

    python -m bench.run_ours WORKLOAD_JSON RESULT_PATH
    python -m bench.run_trl  WORKLOAD_JSON RESULT_PATH

The result holds one record per step (warm-up included) with step_s, generate_s, score_s,
completion_tokens and the process's peak memory so far; the run's peak memory; and the
trainer's name and version.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import psutil  # noqa: E402
import torch  # noqa: E402  (the offline switch must be set before transformers is imported)

from bench.workload import Workload  # noqa: E402


class ChildProcessMemory:
    """The peak total resident memory of this process's child processes, sampled in a thread.

    This project's trainer scores rewards in a worker process, which belongs in its footprint.
    getrusage(RUSAGE_CHILDREN) cannot measure it: a child forked from a large parent reports
    the parent's size, kept across exec. Sampling /proc through psutil sees the worker's own pages.
    """

    INTERVAL_S = 0.2

    def __init__(self):
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> "ChildProcessMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(self.INTERVAL_S):
            total = 0
            for process in me.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    total += process.memory_info().rss
            self.peak_mb = max(self.peak_mb, total / 2**20)


def process_peak_mb() -> float:
    """This process's peak so far: resident memory on CPU, torch's allocations on a GPU."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_memory(children: ChildProcessMemory) -> dict:
    """Peak memory in MB, and what it measures: on CPU the peak RSS of this process plus the
    sampled peak of its child processes (adding two peaks can only overstate the combined peak);
    on a GPU, torch's peak allocation."""
    if torch.cuda.is_available():
        return {"peak_memory_mb": process_peak_mb(), "memory_kind": "torch.cuda.max_memory_allocated"}
    own_mb = process_peak_mb()
    return {"peak_memory_mb": own_mb + children.peak_mb, "memory_kind": "peak RSS, process + child processes",
            "peak_rss_process_mb": own_mb, "peak_rss_children_mb": children.peak_mb}


def main(run: Callable[[Workload], dict]) -> None:
    workload_json, result_path = sys.argv[1], Path(sys.argv[2])
    workload = Workload.from_dict(json.loads(workload_json))
    started = time.perf_counter()
    with ChildProcessMemory() as children:
        result = run(workload)
    result.update(
        **peak_memory(children),
        device="cuda" if torch.cuda.is_available() else "cpu",
        torch_threads=torch.get_num_threads(),
        wall_s=time.perf_counter() - started,
    )
    result_path.write_text(json.dumps(result, indent=1), encoding="utf-8")
