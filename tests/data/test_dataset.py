from __future__ import annotations

import json
import logging

import pytest

from gspo.data import DataError, PromptDataset, PromptItem


def build(rows, tokenizer, **kw):
    kw.setdefault("max_prompt_length", 32)
    return PromptDataset(rows, tokenizer, **kw)


def test_plain_text_prompt_uses_default_special_tokens(plain_tokenizer):
    ds = build([{"prompt": "what is 1 + 2 ?", "ground_truth": "3", "data_source": "addition"}], plain_tokenizer)
    assert not ds.uses_chat_template
    (item,) = ds
    expected_ids = plain_tokenizer("what is 1 + 2 ?")["input_ids"]
    assert expected_ids[0] == plain_tokenizer.bos_token_id
    assert item == PromptItem(
        index=0,
        prompt_ids=expected_ids,
        prompt_text="what is 1 + 2 ?",
        ground_truth="3",
        data_source="addition",
        extra_info={"row_index": 0},
    )


def test_chat_messages_with_template(chat_tokenizer):
    messages = [{"role": "system", "content": "you are helpful"}, {"role": "user", "content": "hello world"}]
    ds = build([{"prompt": messages}], chat_tokenizer)
    item = ds[0]
    assert ds.uses_chat_template
    assert item.prompt_text == "<s><|system|> you are helpful <|user|> hello world <|assistant|>"
    # The template carries <s>; encoding must not add a second one.
    assert item.prompt_ids == chat_tokenizer(item.prompt_text, add_special_tokens=False)["input_ids"]
    assert item.prompt_ids.count(chat_tokenizer.bos_token_id) == 1
    assert chat_tokenizer.convert_ids_to_tokens(item.prompt_ids)[-1] == "<|assistant|>"


def test_always_wraps_plain_text_as_user_message(chat_tokenizer):
    item = build([{"prompt": "hello"}], chat_tokenizer, apply_chat_template="always")[0]
    assert item.prompt_text == "<s><|user|> hello <|assistant|>"


def test_never_joins_message_contents(chat_tokenizer):
    messages = [{"role": "system", "content": "you are helpful"}, {"role": "user", "content": "hello"}]
    item = build([{"prompt": messages}], chat_tokenizer, apply_chat_template="never")[0]
    assert item.prompt_text == "you are helpful\nhello"
    assert item.prompt_ids == chat_tokenizer("you are helpful\nhello")["input_ids"]


def test_auto_without_template_is_plain_text(plain_tokenizer):
    ds = build([{"prompt": [{"role": "user", "content": "hello"}]}], plain_tokenizer, apply_chat_template="auto")
    assert ds[0].prompt_text == "hello"


def test_always_without_template_errors(plain_tokenizer):
    with pytest.raises(DataError, match="no chat_template"):
        build([{"prompt": "hello"}], plain_tokenizer, apply_chat_template="always")


def test_invalid_chat_mode(plain_tokenizer):
    with pytest.raises(ValueError, match="apply_chat_template must be one of"):
        build([{"prompt": "hello"}], plain_tokenizer, apply_chat_template="yes")


def test_custom_prompt_key(plain_tokenizer):
    assert build([{"question": "hello"}], plain_tokenizer, prompt_key="question")[0].prompt_text == "hello"


def test_missing_prompt_key_names_file_line_and_keys(tmp_path, plain_tokenizer):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"prompt": "a"}) + "\n" + json.dumps({"text": "b", "label": "c"}) + "\n")
    with pytest.raises(
        DataError, match=r"train\.jsonl:2: row has no prompt under key 'prompt'; row keys: \['label', 'text'\]; set "
                         r"the prompt column with data.prompt_key=<one of them>"
    ):
        PromptDataset.from_files(str(path), plain_tokenizer, max_prompt_length=8)


def test_raw_gsm8k_rows_point_at_the_prepare_command(tmp_path, plain_tokenizer):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"question": "What is 2 plus 3?", "answer": "2 + 3 = 5\n#### 5"}) + "\n")
    with pytest.raises(DataError, match=r"train\.jsonl:1: .*original GSM8K JSONL; prepare it with `gspo data gsm8k"):
        PromptDataset.from_files(str(path), plain_tokenizer, max_prompt_length=8)


def test_missing_prompt_without_sources_names_row(plain_tokenizer):
    with pytest.raises(DataError, match=r"row 1: row has no prompt"):
        build([{"prompt": "a"}, {"x": 1}], plain_tokenizer)


@pytest.mark.parametrize(
    ("prompt", "match"),
    [
        ([], "non-empty list of chat messages"),
        (42, "non-empty list of chat messages, got int"),
        ([{"role": "user"}], "message 0 must be an object with string 'role' and 'content'"),
        (["hello"], "message 0 must be"),
    ],
)
def test_malformed_prompts(plain_tokenizer, prompt, match):
    with pytest.raises(DataError, match=match):
        build([{"prompt": prompt}], plain_tokenizer)


def test_overlong_prompt_raises_with_file_line_length_and_limit(tmp_path, plain_tokenizer):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"prompt": "a"}) + "\n" + json.dumps({"prompt": "a b c d e"}) + "\n")
    # Plain text gets <s> prepended: "a b c d e" is 6 tokens.
    with pytest.raises(DataError, match=r"train\.jsonl:2: prompt is 6 tokens, longer than max_prompt_length=5"):
        PromptDataset.from_files(str(path), plain_tokenizer, max_prompt_length=5)


def test_overlong_filter_drops_and_warns(plain_tokenizer, caplog):
    rows = [{"prompt": "a b c d e"}, {"prompt": "a"}, {"prompt": "a b c d"}, {"prompt": "a b c d e f"}]
    with caplog.at_level(logging.WARNING, logger="gspo.data.dataset"):
        ds = build(rows, plain_tokenizer, max_prompt_length=5, filter_overlong_prompts=True)
    assert ds.num_dropped == 2
    assert [it.prompt_text for it in ds] == ["a", "a b c d"]  # exactly at the limit is kept
    assert [it.index for it in ds] == [0, 1]
    assert [it.extra_info["row_index"] for it in ds] == [1, 2]
    assert "dropped 2 of 4 prompts" in caplog.text


def test_all_dropped_errors(plain_tokenizer):
    with pytest.raises(DataError, match="all 2 prompts are longer than max_prompt_length=2"):
        build(
            [{"prompt": "a b c"}, {"prompt": "a b c d"}],
            plain_tokenizer,
            max_prompt_length=2,
            filter_overlong_prompts=True,
        )


def test_no_rows(plain_tokenizer):
    with pytest.raises(DataError, match="no rows"):
        build([], plain_tokenizer)


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"ground_truth": "72"}, "72"),
        ({"reward_model": {"ground_truth": "72", "style": "rule"}}, "72"),
        ({"ground_truth": "1", "reward_model": {"ground_truth": "2"}}, "1"),
        ({"ground_truth": 72}, "72"),
        ({"ground_truth": 72.0}, "72"),
        ({"ground_truth": 2.5}, "2.5"),
        ({"reward_model": {"style": "rule"}}, None),
        ({}, None),
    ],
)
def test_ground_truth(plain_tokenizer, row, expected):
    assert build([{"prompt": "a", **row}], plain_tokenizer)[0].ground_truth == expected


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ({"ground_truth": [1, 2]}, "ground_truth must be a string or a number, got list"),
        ({"ground_truth": True}, "ground_truth must be a string or a number, got bool"),
        ({"reward_model": "72"}, "'reward_model' must be an object"),
        ({"extra_info": [1]}, "'extra_info' must be an object"),
    ],
)
def test_bad_fields(plain_tokenizer, row, match):
    with pytest.raises(DataError, match=match):
        build([{"prompt": "a", **row}], plain_tokenizer)


def test_data_source_and_extra_info(plain_tokenizer):
    extra = {"split": "train", "index": 17}
    rows = [{"prompt": "a", "data_source": "openai/gsm8k", "extra_info": extra}, {"prompt": "b", "extra_info": None}]
    ds = build(rows, plain_tokenizer)
    assert ds[0].data_source == "openai/gsm8k"
    assert ds[0].extra_info == {"split": "train", "index": 17, "row_index": 0}
    assert extra == {"split": "train", "index": 17}  # the row is not mutated
    assert ds[1].data_source == "unknown"
    assert ds[1].extra_info == {"row_index": 1}


def test_from_files_parquet_verl_layout(tmp_path, chat_tokenizer):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {
            "data_source": "openai/gsm8k",
            "prompt": [{"role": "user", "content": "what is 1 + 2 ?"}],
            "reward_model": {"ground_truth": "3", "style": "rule"},
            "extra_info": {"split": "train", "index": 0},
        }
    ]
    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    (item,) = PromptDataset.from_files([str(path)], chat_tokenizer, max_prompt_length=16)
    assert item.prompt_text == "<s><|user|> what is 1 + 2 ? <|assistant|>"
    assert item.ground_truth == "3"
    assert item.data_source == "openai/gsm8k"
    assert item.extra_info == {"split": "train", "index": 0, "row_index": 0}


def test_invalid_max_prompt_length(plain_tokenizer):
    with pytest.raises(ValueError, match="max_prompt_length must be a positive int"):
        build([{"prompt": "a"}], plain_tokenizer, max_prompt_length=0)
