from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gspo.data import DataError, RowSource, load_rows, load_rows_with_sources

ROWS = [
    {"prompt": "what is 1 + 2 ?", "ground_truth": "3", "data_source": "addition"},
    {"prompt": [{"role": "user", "content": "hello"}], "reward_model": {"ground_truth": "7"}},
]


def write_jsonl(path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def test_jsonl_round_trip_skips_blank_lines(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [json.dumps(ROWS[0]), "", "   ", json.dumps(ROWS[1])])
    rows, sources = load_rows_with_sources(path)
    assert rows == ROWS
    assert sources == [RowSource(path, line=1), RowSource(path, line=4)]
    assert str(sources[1]) == f"{path}:4"


def test_json_extension_is_json_lines(tmp_path):
    path = write_jsonl(tmp_path / "a.json", [json.dumps(r) for r in ROWS])
    assert load_rows(path) == ROWS


def test_parquet_round_trip_with_nested_columns(tmp_path):
    rows = [
        {"prompt": [{"role": "user", "content": "hello"}], "reward_model": {"ground_truth": "7", "style": "rule"}},
        {"prompt": [{"role": "user", "content": "a b"}], "reward_model": {"ground_truth": "8", "style": "rule"}},
    ]
    path = tmp_path / "a.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    loaded, sources = load_rows_with_sources(str(path))
    assert loaded == rows
    assert str(sources[1]) == f"{path}[row 1]"


def test_multiple_files_concatenate_in_order(tmp_path):
    p1 = write_jsonl(tmp_path / "1.jsonl", [json.dumps({"prompt": "x1"})])
    p2 = tmp_path / "2.parquet"
    pq.write_table(pa.Table.from_pylist([{"prompt": "x2"}, {"prompt": "x3"}]), p2)
    p3 = write_jsonl(tmp_path / "3.jsonl", [json.dumps({"prompt": "x4"})])
    assert [r["prompt"] for r in load_rows([p1, p2, p3])] == ["x1", "x2", "x3", "x4"]


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("bad.jsonl", '{"prompt": "ok"}\n{"prompt": oops}\n', r"bad\.jsonl:2: invalid JSON"),
        ("list.jsonl", '{"prompt": "ok"}\n\n[1, 2]\n', r"list\.jsonl:3: expected a JSON object, got list"),
        ("str.json", '"just a string"\n', r"str\.json:1: expected a JSON object, got str"),
        ("empty.jsonl", "", r"empty\.jsonl: file is empty"),
        ("blank.jsonl", "\n  \n", r"blank\.jsonl: file is empty"),
        ("data.csv", "a,b\n", r"data\.csv: unsupported file extension '\.csv'"),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=expected):
        load_rows(str(path))


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.jsonl: data file not found"):
        load_rows(str(tmp_path / "nope.jsonl"))


def test_empty_parquet(tmp_path):
    path = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"prompt": pa.array([], pa.string())}), path)
    with pytest.raises(DataError, match=r"empty\.parquet: file is empty"):
        load_rows(str(path))


def test_corrupt_parquet(tmp_path):
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"not parquet")
    with pytest.raises(DataError, match=r"bad\.parquet: cannot read Parquet"):
        load_rows(str(path))


def test_no_paths():
    with pytest.raises(DataError, match="no data files"):
        load_rows([])


def test_data_error_is_value_error():
    assert issubclass(DataError, ValueError)
