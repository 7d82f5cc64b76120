"""`make faults`: run the fault suite with repetitions and print what it survived.

    python scripts/fault_report.py [--repeats N] [pytest arguments...]

Runs tests/test_faults_*.py with RFT_FAULT_REPEATS=N (the SIGKILL schedule is repeated N times on
a longer run) and RFT_FAULT_LOG pointing at a scratch file the tests append their outcomes to,
then prints one Markdown table row per kind of fault: times tried, times survived, data lost.
Exits non-zero when a test failed, a fault was not survived, or any data was lost.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REPEATS = 3


def run_suite(repeats: int, pytest_args: list[str], log_path: Path) -> int:
    env = dict(os.environ, RFT_FAULT_LOG=str(log_path), RFT_FAULT_REPEATS=str(repeats))
    command = [sys.executable, "-m", "pytest", "-q", *sorted(str(p) for p in (PROJECT_ROOT / "tests").glob("test_faults_*.py"))]
    return subprocess.run(command + pytest_args, cwd=PROJECT_ROOT, env=env).returncode


def summarise(log_path: Path) -> dict[str, dict[str, int]]:
    """Outcomes per fault, summed over every record (a fault may be recorded by several tests)."""
    totals: dict[str, dict[str, int]] = defaultdict(lambda: {"tried": 0, "survived": 0, "data_lost": 0})
    if log_path.exists():
        for line in log_path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            for key in ("tried", "survived", "data_lost"):
                totals[record["fault"]][key] += record[key]
    return dict(totals)


def markdown_table(totals: dict[str, dict[str, int]]) -> str:
    lines = ["| fault | times tried | survived | data lost |", "|---|---:|---:|---:|"]
    for fault, counts in totals.items():
        lines.append(f"| {fault} | {counts['tried']} | {counts['survived']} | {counts['data_lost']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, help="SIGKILL schedule repetitions")
    args, pytest_args = parser.parse_known_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        log_path = Path(scratch) / "faults.jsonl"
        exit_code = run_suite(args.repeats, pytest_args, log_path)
        totals = summarise(log_path)
    print()
    print(markdown_table(totals))
    all_survived = all(c["survived"] == c["tried"] for c in totals.values())
    nothing_lost = all(c["data_lost"] == 0 for c in totals.values())
    print(f"\n{sum(c['tried'] for c in totals.values())} faults tried; "
          f"{'all survived' if all_survived else 'NOT ALL SURVIVED'}; "
          f"{'no data lost' if nothing_lost else 'DATA LOST'}.")
    return exit_code or int(not (totals and all_survived and nothing_lost))


if __name__ == "__main__":
    sys.exit(main())
