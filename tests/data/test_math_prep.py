"""`gspo data math`: MATH / MATH-500 / DAPO-Math-17k as published -> prompt Parquet the math reward scores."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gspo.cli import main
from gspo.data import DataError, PromptDataset
from gspo.data.math import DAPO_PREFIX, DAPO_SUFFIX, INSTRUCTION, prepare_math
from gspo.rewards import RewardManager

MATH_ROWS = [  # lighteval/MATH layout
    {"problem": "Compute $\\frac{1}{2}+\\frac{1}{4}$.", "level": "Level 1", "type": "Prealgebra",
     "solution": "We get $\\frac{2}{4}+\\frac{1}{4}=\\boxed{\\frac{3}{4}}$."},
    {"problem": "Solve $x^2=4$ for $x>0$.", "level": "Level 2", "type": "Algebra",
     "solution": "First $\\boxed{\\pm 2}$ are roots; the positive one is $\\boxed{2}$."},
]
MATH500_ROWS = [{"problem": "Find the interval.", "solution": "... $\\boxed{[1,2)}$", "answer": "[1,2)",
                 "subject": "Intermediate Algebra", "level": 3, "unique_id": "test/intermediate_algebra/1.json"}]
DAPO_ROW = {"data_source": "math_dapo", "ability": "MATH",
            "prompt": [{"role": "user", "content": DAPO_PREFIX + "What is 6 times 7?" + DAPO_SUFFIX}],
            "reward_model": {"ground_truth": "42", "style": "rule-lighteval/MATH_v2"},
            "extra_info": {"index": "a0b1c2"}}


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_math_rows_take_the_last_box_of_the_solution(tmp_path):
    done = prepare_math(write_jsonl(tmp_path / "train.jsonl", MATH_ROWS), "math", tmp_path / "out")
    assert done == {"path": str(tmp_path / "out" / "train.parquet"), "rows": 2, "duplicates_dropped": 0}
    rows = pq.read_table(tmp_path / "out" / "train.parquet").to_pylist()
    assert rows[0] == {
        "prompt": [{"role": "user", "content": MATH_ROWS[0]["problem"] + INSTRUCTION}],
        "ground_truth": "\\frac{3}{4}", "data_source": "DigitalLearningGmbH/MATH-lighteval", "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": "\\frac{3}{4}"},
        "extra_info": {"split": "train", "index": 0, "level": "Level 1", "type": "Prealgebra"}}
    assert rows[1]["ground_truth"] == "2"
    assert INSTRUCTION == " Let's think step by step and output the final answer within \\boxed{}."


def test_math500_jsonl_and_math_parquet(tmp_path):
    done = prepare_math(write_jsonl(tmp_path / "test.jsonl", MATH500_ROWS), "math500", tmp_path / "out")
    row = pq.read_table(done["path"]).to_pylist()[0]
    assert done["path"].endswith("test.parquet") and row["data_source"] == "HuggingFaceH4/MATH-500"
    assert row["ground_truth"] == "[1,2)" and row["extra_info"]["unique_id"] == "test/intermediate_algebra/1.json"
    pq.write_table(pa.Table.from_pylist(MATH_ROWS), tmp_path / "train-00000-of-00001.parquet")
    done = prepare_math(tmp_path / "train-00000-of-00001.parquet", "math", tmp_path / "out", split="test")
    assert done["path"].endswith("test.parquet") and done["rows"] == 2


def test_dapo_parquet_drops_repeats_and_unwraps_the_prompt(tmp_path):
    other = {**DAPO_ROW, "prompt": [{"role": "user", "content": DAPO_PREFIX + "What is 1+2?" + DAPO_SUFFIX}],
             "reward_model": {"ground_truth": "3", "style": "rule-lighteval/MATH_v2"}}
    pq.write_table(pa.Table.from_pylist([DAPO_ROW, DAPO_ROW, other, DAPO_ROW]), tmp_path / "dapo-math-17k.parquet")
    done = prepare_math(tmp_path / "dapo-math-17k.parquet", "dapo17k", tmp_path / "out")
    assert (done["rows"], done["duplicates_dropped"]) == (2, 2)
    rows = pq.read_table(done["path"]).to_pylist()
    assert rows[0]["prompt"][0]["content"] == "What is 6 times 7?" + INSTRUCTION
    assert [r["ground_truth"] for r in rows] == ["42", "3"] and {r["data_source"] for r in rows} == {"math_dapo"}
    assert [r["extra_info"]["index"] for r in rows] == [0, 1]
    done = prepare_math(tmp_path / "dapo-math-17k.parquet", "dapo17k", tmp_path / "dapo", instruction="dapo")
    assert pq.read_table(done["path"]).to_pylist()[0]["prompt"] == DAPO_ROW["prompt"]


def test_prepared_rows_feed_the_dataset_and_the_math_reward(tmp_path, tiny_model_dir):
    from gspo.model.loading import load_tokenizer

    done = prepare_math(write_jsonl(tmp_path / "train.jsonl", MATH_ROWS), "math", tmp_path / "out")
    data = PromptDataset.from_files([done["path"]], load_tokenizer(str(tiny_model_dir)), max_prompt_length=512)
    scored = RewardManager().score(["so \\boxed{0.75}", "Answer: 3"], None, [d.ground_truth for d in data],
                                   [d.data_source for d in data], [d.extra_info for d in data])
    assert scored.acc.tolist() == [1.0, 0.0]


@pytest.mark.parametrize("fmt, bad, expected", [
    ("math", "{not json", "train.jsonl:2: invalid JSON"),
    ("math", {"problem": "p"}, "train.jsonl:2: missing or empty field 'solution'"),
    ("math", {"problem": "p", "solution": "no box"}, "train.jsonl:2: solution has no \\\\boxed"),
    ("math500", {"problem": "p", "answer": ""}, "train.jsonl:2: missing or empty field 'answer'"),
    ("dapo17k", {"prompt": "text", "reward_model": {"ground_truth": "1"}}, "train.jsonl:2: 'prompt' must be a list"),
    ("dapo17k", {"prompt": [{"role": "user", "content": "q"}]}, "train.jsonl:2: missing 'reward_model'"),
])
def test_malformed_rows_cite_file_and_line_and_write_nothing(tmp_path, fmt, bad, expected):
    good = {"math": MATH_ROWS[0], "math500": MATH500_ROWS[0], "dapo17k": DAPO_ROW}[fmt]
    with pytest.raises(DataError, match=expected):
        prepare_math(write_jsonl(tmp_path / "train.jsonl", [good, bad]), fmt, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli(tmp_path, capsys):
    src = write_jsonl(tmp_path / "test.jsonl", MATH500_ROWS)
    assert main(["data", "math", "--input", str(src), "--format", "math500", "--output", str(tmp_path / "o")]) == 0
    assert f"{tmp_path / 'o' / 'test.parquet'}: 1 rows" in capsys.readouterr().out
    assert main(["data", "math", "--input", str(tmp_path / "nope.jsonl"), "--format", "math",
                 "--output", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert "gspo data math: error: --input: file not found" in err and "MATH-lighteval" in err
    assert main(["data", "math", "--input", str(src), "--format", "math", "--output", str(tmp_path / "o3"),
                 "--split", "../x"]) == 2
    assert "--split" in capsys.readouterr().err
