"""benchmarks/gpu_acceptance.py: its CPU dry run end to end, its exit code when a check fails, the FSDP2 check on
gloo, and the vLLM cycle logic against a stand-in engine (the CUDA runs themselves need a GPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SCRIPT = BENCHMARKS / "gpu_acceptance.py"
sys.path.insert(0, str(BENCHMARKS))


def _acceptance(*args: str, timeout: int = 600) -> tuple[int, list[dict]]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env,
                          timeout=timeout)
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def test_dry_run_skips_what_needs_cuda_and_runs_the_rest_small():
    exit_code, rows = _acceptance("--dry-run")
    *checks, summary = rows
    by_name = {row["check"]: row for row in checks}
    assert list(by_name) == ["bf16_step", "fsdp2_nccl", "vllm_cycles", "lora_bf16", "recipe_3b_shapes",
                             "verl_gspo_line"]
    for name in ("bf16_step", "fsdp2_nccl", "vllm_cycles"):
        assert by_name[name] == {"check": name, "status": "skipped", "reason": "needs CUDA (--dry-run)"}
    assert all(by_name[name]["status"] == "pass" for name in ("lora_bf16", "recipe_3b_shapes", "verl_gspo_line")), \
        checks
    lora = by_name["lora_bf16"]
    # On CPU the frozen base computes in fp32 (on CUDA: bf16); the export keeps the checkpoint's bf16. Rank-8
    # adapters on the tiny Qwen2 (hidden 32, 2 layers, 2 key-value heads of size 8, intermediate 64): q, o
    # 8(32+32) = 512, k, v 8(32+16) = 384, gate, up, down 8(32+64) = 768 -> 4096 per layer, 8192 in all.
    assert lora["base_dtypes"] == ["torch.float32"] and lora["adapter_dtypes"] == ["torch.float32"]
    assert lora["trainable_params"] == 8192 and lora["final_model_dtype"] == "torch.bfloat16"
    # The recipe's script ran with the dry run's shapes (its prompt length stays the 3B run's 512).
    assert by_name["recipe_3b_shapes"]["shapes"] == {
        "max_prompt_length": 512, "max_response_length": 4, "train_batch_size": 2, "gen_batch_size": 4, "n": 4,
        "ppo_mini_batch_size": 2, "ppo_micro_batch_size_per_gpu": 4}
    assert by_name["verl_gspo_line"]["engine"] == "hf"
    assert summary["summary"] == "pass" and summary["dry_run"] and summary["device"] == "cpu"
    assert summary["failed"] == [] and summary["skipped"] == ["bf16_step", "fsdp2_nccl", "vllm_cycles"]
    assert exit_code == 0


def test_a_failed_check_fails_the_run():
    # A check killed at its time limit is a failure like any other: its line says why, and the exit code is 1.
    exit_code, rows = _acceptance("--dry-run", "--checks", "verl_gspo_line", "--time-limit-s", "6")
    (check, summary) = rows
    assert check["status"] == "fail" and check["error"] == "timed out after 6 s"
    assert summary["summary"] == "fail" and summary["failed"] == ["verl_gspo_line"]
    assert exit_code == 1


def test_unknown_check_is_refused_naming_the_choices():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--checks", "bf16_step,nope"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "--checks: unknown nope; choose from bf16_step" in proc.stderr


def test_fsdp2_check_shards_trains_and_gathers_on_a_one_rank_gloo_group(tmp_path):
    # The same code as the NCCL check, on the CPU backend: every parameter sharded, the loss falls, the gathered
    # weights keep the model's 27 names (26 tensors + the tied LM head under its own name).
    result = tmp_path / "fsdp.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--child", "fsdp2_nccl", "--device", "cpu", "--folder",
                           str(tmp_path / "scratch"), "--result", str(result)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    verdict = json.loads(result.read_text())
    assert verdict["problems"] == [] and verdict["backend"] == "gloo"
    assert verdict["mode"] == "1 rank in a gloo process group (CPU)"
    assert verdict["on_device"]["gathered_tensors"] == 27 and len(verdict["on_device"]["losses"]) == 4


class StandInEngine:
    """The vllm engine's interface over a memory counter: awake it holds ``held`` GiB, asleep ``asleep``; its
    greedy tokens are the pushed weights' tag, so a push shows in what it generates."""

    def __init__(self, held: float, asleep: float):
        self.held, self.asleep, self.used, self.tag, self.calls = held, asleep, held, None, []

    def release_memory(self):
        self.calls.append("release_memory")
        self.used = self.asleep

    def update_weights(self, weights):
        self.calls.append("update_weights")
        self.tag = int(next(iter(weights))[1].sum().item())

    def resume_memory(self):
        self.calls.append("resume_memory")
        self.used = self.held

    def generate(self, prompts, params):
        import torch

        from gspo.rollout import Generation

        self.calls.append("generate")
        ids = torch.full((len(prompts), 2), self.tag)
        return Generation(prompt_ids=ids, prompt_mask=ids, response_ids=ids, response_mask=ids.float())


def _policy(value: float):
    import torch

    policy = torch.nn.Linear(2, 1, bias=False)
    torch.nn.init.constant_(policy.weight, value)
    return policy


def test_vllm_cycles_sleep_push_wake_generate_in_that_order_and_pass_on_a_healthy_engine():
    import torch
    from _acceptance_devices import judge_cycles, run_cycles

    engine = StandInEngine(held=40.0, asleep=1.0)
    a, b = _policy(1.0), _policy(2.0)  # weights whose sums tag the tokens 2 and 4
    readings, tokens = run_cycles(engine, [a, b, a], [[3, 4], [5]], None, torch.device("cpu"),
                                  lambda: engine.used)
    assert engine.calls == ["release_memory", "update_weights", "resume_memory", "generate"] * 3
    assert readings[0] == {"after_sleep": 1.0, "after_push": 1.0, "after_wake": 40.0, "after_generate": 40.0}
    assert [t[0] for t in tokens] == [[2, 2], [4, 4], [2, 2]]
    verdict = judge_cycles(engine_gib=39.5, after_build=40.0, readings=readings, tokens=tokens)
    assert verdict.problems == []
    assert verdict.measured["prompts_changed_by_push"] == 1.0
    assert verdict.measured["prompts_repeated_after_push_back"] == 1.0


def test_vllm_cycles_name_each_failed_condition():
    from _acceptance_devices import judge_cycles

    stuck = {"after_sleep": 39.0, "after_push": 39.0, "after_wake": 40.0, "after_generate": 40.0}
    leaking = {**stuck, "after_sleep": 1.0, "after_generate": 41.0}
    readings = [{**leaking, "after_generate": 40.0}, stuck, leaking]
    verdict = judge_cycles(engine_gib=39.5, after_build=40.0, readings=readings,
                           tokens=[[[1], [2]], [[1], [2]], [[3], [2]]])
    assert verdict.problems == [
        "cycle 2: sleep freed 1.00 GiB of the engine's 39.50 GiB",
        "device memory grew 1.00 GiB from cycle 1 to 3",
        "weights B changed the greedy tokens of only 0% of the prompts",
        "pushing A back repeated the greedy tokens of only 50% of the prompts",
    ]


@pytest.mark.parametrize(("name", "peak"), [("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0),
                                            ("NVIDIA H200", 989.0), ("NVIDIA A100-SXM4-80GB", 312.0),
                                            ("NVIDIA L40S", 362.0), ("NVIDIA L40", 181.0), ("NVIDIA L4", 121.0),
                                            ("NVIDIA GeForce RTX 3090", None)])
def test_bf16_peak_by_device_name(name, peak):
    from gpu_step import peak_bf16_tflops

    assert peak_bf16_tflops(name) == peak


def test_mfu_is_six_flops_per_parameter_per_token_over_the_peak():
    from gpu_step import model_flops_utilisation

    # 6 x 494M parameters x 100k tokens/s = 2.964e17 FLOP/s; of H200's 989 TFLOP/s: 0.2997.
    assert model_flops_utilisation(494_000_000, 100_000, 989.0) == pytest.approx(0.29970, abs=1e-5)
    assert model_flops_utilisation(494_000_000, 100_000, None) is None
