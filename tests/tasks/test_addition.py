"""Tests for the embedded addition task and its shipped warm-start checkpoint."""

from __future__ import annotations

import json

import pytest
import torch

from gspo.tasks.addition import (
    ADDITION_ASSET_DIR,
    DEFAULT_NUM_DIGITS,
    DEFAULT_NUM_TRAIN,
    DEFAULT_NUM_VAL,
    build_addition_model_config,
    build_addition_tokenizer,
    load_addition_rows,
    make_addition_rows,
    make_addition_splits,
    max_response_tokens,
)

PROMPTS = ["37+48=", "0+0=", "999+1=", "5+123=", "85"]


@pytest.fixture(scope="module")
def tok():
    return build_addition_tokenizer()


@pytest.fixture(scope="module")
def shipped():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(ADDITION_ASSET_DIR, dtype=torch.float32)
    model.eval()
    return model, AutoTokenizer.from_pretrained(ADDITION_ASSET_DIR)


def _check_tokenizer(t):
    assert t.pad_token_id == 0
    assert t.eos_token_id is not None and t.eos_token_id != t.pad_token_id
    assert t.convert_ids_to_tokens([t.pad_token_id, t.eos_token_id]) == ["<pad>", "<eos>"]
    assert t.model_max_length >= 16
    assert getattr(t, "chat_template", None) is None
    ids_per_char = {ch: t.convert_tokens_to_ids(ch) for ch in "0123456789+="}
    assert len(set(ids_per_char.values())) == 12
    assert t.unk_token_id not in ids_per_char.values()
    for text in PROMPTS:
        ids = t(text).input_ids
        assert ids == [ids_per_char[c] for c in text]  # one id per character, no BOS/EOS
        assert t(text, add_special_tokens=True).input_ids == ids
        assert t.decode(ids) == text
        assert t.decode(ids + [t.eos_token_id, t.pad_token_id], skip_special_tokens=True) == text


def test_tokenizer(tok):
    _check_tokenizer(tok)
    assert tok.padding_side == "left"
    batch = tok(["1+2=", "37+148="], padding=True)
    assert batch.input_ids[0][:3] == [tok.pad_token_id] * 3
    assert batch.attention_mask[0] == [0, 0, 0, 1, 1, 1, 1]


def test_model_config(tok):
    cfg = build_addition_model_config(len(tok), pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    assert cfg.model_type == "qwen2"
    assert cfg.vocab_size == len(tok)
    assert cfg.tie_word_embeddings
    assert (cfg.pad_token_id, cfg.eos_token_id) == (tok.pad_token_id, tok.eos_token_id)
    assert cfg.hidden_size % cfg.num_attention_heads == 0
    assert cfg.num_attention_heads % cfg.num_key_value_heads == 0
    assert cfg.max_position_embeddings >= 16


def _check_rows(rows, num_digits):
    for r in rows:
        assert set(r) == {"prompt", "ground_truth", "data_source"}
        assert r["data_source"] == "addition"
        assert r["prompt"].endswith("=")
        a, b = r["prompt"][:-1].split("+")
        assert a == str(int(a)) and b == str(int(b))  # no zero padding
        assert 0 <= int(a) < 10**num_digits and 0 <= int(b) < 10**num_digits
        assert r["ground_truth"] == str(int(a) + int(b))
        assert len(r["ground_truth"]) + 1 <= max_response_tokens(num_digits)


@pytest.mark.parametrize("num_digits", [2, 3])
def test_splits_disjoint_deterministic_correct(num_digits):
    train, val = make_addition_splits(seed=3, num_digits=num_digits, num_val=256, num_train=2000)
    assert (train, val) == make_addition_splits(seed=3, num_digits=num_digits, num_val=256, num_train=2000)
    assert len(val) == 256 and len(train) == 2000
    train_p, val_p = [r["prompt"] for r in train], [r["prompt"] for r in val]
    assert len(set(train_p)) == len(train_p) and len(set(val_p)) == len(val_p)
    assert not set(train_p) & set(val_p)
    _check_rows(train, num_digits)
    _check_rows(val, num_digits)
    other_train, other_val = make_addition_splits(seed=4, num_digits=num_digits, num_val=256, num_train=2000)
    assert other_val != val and other_train != train


def test_make_rows_exclude_and_small_space():
    rows = make_addition_rows(1000, seed=0, num_digits=1, exclude=["1+2="])
    assert len(rows) == 99  # 10 * 10 prompts minus the excluded one
    assert "1+2=" not in {r["prompt"] for r in rows}
    _check_rows(rows, 1)


def test_shipped_data_files():
    train = load_addition_rows("train")
    val = load_addition_rows("val")
    assert len(val) == DEFAULT_NUM_VAL and len(train) == DEFAULT_NUM_TRAIN
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in val}
    _check_rows(train, DEFAULT_NUM_DIGITS)
    _check_rows(val, DEFAULT_NUM_DIGITS)
    # The shipped files are exactly what the code generates for the default seed.
    code_train, code_val = make_addition_splits()
    assert val == code_val and train == code_train
    total = sum(p.stat().st_size for p in ADDITION_ASSET_DIR.iterdir() if p.is_file())
    assert total < 3_000_000
    assert (ADDITION_ASSET_DIR / "README.md").is_file()


def test_shipped_checkpoint_loads_and_generates(shipped):
    model, t = shipped
    _check_tokenizer(t)
    assert model.config.model_type == "qwen2"
    assert model.config.vocab_size == len(t)
    assert model.config.eos_token_id == t.eos_token_id and model.config.pad_token_id == t.pad_token_id
    gen_cfg = json.loads((ADDITION_ASSET_DIR / "generation_config.json").read_text())
    assert gen_cfg["eos_token_id"] == t.eos_token_id
    torch.manual_seed(0)
    enc = t(["37+48=", "5+123="], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(
            enc.input_ids,
            attention_mask=enc.attention_mask,
            max_new_tokens=max_response_tokens(),
            do_sample=False,
            pad_token_id=t.pad_token_id,
            eos_token_id=t.eos_token_id,
        )
    for resp in out[:, enc.input_ids.shape[1] :].tolist():
        text = t.decode(resp, skip_special_tokens=True)
        assert text and text.isdigit()


def test_shipped_checkpoint_is_partly_right(shipped):
    """The warm start must leave room for RL: greedy val accuracy in [0.2, 0.5]."""
    model, t = shipped
    val = load_addition_rows("val")
    enc = t([r["prompt"] for r in val], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(
            enc.input_ids,
            attention_mask=enc.attention_mask,
            max_new_tokens=max_response_tokens(),
            do_sample=False,
            pad_token_id=t.pad_token_id,
            eos_token_id=t.eos_token_id,
        )
    correct = 0
    for r, resp in zip(val, out[:, enc.input_ids.shape[1] :].tolist()):
        if t.eos_token_id in resp:
            text = t.decode(resp[: resp.index(t.eos_token_id)], skip_special_tokens=True)
            correct += int(text == r["ground_truth"])
    acc = correct / len(val)
    assert 0.2 <= acc <= 0.5, acc
