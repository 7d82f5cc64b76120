"""Reward code that changes while a run trains: every version, and the step it took effect.

A user who sees reward hacking in Rollouts fixes the reward without losing the run: the dashboard
leaves the edited code in the run directory (`request_change`), and the trainer takes it at the next
step boundary, or refuses it and keeps the version in force. The run directory keeps

    rewards/v1.py, v2.py, ...   the source of every version that took effect
    rewards/versions.jsonl      one line per version: its number, weights and first step
    rewards/request.json        an edit waiting for the trainer (gone once taken)
    rewards/outcome.json        what became of the latest edit: applied (as version N) or refused (why)

so that a resume scores with the version in force at its checkpoint, and every chart and rollout
can say which version scored a step.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

REWARDS_DIR = "rewards"
VERSIONS_FILE = "versions.jsonl"
REQUEST_FILE = "request.json"
OUTCOME_FILE = "outcome.json"


@dataclass(frozen=True)
class RewardVersion:
    number: int
    from_step: int  # the first step this version scored
    source: str
    weights: dict[str, float]


def request_change(run_dir: str | Path, source: str, weights: dict[str, float]) -> None:
    """Leave an edit for the running trainer (it replaces an edit not yet taken)."""
    _write_json(_folder(run_dir) / REQUEST_FILE, {"source": source, "weights": weights, "requested_at": time.time()})


def take_request(run_dir: str | Path) -> dict | None:
    """The waiting edit, removed from the run directory; None when there is none."""
    path = _folder(run_dir) / REQUEST_FILE
    try:
        request = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    path.unlink(missing_ok=True)
    return request


def request_waiting(run_dir: str | Path) -> bool:
    return (_folder(run_dir) / REQUEST_FILE).exists()


def versions(run_dir: str | Path) -> list[RewardVersion]:
    """Every version that took effect, oldest first."""
    path = _folder(run_dir) / VERSIONS_FILE
    if not path.exists():
        return []
    found = []
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        source = (_folder(run_dir) / f"v{record['version']}.py").read_text(encoding="utf-8")
        found.append(RewardVersion(record["version"], record["from_step"], source, record["weights"]))
    return found


def version_in_force(run_dir: str | Path, step: int) -> RewardVersion | None:
    """The version that scored `step` (the last one whose first step is not after it)."""
    earlier = [v for v in versions(run_dir) if v.from_step <= max(step, 1)]
    return earlier[-1] if earlier else None


def record_version(run_dir: str | Path, source: str, weights: dict[str, float], from_step: int) -> RewardVersion:
    """Keep a version that takes effect at `from_step`; numbered after every version kept so far."""
    existing = versions(run_dir)
    version = RewardVersion(existing[-1].number + 1 if existing else 1, from_step, source, dict(weights))
    folder = _folder(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"v{version.number}.py").write_text(source, encoding="utf-8")
    with open(folder / VERSIONS_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps({"version": version.number, "from_step": from_step, "weights": version.weights}) + "\n")
    return version


def record_outcome(run_dir: str | Path, request: dict, applied: RewardVersion | None, message: str) -> None:
    """What became of an edit: applied as a version, or refused with the reason."""
    _write_json(_folder(run_dir) / OUTCOME_FILE, {
        "requested_at": request.get("requested_at"), "state": "applied" if applied else "refused",
        "version": applied.number if applied else None, "from_step": applied.from_step if applied else None,
        "message": message,
    })


def last_outcome(run_dir: str | Path) -> dict | None:
    try:
        return json.loads((_folder(run_dir) / OUTCOME_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def truncate_after(run_dir: str | Path, step: int) -> None:
    """Before resuming from checkpoint `step` (0: a fresh start): forget the versions that took effect
    after it, as the steps they scored are trained again."""
    every = versions(run_dir)
    kept = [v for v in every if v.from_step <= step]
    folder = _folder(run_dir)
    for dropped in every[len(kept):]:
        (folder / f"v{dropped.number}.py").unlink(missing_ok=True)
    if (folder / VERSIONS_FILE).exists():
        lines = [json.dumps({"version": v.number, "from_step": v.from_step, "weights": v.weights}) + "\n" for v in kept]
        tmp = folder / f".{VERSIONS_FILE}.tmp"
        tmp.write_text("".join(lines), encoding="utf-8")
        os.replace(tmp, folder / VERSIONS_FILE)


def _folder(run_dir: str | Path) -> Path:
    return Path(run_dir) / REWARDS_DIR


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)
