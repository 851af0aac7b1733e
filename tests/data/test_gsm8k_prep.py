"""`gspo data gsm8k`: original GSM8K JSONL -> prompt Parquet, verl-compatible, malformed rows cite file:line."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from gspo.cli import main
from gspo.data import DataError, PromptDataset, load_rows
from gspo.data.gsm8k import INSTRUCTION, parse_final_answer, prepare_gsm8k
from gspo.rewards import RewardManager
from tests.gsm8k_fixture import real_gsm8k_dir

REAL_GSM8K = real_gsm8k_dir()

TRAIN = [{"question": "Tom has 3 apples and buys 4. How many?", "answer": "3 + 4 = <<3+4=7>>7\n#### 7"},
         {"question": "A car costs $1,200 twice. Total?", "answer": "2 * 1200 = 2400\n#### 2,400"}]
TEST = [{"question": "What is 10 - 12?", "answer": "10 - 12 = -2\n#### -2"}]


def write_split(folder: Path, name: str, lines: list) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.jsonl"
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


@pytest.fixture
def gsm8k_dir(tmp_path) -> Path:
    write_split(tmp_path / "raw", "train", TRAIN)
    write_split(tmp_path / "raw", "test", TEST)
    return tmp_path / "raw"


@pytest.mark.parametrize("answer, expected", [("x\n#### 72", "72"), ("#### 1,234", "1234"), ("#### -3\n", "-3"),
                                              ("####5", "5"), ("#### 2.5", "2.5"), ("72", None), ("#### ", None),
                                              ("#### 7 apples", None)])
def test_parse_final_answer(answer, expected):
    assert parse_final_answer(answer) == expected


def test_prepare_writes_verl_compatible_rows(gsm8k_dir, tmp_path):
    assert prepare_gsm8k(gsm8k_dir, tmp_path / "out") == {"train": 2, "test": 1}
    rows = pq.read_table(tmp_path / "out" / "train.parquet").to_pylist()
    assert rows[1] == {
        "prompt": [{"role": "user", "content": TRAIN[1]["question"] + INSTRUCTION}],
        "ground_truth": "2400", "data_source": "openai/gsm8k", "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": "2400"}, "extra_info": {"split": "train", "index": 1}}
    assert INSTRUCTION == ' Let\'s think step by step and output the final answer after "####".'
    test_rows = load_rows(tmp_path / "out" / "test.parquet")
    assert test_rows[0]["ground_truth"] == "-2" and test_rows[0]["extra_info"] == {"split": "test", "index": 0}


def test_prepared_rows_feed_the_dataset_and_the_registered_reward(gsm8k_dir, tmp_path, tiny_model_dir):
    from gspo.model.loading import load_tokenizer

    prepare_gsm8k(gsm8k_dir, tmp_path / "out")
    # The addition tokenizer maps unknown characters to <unk>: the prompt content does not matter here.
    data = PromptDataset.from_files([tmp_path / "out" / "train.parquet"], load_tokenizer(str(tiny_model_dir)),
                                    max_prompt_length=512)
    assert [item.ground_truth for item in data] == ["7", "2400"]
    scored = RewardManager().score(["so #### 7", "#### 2,400", ], None, [d.ground_truth for d in data],
                                   [d.data_source for d in data], [d.extra_info for d in data])
    assert scored.acc.tolist() == [1.0, 1.0]


@pytest.mark.parametrize("bad_line, expected", [
    ("{not json", "train.jsonl:2: invalid JSON"),
    (json.dumps({"question": "q"}), "train.jsonl:2: missing or empty string field 'answer'"),
    (json.dumps({"answer": "#### 1"}), "train.jsonl:2: missing or empty string field 'question'"),
    (json.dumps({"question": "q", "answer": "the answer is 5"}), "train.jsonl:2: answer does not end in '#### N'"),
])
def test_malformed_row_stops_with_file_and_line(tmp_path, bad_line, expected):
    raw = tmp_path / "raw"
    write_split(raw, "train", [TRAIN[0], bad_line])
    write_split(raw, "test", TEST)
    with pytest.raises(DataError, match=expected):
        prepare_gsm8k(raw, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing is written when a split is malformed


def test_cli_exit_codes(gsm8k_dir, tmp_path, capsys):
    assert main(["data", "gsm8k", "--input", str(gsm8k_dir), "--output", str(tmp_path / "out")]) == 0
    assert "train.parquet: 2 rows" in capsys.readouterr().out
    assert main(["data", "gsm8k", "--input", str(tmp_path / "missing"), "--output", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert "gspo data gsm8k: error: --input" in err and "github.com/openai/grade-school-math" in err
    write_split(gsm8k_dir, "test", [TEST[0], "[1, 2]"])
    assert main(["data", "gsm8k", "--input", str(gsm8k_dir), "--output", str(tmp_path / "o3")]) == 2
    assert "test.jsonl:2: expected a JSON object" in capsys.readouterr().err


if REAL_GSM8K is not None:  # collected only where the real copy exists; the fixture test below runs everywhere
    def test_real_gsm8k_copy(tmp_path):
        assert prepare_gsm8k(REAL_GSM8K, tmp_path) == {"train": 7473, "test": 1319}
        train = pq.read_table(tmp_path / "train.parquet").to_pylist()
        assert train[0]["ground_truth"] == "72" and train[-1]["extra_info"] == {"split": "train", "index": 7472}
        assert all(row["ground_truth"].lstrip("-").isdigit() for row in train)


def test_gsm8k_format_fixture(tmp_path):
    """The same checks on the synthetic GSM8K-format fixture, so CI (without ../shared/data) runs them."""
    from tests.gsm8k_fixture import write_gsm8k_fixture

    raw = write_gsm8k_fixture(tmp_path / "raw", num_train=40, num_test=8)
    assert prepare_gsm8k(raw, tmp_path / "out") == {"train": 40, "test": 8}
    train = pq.read_table(tmp_path / "out" / "train.parquet").to_pylist()
    first = json.loads((raw / "train.jsonl").read_text().splitlines()[0])
    assert train[0]["ground_truth"] == first["answer"].rsplit("#### ", 1)[1].replace(",", "")
    assert train[-1]["extra_info"] == {"split": "train", "index": 39}
    assert all(row["ground_truth"].lstrip("-").isdigit() for row in train)
    assert any("," in json.loads(line)["answer"] for line in (raw / "train.jsonl").read_text().splitlines())
