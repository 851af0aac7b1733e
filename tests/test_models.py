"""Model-path checks happen before any work and name the key."""

from __future__ import annotations

import pytest
import torch

from gspo.model.loading import ModelLoadError, check_model_path, load_causal_lm, load_tokenizer, resolve_device


def test_missing_model_path(tmp_path):
    with pytest.raises(ModelLoadError, match="actor_rollout_ref.model.path: .* does not exist"):
        check_model_path(str(tmp_path / "nope"))


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelLoadError, match="has no config.json"):
        check_model_path(str(tmp_path))


def test_not_a_causal_lm(tmp_path):
    from transformers import CLIPVisionConfig

    CLIPVisionConfig(hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2).save_pretrained(
        tmp_path
    )
    with pytest.raises(ModelLoadError, match="which is not a causal LM"):
        check_model_path(str(tmp_path))


def test_unreadable_config(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="cannot read"):
        check_model_path(str(tmp_path))


def test_loads_local_checkpoint_in_fp32(tiny_model_dir):
    model = load_causal_lm(str(tiny_model_dir), torch.device("cpu"))
    assert next(model.parameters()).dtype == torch.float32
    assert load_tokenizer(str(tiny_model_dir)).pad_token_id is not None


def test_cuda_requested_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a machine without CUDA, on every machine
    with pytest.raises(ValueError, match="trainer.device"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


def test_cuda_is_used_where_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a machine with CUDA, on every machine
    assert resolve_device("auto") == torch.device("cuda") == resolve_device("cuda")
