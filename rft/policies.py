"""Policies the dashboard runs for inference: a run's base model or one of its checkpoints.

The Compare, Play and Inspect tabs switch between policies on every click; loading one takes
seconds, so the last few loaded stay in memory (`PolicyCache`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from rft.config import BUNDLED_MODEL, ConfigError
from rft.models import load_for_inference
from rft.runs import checkpoint_path, list_checkpoints, read_config, run_dir_for, sft_adapter_path

DEFAULT_CACHE_SIZE = 3  # Inspect needs three at once: sampling, updated and reference policy


class PolicyError(ValueError):
    """A policy that cannot be used (no such run or checkpoint); the message says what to pick instead."""


@dataclass(frozen=True)
class Policy:
    model: str  # the base model reference (rft.models)
    adapter: Path | None  # a PEFT adapter directory on top of it; None for the base model
    label: str


def base_policy(run_dir: str | Path) -> Policy:
    model = read_config(run_dir).model.name_or_path
    return Policy(model, None, f"base model ({model})")


def checkpoint_policy(run_dir: str | Path, step: int) -> Policy:
    run_dir = Path(run_dir)
    folder = checkpoint_path(run_dir, step)
    if folder is None:
        available = ", ".join(map(str, list_checkpoints(run_dir))) or "none yet"
        raise PolicyError(f"run {run_dir.name} has no checkpoint at step {step} (checkpoints: {available})")
    return Policy(read_config(run_dir).model.name_or_path, folder, f"{run_dir.name} · step {step}")


def start_policy(run_dir: str | Path) -> Policy:
    """The policy a run started from, which is also its KL reference: the base model for a new
    adapter, or the adapter it continued from (an SFT warm start, or model.adapter)."""
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    warm_start = sft_adapter_path(run_dir)
    if warm_start is not None:
        return Policy(config.model.name_or_path, warm_start, f"{run_dir.name} · SFT warm start")
    if config.model.adapter:
        return Policy(config.model.name_or_path, Path(config.model.adapter), f"starting adapter {config.model.adapter}")
    return base_policy(run_dir)


# ---- the policy picker's choices -----------------------------------------------------------------

BASE_CHOICE = "base"
SFT_CHOICE = "sft"
MODEL_CHOICE = "model"  # `<model reference>@model`: a base model no run uses yet (the bundled one)


def policy_key(run_id: str, step: int | str | None) -> str:
    """The value a policy picker holds: `<run-id>@base`, `<run-id>@sft` or `<run-id>@<step>`."""
    return f"{run_id}@{BASE_CHOICE if step is None else step}"


def is_checkpoint_key(key: str) -> bool:
    """Whether a picker key names a run's trained adapter (a step or its SFT warm start), not a base model."""
    which = key.rpartition("@")[2]
    return which.isdigit() or which == SFT_CHOICE


def run_policy_keys(runs_root: str | Path, run_id: str) -> tuple[str, str]:
    """The two policies a comparison of one run starts from: where it started (its SFT warm start,
    else its base model) and where it got to (its last checkpoint, else where it started)."""
    run_dir = run_dir_for(runs_root, run_id)
    start = policy_key(run_id, SFT_CHOICE if sft_adapter_path(run_dir) is not None else None)
    steps = list_checkpoints(run_dir)
    return start, policy_key(run_id, steps[-1]) if steps else start


def policy_choices(runs_root: str | Path, run_ids: list[str]) -> list[tuple[str, str]]:
    """(label, key) for every base model (once per model), and every SFT warm start and checkpoint of the given runs."""
    bases, checkpoints, seen_models = [], [], set()
    for run_id in run_ids:
        run_dir = run_dir_for(runs_root, run_id)
        try:
            model = read_config(run_dir).model.name_or_path
        except Exception:  # a run whose config cannot be read offers nothing to load
            continue
        if model not in seen_models:
            seen_models.add(model)
            bases.append((f"base model · {model}", policy_key(run_id, None)))
        if sft_adapter_path(run_dir) is not None:
            checkpoints.append((f"{run_id} · SFT warm start", policy_key(run_id, SFT_CHOICE)))
        checkpoints += [(f"{run_id} · step {step}", policy_key(run_id, step)) for step in list_checkpoints(run_dir)]
    if BUNDLED_MODEL not in seen_models:  # playable before any run exists
        bases.append((f"base model · {BUNDLED_MODEL}", f"{BUNDLED_MODEL}@{MODEL_CHOICE}"))
    return bases + checkpoints


def trained_in_environment(runs_root: str | Path, key: str | None) -> bool:
    """Whether the policy a picker's key names comes from a run played in an environment (multi-turn),
    so that it expects whole conversations rather than the task's single prompts."""
    run_id, sep, which = (key or "").rpartition("@")
    if not sep or which == MODEL_CHOICE:
        return False
    try:
        return read_config(run_dir_for(runs_root, run_id)).environment.enabled
    except (ValueError, OSError, ConfigError):
        return False


def resolve_policy(runs_root: str | Path, key: str | None) -> Policy:
    """The policy a picker's key names; PolicyError when the run or the checkpoint is gone."""
    run_id, sep, which = (key or "").rpartition("@")
    if not sep:
        raise PolicyError("Choose a policy: a base model or a run's checkpoint.")
    if which == MODEL_CHOICE:
        return Policy(run_id, None, f"base model ({run_id})")
    try:
        run_dir = run_dir_for(runs_root, run_id)
    except ValueError as exc:
        raise PolicyError(str(exc)) from None
    if not (run_dir / "config.yaml").is_file():
        raise PolicyError(f"run {run_id} no longer exists; refresh the list of policies")
    if which == BASE_CHOICE:
        return base_policy(run_dir)
    if which == SFT_CHOICE:
        warm_start = sft_adapter_path(run_dir)
        if warm_start is None:
            raise PolicyError(f"run {run_id} has no SFT warm start")
        return Policy(read_config(run_dir).model.name_or_path, warm_start, f"{run_id} · SFT warm start")
    if not which.isdigit():
        raise PolicyError(f"{key!r} names no checkpoint")
    return checkpoint_policy(run_dir, int(which))


class PolicyCache:
    """The most recently used policies, loaded: (model, tokenizer) by policy.

    A checkpoint rewritten in place (a resumed run redoes its later steps) is loaded afresh,
    because the key includes the adapter file's modification time.
    """

    def __init__(self, capacity: int = DEFAULT_CACHE_SIZE, device: str = "auto"):
        self.capacity = capacity
        self.device = device
        self._loaded: OrderedDict[tuple, tuple] = OrderedDict()
        self._lock = threading.Lock()  # Gradio runs callbacks on several threads

    def load(self, policy: Policy):
        key = self._key(policy)
        with self._lock:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key]
            loaded = load_for_inference(policy.model, str(policy.adapter) if policy.adapter else None, self.device)
            self._loaded[key] = loaded
            while len(self._loaded) > self.capacity:
                self._loaded.popitem(last=False)
            return loaded

    def __len__(self) -> int:
        return len(self._loaded)

    @staticmethod
    def _key(policy: Policy) -> tuple:
        if policy.adapter is None:
            return policy.model, None, None
        weights = Path(policy.adapter) / "adapter_model.safetensors"
        if not weights.is_file():
            raise PolicyError(f"{policy.label}: the checkpoint's adapter is gone ({weights})")
        return policy.model, str(Path(policy.adapter).resolve()), weights.stat().st_mtime_ns
