"""What the fault tests report to `make faults` (scripts/fault_report.py prints the table).

Each fault test records, per kind of fault, how many times it was tried, how many times the system
survived it, and how much committed data was lost. Recording happens before the test asserts, so
a failure still shows in the table. Outside `make faults` ($RFT_FAULT_LOG unset) nothing is written.
"""

from __future__ import annotations

import json
import os

FAULT_LOG_VARIABLE = "RFT_FAULT_LOG"
REPEATS_VARIABLE = "RFT_FAULT_REPEATS"


def repeats() -> int:
    """How many times each fault is tried: once under `make test`, more under `make faults`."""
    return max(1, int(os.environ.get(REPEATS_VARIABLE, "1")))


def record_fault(fault: str, tried: int, survived: int, data_lost: int) -> None:
    path = os.environ.get(FAULT_LOG_VARIABLE)
    if not path:
        return
    line = json.dumps({"fault": fault, "tried": tried, "survived": survived, "data_lost": data_lost})
    with open(path, "a", encoding="utf-8") as log:
        log.write(line + "\n")
