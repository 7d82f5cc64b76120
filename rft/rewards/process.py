"""The trainer's handle on one reward worker: start it, call it with a deadline, kill it.

The worker is a fresh interpreter running `rft.rewards.worker.main` (the equivalent of
multiprocessing's "spawn"). It is started with subprocess rather than multiprocessing because
spawn re-imports the parent's __main__ script in the child: from the dashboard that would mean
importing gradio and torch (seconds) for every worker start, and crashing outright when a script
lacks the `if __name__ == "__main__"` guard. Messages still travel over a multiprocessing Pipe.

A call that misses its deadline, or a worker that dies (os._exit, a segfault, the kernel's OOM
killer), raises WorkerLost after the process has been killed and reaped; the caller scores the
call as missing and starts a fresh worker for the next one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from multiprocessing.connection import Pipe
from pathlib import Path

from rft.rewards.analysis import RewardCodeError
from rft.rewards.worker import CallOutcome, CallRequest, EpisodeOutcome, EpisodeRequest

STARTUP_TIMEOUT_S = 60.0  # a fresh interpreter on a slow, busy laptop
CLOSE_TIMEOUT_S = 2.0
DEFAULT_MEMORY_LIMIT_MB = 4096
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the directory that holds rft/
WORKER_ENTRY = "from rft.rewards.worker import main; main()"


class WorkerLost(RuntimeError):
    """The worker timed out or died; it has been killed, and the message says what happened."""


class WorkerProcess:
    """A worker process that has run the reward code and is ready for calls."""

    def __init__(self, source: str, load_timeout_s: float, memory_limit_mb: int | None = DEFAULT_MEMORY_LIMIT_MB):
        self._connection, worker_end = Pipe()
        self._process = subprocess.Popen(
            [sys.executable, "-c", WORKER_ENTRY, str(worker_end.fileno())],
            pass_fds=[worker_end.fileno()],
            stdin=subprocess.DEVNULL,
            env=_worker_environment(),
        )
        worker_end.close()
        self._receive(STARTUP_TIMEOUT_S, "starting")
        memory_limit_bytes = memory_limit_mb * 1024 * 1024 if memory_limit_mb is not None else None
        self._send((source, memory_limit_bytes), "running the code")
        try:
            reply = self._receive(load_timeout_s, "running the code")
        except WorkerLost as lost:
            raise RewardCodeError(str(lost)) from None
        if reply[0] == "load_failed":
            self.kill()
            raise RewardCodeError(reply[1])

    @property
    def pid(self) -> int:
        return self._process.pid

    def call(self, request: CallRequest | EpisodeRequest, timeout_s: float) -> CallOutcome | EpisodeOutcome:
        activity = f"running {request.function_name}" if isinstance(request, CallRequest) \
            else f"the environment's {request.action} of episode {request.episode}"
        self._send(request, activity)
        return self._receive(timeout_s, activity)

    def close(self) -> None:
        """Hang up: the worker sees the end of the pipe and exits; kill it if it does not."""
        self._connection.close()
        try:
            self._process.wait(CLOSE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        self._process.kill()
        self._process.wait()
        self._connection.close()

    def _send(self, message, activity: str) -> None:
        try:
            self._connection.send(message)
        except OSError:
            self.kill()
            raise WorkerLost(f"the worker process died before {activity} ({self._exit_description()})") from None

    def _receive(self, timeout_s: float, activity: str):
        if not self._connection.poll(timeout_s):
            self.kill()
            raise WorkerLost(f"{activity} timed out after {timeout_s:g} s")
        try:
            return self._connection.recv()
        except (EOFError, OSError):
            self.kill()
            raise WorkerLost(f"the worker process died while {activity} ({self._exit_description()})") from None

    def _exit_description(self) -> str:
        code = self._process.returncode
        if code is not None and code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exit code {code}"


def _worker_environment() -> dict[str, str]:
    """The trainer's environment, with this package importable wherever the trainer was started."""
    environment = dict(os.environ)
    paths = [str(PACKAGE_ROOT), environment.get("PYTHONPATH", "")]
    environment["PYTHONPATH"] = os.pathsep.join(path for path in paths if path)
    return environment
