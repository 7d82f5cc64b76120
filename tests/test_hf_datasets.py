"""Hugging Face datasets as a run's data: a save_to_disk folder, and an id in the local HF cache,
loaded offline, with its split and a differently named prompt column."""

from __future__ import annotations

import datasets as hf_datasets
import pytest

from rft import data
from rft.config import DataConfig

ROWS = [{"question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(6)]


def test_a_save_to_disk_folder_with_splits_and_a_mapped_prompt_column(tmp_path):
    folder = tmp_path / "saved"
    hf_datasets.DatasetDict({"train": hf_datasets.Dataset.from_list(ROWS),
                             "test": hf_datasets.Dataset.from_list(ROWS[:2])}).save_to_disk(str(folder))
    config = DataConfig(preset=None, path=str(folder), prompt_column="question")
    rows = data.load_rows(config)
    assert rows == ROWS and data.example_of(rows[0], config) == {"answer": "0"}
    assert data.load_rows(DataConfig(preset=None, path=str(folder), prompt_column="question", split="test")) == ROWS[:2]
    with pytest.raises(data.DatasetError, match="no split 'validation'; it has train, test"):
        data.load_rows(DataConfig(preset=None, path=str(folder), prompt_column="question", split="validation"))
    with pytest.raises(data.DatasetError, match="no 'prompt' column"):
        data.load_rows(DataConfig(preset=None, path=str(folder)))


def test_a_folder_that_is_not_a_saved_dataset_is_refused_with_the_reason(tmp_path):
    with pytest.raises(data.DatasetError, match="not one written by datasets' save_to_disk"):
        data.load_rows(DataConfig(preset=None, path=str(tmp_path)))


def test_a_dataset_id_in_the_local_hub_cache_loads_offline(tmp_path, monkeypatch):
    from huggingface_hub import constants

    # The layout `huggingface-cli download --repo-type dataset someone/sums` leaves in the hub cache.
    repo = tmp_path / "hub" / "datasets--someone--sums"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    files = repo / "snapshots" / "0123abcd" / "data"
    files.mkdir(parents=True)
    hf_datasets.Dataset.from_list(ROWS).to_json(str(files / "train.jsonl"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets-cache"))

    rows = data.load_rows(DataConfig(preset=None, path="someone/sums", prompt_column="question"))
    assert rows == ROWS
    with pytest.raises(data.DatasetError, match="not in this machine's Hugging Face cache[\\s\\S]*huggingface-cli download"):
        data.load_rows(DataConfig(preset=None, path="someone/not-downloaded", prompt_column="question"))
