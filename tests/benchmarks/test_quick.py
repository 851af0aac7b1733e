"""Every benchmark's --quick mode runs end to end and prints its JSON (seconds; no timing is asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _run(script: str, *args: str) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(BENCHMARKS / script), "--quick", *args], capture_output=True,
                          text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def test_every_benchmark_has_a_quick_test():
    scripts = {p.name for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_")}
    tested = {"default_run.py", "dynamic_sampling.py", "data_parallel.py", "memory.py", "vs_trl.py", "lora.py",
              "math_reward.py", "ablation.py", "checkpoint_hash.py",  # ablation.py: tests/benchmarks/test_ablation.py
              "rollout_engines.py", "gpu_step.py", "sampler_cost.py", "startup_memory.py",
              "comm_bytes.py",  # tests/trainer/test_comm_bytes.py runs it on 2 ranks
              "gpu_acceptance.py",  # tests/benchmarks/test_gpu_acceptance.py runs its CPU dry run
              "async_rollout.py"}
    assert scripts == tested


def test_default_run_quick():
    (result,) = _run("default_run.py")
    assert result["quick"] and result["steps"] == 1 and 0.0 <= result["end_val_acc"] <= 1.0


def test_dynamic_sampling_quick():
    rows = _run("dynamic_sampling.py")
    assert [r["variant"] for r in rows] == ["verl", "all"]
    assert all(r["generated_tokens_per_trained_group"] > 0 for r in rows)


def test_data_parallel_quick():
    rows = _run("data_parallel.py")
    assert [r["nproc"] for r in rows] == [1, 2]
    assert rows[1]["same_kept_and_rewards_as_nproc_1"] is True


def test_memory_quick():
    rows = _run("memory.py")
    assert [r["use_dynamic_bsz"] for r in rows] == [False, True]
    assert all(len(r["peak_delta_mib"]) == 1 for r in rows)


def test_vs_trl_quick_runs_our_side_with_fixed_length():
    (result,) = _run("vs_trl.py", "--fixed-length")
    small = result["sizes"]["small"]
    ours = small["ours"]
    assert ours["optimizer_steps_per_step"] == 2 and ours["sec_per_step"] > 0
    assert ours["mean_response_length"] == 4.0  # rollout.ignore_eos: every response runs --quick's 4 tokens
    if small["trl"] is None:  # TRL is not installed (CI): our side alone, no ratio
        assert "ratio_ours_over_trl" not in small


# The shipped warm start (gspo/assets/addition): hidden 128, intermediate 384, 3 layers, 4 query / 2 key-value heads
# of size 32. Rank-8 adapters on its 7 linear layers per block hold 8 x (in + out) each: q, o 8(128+128)=2048,
# k, v 8(128+64)=1536, gate, up, down 8(128+384)=4096 -> 19456 per layer, 58368 in all.
FULL_PARAMS, LORA_PARAMS = 593408, 58368


def test_lora_quick():
    (result,) = _run("lora.py")
    rows = {row["mode"]: row for row in result["rows"]}
    assert result["quick"] and "learning" not in result
    assert rows["full"]["trainable_params"] == rows["full"]["base_params"] == FULL_PARAMS
    assert rows["lora"]["trainable_params"] == LORA_PARAMS and rows["lora"]["base_params"] == FULL_PARAMS
    for row in rows.values():  # AdamW: two fp32 moments per parameter and a 4-byte step count per tensor
        moments = 8 * row["trainable_params"]
        assert moments < row["optimizer_state_bytes"] <= moments + 4 * 200
        assert row["s_per_step"] > 0 and row["peak_rss_mib"] > 0


def test_math_reward_quick():
    head, *rows = _run("math_reward.py")
    assert head["workers"] >= 1 and head["timeout_s"] == 1.0 and head["pool_start_s"] > 0
    by_mix = {row["mix"]: row for row in rows}
    assert set(by_mix) == {"math", "dapo", "distinct", "pathological"}
    for mix, row in by_mix.items():
        assert row["responses"] == 32 and row["answers_per_s"] > 0, row
        assert row["errors"] == ([1] if mix == "pathological" else [0]), row  # the one answer past its deadline
    assert 0 < by_mix["math"]["acc_mean"] < 1 and by_mix["distinct"]["acc_mean"] == 0


def test_rollout_engines_quick_hf():
    # Both engines run in the vLLM environment (tests_vllm/test_benchmark.py); here the hf engine alone.
    (row,) = _run("rollout_engines.py", "--engines", "hf")
    assert row["engine"] == "hf" and row["model"] == "embedded" and row["tokens_per_s"] > 0


def _without_vllm(script: str, *args: str) -> subprocess.CompletedProcess:
    """Run a benchmark as in an environment without vLLM, whether or not this one has it: with
    ``sys.modules["vllm"] = None``, ``importlib.util.find_spec("vllm")`` is None and ``import vllm`` fails."""
    launcher = ("import runpy, sys; sys.modules['vllm'] = None; sys.argv = sys.argv[1:]; "
                "runpy.run_path(sys.argv[0], run_name='__main__')")
    return subprocess.run([sys.executable, "-c", launcher, str(BENCHMARKS / script), *args], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_rollout_engines_without_vllm_names_the_environment():
    proc = _without_vllm("rollout_engines.py", "--quick")
    assert proc.returncode == 2 and "setup_vllm_env.sh" in proc.stderr


def test_gpu_step_refuses_without_cuda_and_checks_its_arguments():
    # It needs one CUDA device (measured on a GPU machine, see benchmarks/README.md); hidden here on every machine.
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "gpu_step.py"), "--engines", "hf"], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 2 and "needs one CUDA device" in proc.stderr and proc.stdout == ""
    bad = subprocess.run([sys.executable, str(BENCHMARKS / "gpu_step.py"), "--steps", "0"], capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 2 and "--steps" in bad.stderr


def test_gpu_step_quick_reports_each_engine_and_exits_1_when_one_fails():
    # --quick runs on the CPU without CUDA. An engine that cannot be built fails its own line and the exit code;
    # the other engine still reports (no MFU on CPU: there is no bf16 peak to divide by).
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "gpu_step.py"), "--quick", "--engines",
                           "hf,no_such_engine"], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""})
    hf, failed = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert hf["engine"] == "hf" and hf["device"] == "cpu" and hf["sequences_per_step"] == 4
    assert hf["train_tokens_per_s"] > 0 and hf["mfu"] is None and hf["autocast"] == "None"
    assert failed["engine"] == "no_such_engine" and "unknown rollout engine 'no_such_engine'" in failed["error"][0]
    assert proc.returncode == 1


def test_gpu_step_config_is_valid(tmp_path, monkeypatch):
    # Its training overrides load; the vllm run's too where vLLM is installed, and where it is not the error
    # names the extra (both asserted on every machine by answering find_spec for vllm either way).
    import importlib.util

    import pytest

    sys.path.insert(0, str(BENCHMARKS))
    import gpu_step

    from gspo.config import ConfigError, load_config

    args = gpu_step.parse_args([])
    cfg = load_config(None, gpu_step.overrides(tmp_path, "hf", args))
    assert cfg.data.max_response_length == 512 and cfg.actor_rollout_ref.rollout.ignore_eos
    assert cfg.data.train_batch_size * cfg.actor_rollout_ref.rollout.n == 256
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: real("json") if name == "vllm" else real(name, *a))
    vllm_cfg = load_config(None, gpu_step.overrides(tmp_path, "vllm", args))
    assert vllm_cfg.actor_rollout_ref.rollout.gpu_memory_utilization == 0.35
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[vllm\]'"):
        load_config(None, gpu_step.overrides(tmp_path, "vllm", args))


def test_checkpoint_hash_quick():
    (result,) = _run("checkpoint_hash.py")
    assert result["quick"] and result["mib"] == 8
    assert result["crc32_s_per_gb"] > 0 and result["manifest_verify_s_per_gb"] > 0


def test_default_run_contended_quick():
    (result,) = _run("default_run.py", "--contended")
    assert result["busy_loops"] == 2 and result["idle"]["quick"] and result["contended"]["quick"]
    assert result["ratio"] > 0 and result["idle_wall_s"] > 0 and result["contended_wall_s"] > 0


def test_gpu_step_prompts_encode_one_token_per_letter(tmp_path):
    # transformers loads a tokenizer saved beside a Qwen2 model as Qwen2's byte-level BPE: the benchmark's own
    # tokenizer must survive that (a word-level one encoded every prompt to zero tokens).
    sys.path.insert(0, str(BENCHMARKS))
    import gpu_step

    from gspo.model.loading import load_tokenizer

    gpu_step.write_assets(tmp_path, num_prompts=1, shape="tiny")
    prompt = json.loads((tmp_path / "train.jsonl").read_text().splitlines()[0])["prompt"]
    ids = load_tokenizer(str(tmp_path / "model"))(prompt)["input_ids"]
    assert 4 <= len(prompt) == len(ids) <= 8 and min(ids) >= 2


def test_sampler_cost_small():
    rows = _run("sampler_cost.py")
    assert rows and all(isinstance(row, dict) for row in rows)


def test_startup_memory_quick():
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "startup_memory.py"), "--quick"], capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert [len(result["runs"][name]) for name in ("single", "sharded")] == [1, 2]
    assert all(0.4 < share < 0.6 for share in result["sharded_policy_parameters_per_rank_vs_one_fp32_copy"])
    # The KL loss is on: each rank holds its half of the reference model too, and no engine copy.
    for single, sharded in zip(result["runs"]["single"] * 2, result["runs"]["sharded"], strict=True):
        assert 0.4 < sharded["reference_parameter_bytes"] / single["reference_parameter_bytes"] < 0.6
        assert sharded["engine_copy_parameter_bytes"] == 0


def test_async_rollout_quick():
    rows = _run("async_rollout.py")
    assert [r.get("mode") for r in rows[:2]] == ["sync", "async"] and rows[-1]["summary"]
    assert rows[1]["steps"] == 2 and 0.0 <= rows[1]["trainer_wait_share"] <= 1.0
