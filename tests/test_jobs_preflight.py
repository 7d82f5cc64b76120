"""Launch-time checks that would otherwise fail minutes into a run."""

import json

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
