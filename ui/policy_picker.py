"""Picking a policy (a base model or a run's checkpoint), shared by the Compare, Play and Inspect tabs.

One cache of loaded models serves every tab, so a policy loaded in one tab is ready in the others.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from rft.models import ModelLoadError
from rft.policies import PolicyCache, PolicyError, is_checkpoint_key, policy_choices
from ui.common import run_ids

LOADED_POLICIES = PolicyCache()
# What loading or running a policy can raise, shown to the person as a message instead of a crash.
POLICY_FAILURES = (PolicyError, ModelLoadError, OSError, RuntimeError, ValueError)


def policy_picker_update(runs_root: Path, selected: str | None, prefer_checkpoint: bool = True) -> dict:
    """Fresh choices: every base model and checkpoint; keeps `selected` when it still exists, else
    the newest run's latest checkpoint (or the first base model)."""
    choices = policy_choices(runs_root, run_ids(runs_root))
    keys = [key for _, key in choices]
    if selected in keys:
        return gr.update(choices=choices, value=selected)
    checkpoints = [key for key in keys if is_checkpoint_key(key)]
    if prefer_checkpoint and checkpoints:
        newest_run = checkpoints[0].rpartition("@")[0]  # runs are listed newest first
        fallback = [key for key in checkpoints if key.rpartition("@")[0] == newest_run][-1]
    else:
        fallback = keys[0] if keys else None
    return gr.update(choices=choices, value=fallback)
