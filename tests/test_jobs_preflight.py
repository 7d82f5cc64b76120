"""Launch-time checks that would otherwise fail minutes into a run."""

import json

import pytest

from rft import jobs
from rft.config import DataConfig
from rft.presets import preset_config
from rft.train_form import has_demonstrations


def test_sft_on_a_file_without_demonstrations_is_refused_at_launch(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps({"prompt": "Add 2 and 2."}) + "\n")
    config = preset_config("wordle")
    config.data = DataConfig(preset=None, path=str(path))
    assert config.sft.enabled
    problems = jobs.preflight(config)
    assert any("completion" in p and "turn SFT off" in p for p in problems), problems

    config.sft.enabled = False
    assert not [p for p in jobs.preflight(config) if "sft" in p]


def test_demonstrations_come_from_a_preset_or_a_completion_column(tmp_path):
    assert has_demonstrations(DataConfig(preset="wordle"), [])
    assert not has_demonstrations(DataConfig(preset=None, path="x.jsonl"), [{"prompt": "p"}])
    assert has_demonstrations(DataConfig(preset=None, path="x.jsonl"), [{"prompt": "p", "completion": "c"}])


def fake_hf_cache(root, repo_id: str):
    """A local HF cache holding `repo_id`'s config.json, laid out as huggingface_hub writes it."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "config.json").write_text("{}")


def test_a_hub_repo_that_is_not_in_the_local_cache_is_refused_at_launch(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from rft import models

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    fake_hf_cache(tmp_path, "someone/cached-model")
    config = preset_config("wordle")
    config.model.name_or_path = "someone/not-downloaded"
    problems = [p for p in jobs.preflight(config) if p.startswith("model.name_or_path")]
    assert len(problems) == 1 and "not in the local HF cache" in problems[0], problems
    assert "hf download someone/not-downloaded" in problems[0] and "local model directory" in problems[0]
    with pytest.raises(models.ModelLoadError, match="not in the local HF cache"):
        models.resolve_model_dir("someone/not-downloaded")

    config.model.name_or_path = "someone/cached-model"
    assert not [p for p in jobs.preflight(config) if p.startswith("model.name_or_path")]
    assert models.resolve_model_dir("someone/cached-model") == "someone/cached-model"
