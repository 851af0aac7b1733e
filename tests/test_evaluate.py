"""`gspo eval`: pass@k / maj@k by hand, key=value checking, and an end-to-end run on a tiny random Qwen2."""

from __future__ import annotations

import json
import math

import pytest

from gspo.cli import main
from gspo.config import ConfigError
from gspo.evaluate import (
    EvalConfig,
    eval_rollout_config,
    extract_answer,
    majority_vote,
    parse_eval_args,
    pass_at_k,
    score_prompt,
    summarize,
)


@pytest.mark.parametrize("n, c, k, expected", [
    (4, 1, 2, 0.5),          # 1 - C(3,2)/C(4,2) = 1 - 3/6
    (5, 2, 3, 0.9),          # 1 - C(3,3)/C(5,3) = 1 - 1/10
    (10, 3, 1, 0.3),         # k = 1: c / n
    (16, 1, 4, 0.25),        # 1 - C(15,4)/C(16,4) = 1 - 1365/1820
    (4, 0, 4, 0.0),          # nothing correct
    (4, 3, 2, 1.0),          # n - c < k: every k-subset holds a correct sample
    (1, 1, 1, 1.0),
])
def test_pass_at_k_unbiased_estimator(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_matches_brute_force_over_subsets():
    from itertools import combinations

    correct = [1, 0, 0, 1, 0, 1]
    for k in range(1, 7):
        subsets = list(combinations(correct, k))
        assert pass_at_k(6, 3, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))


@pytest.mark.parametrize("n, c, k", [(4, 5, 1), (4, -1, 1), (4, 1, 0), (4, 1, 5)])
def test_pass_at_k_rejects_impossible_counts(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


@pytest.mark.parametrize("answers, accs, expected", [
    (["5", "7", "7", "5", "7"], [0, 1, 1, 0, 1], ("7", 1.0)),   # 3 votes beat 2
    (["7", "5", "5", "7"], [1, 0, 0, 1], ("7", 1.0)),           # 2-2 tie: the earliest answer wins
    ([None, None, "3"], [0, 0, 0], ("3", 0.0)),                 # unparsable responses do not vote
    ([None, None], [0, 0], (None, 0.0)),                         # no vote at all: wrong
    (["3", "3", "4"], [0.0, 1.0, 1.0], ("3", 0.0)),             # the acc of the first response with the answer
])
def test_majority_vote(answers, accs, expected):
    assert majority_vote(answers, accs) == expected


def test_extract_answer_follows_the_reward():
    text = "12 apples... so 15 in total.\n#### 1,500"
    assert extract_answer(text, "openai/gsm8k", {}) == "1500"
    assert extract_answer("so 15 in total", "gsm8k", {}) is None
    assert extract_answer("so 15 in total", "gsm8k", {"method": "flexible"}) == "15"
    assert extract_answer("  42\n", "addition", {}) == "42"


def test_score_prompt_by_hand():
    record = score_prompt(["7", "5", "5", None], [1.0, 0.0, 0.0, 0.5], [1.0, 0.0, 0.0, 0.0], k=2)
    # c = 1 of n = 4: pass@2 = 1 - C(3,2)/C(4,2) = 0.5; maj over the first 2 ("7", "5"): tie -> "7", correct.
    assert record["num_correct"] == 1 and record["pass@k"] == pytest.approx(0.5)
    assert (record["majority_answer"], record["maj@k"]) == ("7", 1.0)
    assert record["mean_acc"] == 0.25 and record["mean_score"] == 0.375
    # Over all 4 answers "5" wins 2-1 and is wrong.
    assert score_prompt(["7", "5", "5", None], [0] * 4, [1.0, 0.0, 0.0, 0.0], k=4)["maj@k"] == 0.0


def test_summarize_names_metrics_by_n_and_k():
    cfg = EvalConfig(n=4, k=2, temperature=1.0)
    records = [{**score_prompt(["1", "1", "2", "2"], [1, 1, 0, 0], [1, 1, 0, 0], k=2), "response_lengths": [3] * 4},
               {**score_prompt(["3", "4", "4", "4"], [0, 0, 0, 1], [0, 0, 0, 0.5], k=2), "response_lengths": [5] * 4}]
    summary = summarize(records, cfg, num_truncated=2)
    # pass@1 = mean acc = (0.5 + 0.125) / 2; pass@2: (1 - C(2,2)/C(4,2)) and (1 - C(3,2)/C(4,2)) -> (5/6 + 1/2) / 2
    assert summary["pass@1"] == pytest.approx(0.3125) and summary["mean@4"] == pytest.approx(0.375)
    assert summary["pass@2"] == pytest.approx((5 / 6 + 0.5) / 2)
    assert summary["maj@2"] == 0.5 and summary["truncated_ratio"] == 0.25 and summary["response_length_mean"] == 4


def test_parse_eval_args_types_and_defaults():
    cfg = parse_eval_args(["n=8", "temperature=1", "top_p=0.95", "output_dir=007", "k=null"])
    assert (cfg.n, cfg.temperature, cfg.top_p, cfg.output_dir, cfg.pass_k) == (8, 1.0, 0.95, "007", 8)
    assert parse_eval_args([]) == EvalConfig()


def test_engine_keys_reach_the_engine_settings():
    rollout = eval_rollout_config(parse_eval_args(["dtype=float32", "micro_batch_size=64"]))
    assert (rollout.name, rollout.dtype, rollout.micro_batch_size) == ("hf", "float32", 64)
    # Not capped at batch_size x n: hf generates one batch_size of prompts per call, vllm schedules its own.
    assert eval_rollout_config(parse_eval_args([])).micro_batch_size == 0


@pytest.mark.parametrize("args, expected", [
    (["nn=4"], "unknown eval key 'nn'; did you mean 'n'?"),
    (["temprature=1"], "did you mean 'temperature'?"),
    (["n"], "not of the form key=value"),
    (["n=two"], "n: cannot take 'two'; expected an integer"),
    (["n=true"], "n: cannot take 'true'"),
    (["n=1.5"], "n: cannot take '1.5'"),
    (["n=4"], "temperature: n=4 responses per prompt need temperature > 0"),
    (["n=4", "k=5", "temperature=1"], "k: 5 must lie in [1, n=4]"),
    (["top_p=0"], "top_p: 0.0 must lie in (0, 1]"),
    (["temperature=-1"], "temperature: -1.0 must be >= 0"),
    (["max_response_length=0"], "max_response_length: 0 must be >= 1"),
    (["chat_template=maybe"], "chat_template: 'maybe' is not one of"),
    (["device=tpu"], "device: 'tpu'"),
    # Every engine key of training, bare and checked as in training.
    (["dtype=fp8"], "dtype: 'fp8' is not one of auto, bfloat16, float16, float32"),
    (["micro_batch_size=many"], "micro_batch_size: cannot take 'many'; expected an integer"),
    (["gpu_memory_utilization=0.7"], "gpu_memory_utilization: is read by the vllm engine only (engine='hf'); drop "
                                     "it or set engine=vllm"),
    (["engine=vllm", "max_model_len=1"], "max_model_len: must be >= 2"),
    (["engine=vllm", "tensor_model_parallel_size=2"], "tensor_model_parallel_size: 2: only 1 is supported"),
    (["engine=vllm", "device=cpu", "enable_chunked_prefill=true"], "enable_chunked_prefill: vLLM's CPU sampler"),
    (["engine=vlm"], "engine: unknown rollout engine 'vlm'; did you mean 'vllm'?"),
    (["gpu_memory_utilisation=0.7"], "did you mean 'gpu_memory_utilization'?"),
])
def test_parse_eval_args_errors_name_the_key(args, expected):
    with pytest.raises(ConfigError) as info:
        parse_eval_args(args)
    assert expected in str(info.value)


def _run(tmp_path, tiny_model_dir, data, *args) -> tuple[dict, list[dict]]:
    out = tmp_path / "eval"
    assert main(["eval", "--model", str(tiny_model_dir), "--data", str(data), f"output_dir={out}", "device=cpu",
                 "max_response_length=4", "batch_size=3", *args]) == 0
    summary = json.loads((out / "summary.json").read_text())
    return summary, [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]


def test_eval_end_to_end_on_a_tiny_model(tmp_path, tiny_model_dir, addition_files, capsys):
    summary, records = _run(tmp_path, tiny_model_dir, addition_files[1], "n=4", "k=2", "temperature=1.0")
    assert summary["num_prompts"] == len(records) == 8 and (summary["n"], summary["k"]) == (4, 2)
    assert "pass@1=" in capsys.readouterr().out
    for record in records:
        assert len(record["responses"]) == len(record["answers"]) == len(record["scores"]) == 4
        assert record["data_source"] == "addition" and record["prompt"].endswith("=")
        # The registered addition reward: exact sum; the maj@k answer of other sources is the stripped text.
        assert record["accs"] == [float(r.strip() == record["ground_truth"]) for r in record["responses"]]
        assert record["answers"] == [r.strip() for r in record["responses"]]
    # The summary is the mean of what the per-prompt lines say.
    assert summary["pass@1"] == pytest.approx(sum(sum(r["accs"]) / 4 for r in records) / 8)
    assert summary["pass@2"] == pytest.approx(sum(pass_at_k(4, r["num_correct"], 2) for r in records) / 8)
    assert summary["maj@2"] == pytest.approx(sum(r["maj@k"] for r in records) / 8)
    assert all(length <= 4 for r in records for length in r["response_lengths"])


def test_eval_custom_reward_and_limit(tmp_path, tiny_model_dir, addition_files, parity_reward):
    summary, records = _run(tmp_path, tiny_model_dir, addition_files[0], "limit=5", "n=3", "temperature=1",
                            f"reward_path={parity_reward}")
    assert summary["num_prompts"] == 5 and [r["index"] for r in records] == list(range(5))
    scores = [s for r in records for s in r["scores"]]
    assert scores == [float(len(text) % 2) for r in records for text in r["responses"]]
    assert summary["mean@3"] == pytest.approx(sum(scores) / 15)


def test_eval_greedy_default_is_deterministic(tmp_path, tiny_model_dir, addition_files):
    first = _run(tmp_path, tiny_model_dir, addition_files[1])[1]
    second = _run(tmp_path, tiny_model_dir, addition_files[1], "seed=7")[1]
    assert [r["responses"] for r in first] == [r["responses"] for r in second]
    assert math.isclose(sum(r["mean_acc"] for r in first), sum(r["mean_acc"] for r in second))


def test_eval_sampling_is_seeded_per_response_whatever_the_batch_size(tmp_path, tiny_model_dir, addition_files):
    whole = _run(tmp_path, tiny_model_dir, addition_files[1], "n=3", "temperature=1.0", "batch_size=8")[1]
    pieces = _run(tmp_path, tiny_model_dir, addition_files[1], "n=3", "temperature=1.0", "batch_size=3")[1]
    other_seed = _run(tmp_path, tiny_model_dir, addition_files[1], "n=3", "temperature=1.0", "seed=5")[1]
    assert [r["responses"] for r in whole] == [r["responses"] for r in pieces]
    assert [r["responses"] for r in whole] != [r["responses"] for r in other_seed]


@pytest.mark.parametrize("args, expected", [
    (["--model", "/nonexistent/model", "--data", "{val}"], "gspo eval: error: --model: '/nonexistent/model' does not"),
    (["--model", "{model}", "--data", "/nonexistent/val.jsonl"], "/nonexistent/val.jsonl: data file not found"),
    (["--model", "{model}", "--data", "{val}", "temprature=1"], "did you mean 'temperature'"),
    (["--model", "{model}", "--data", "{val}", "reward_path=/nonexistent/r.py"], "/nonexistent/r.py"),
])
def test_eval_bad_input_exits_2(tmp_path, tiny_model_dir, addition_files, capsys, args, expected):
    args = [a.format(model=tiny_model_dir, val=addition_files[1]) for a in args]
    assert main(["eval", *args, f"output_dir={tmp_path}"]) == 2
    assert expected in capsys.readouterr().err
