"""The GSM8K recipe scripts: syntax, fail-fast checks, the 3B overrides under the real schema, the tiny run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gspo.data.gsm8k import prepare_gsm8k
from tests.gsm8k_fixture import real_gsm8k_dir

REPO = Path(__file__).resolve().parents[1]
SCRIPT_3B = REPO / "recipe" / "gspo" / "gspo_dynamic_sampling_3b_math.sh"
SCRIPT_TINY = REPO / "recipe" / "gspo" / "gspo_dynamic_sampling_tiny_gsm8k.sh"
REAL_GSM8K = real_gsm8k_dir()


def run(script: Path, cwd: Path, *args: str, timeout: int = 120, **env: str) -> subprocess.CompletedProcess:
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in ("GSPO_ALLOW_CPU", "MODEL_PATH", "GSM8K_DIR", "DATA_DIR", "NGPUS", "NNODES")
    }
    return subprocess.run(
        ["bash", str(script), *args],
        cwd=cwd,
        env={**base, "PYTHON": sys.executable, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def has_vllm() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def vllm_on_path(tmp_path: Path) -> str:
    """A PYTHONPATH with a stand-in ``vllm`` package in front: the script's check and `gspo validate` only ask
    whether vLLM is installed; neither builds an engine."""
    (tmp_path / "stand_ins" / "vllm").mkdir(parents=True)
    (tmp_path / "stand_ins" / "vllm" / "__init__.py").write_text('"""Stands in for vLLM: never imported for use."""\n')
    return os.pathsep.join(filter(None, [str(tmp_path / "stand_ins"), os.environ.get("PYTHONPATH")]))


@pytest.mark.parametrize("script", [SCRIPT_3B, SCRIPT_TINY], ids=lambda p: p.name)
def test_scripts_parse(script):
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0


def test_3b_script_stops_at_once_without_gpu_or_model(tmp_path):
    # CUDA_VISIBLE_DEVICES="" hides any GPU: the refusal is checked on every machine.
    proc = run(SCRIPT_3B, tmp_path, MODEL_PATH=str(tmp_path / "no-model"), CUDA_VISIBLE_DEVICES="")
    assert proc.returncode == 1
    assert "no CUDA GPU" in proc.stderr and "GSPO_ALLOW_CPU=1" in proc.stderr
    assert f"no model folder at MODEL_PATH={tmp_path / 'no-model'}" in proc.stderr
    assert has_vllm() or "vLLM is not installed" in proc.stderr and "ROLLOUT_ENGINE=hf" in proc.stderr
    assert list(tmp_path.iterdir()) == []  # nothing prepared, nothing trained


def test_3b_script_says_where_to_get_gsm8k(tmp_path):
    proc = run(
        SCRIPT_3B,
        tmp_path,
        GSPO_ALLOW_CPU="1",
        MODEL_PATH=str(tmp_path / "no-model"),
        GSM8K_DIR=str(tmp_path / "no-gsm8k"),
        DATA_DIR=str(tmp_path / "data"),
    )
    assert proc.returncode == 1 and "GPU" not in proc.stderr
    assert "no model folder" in proc.stderr and "https://github.com/openai/grade-school-math" in proc.stderr


def test_3b_overrides_resolve_under_the_schema_and_user_args_win(tmp_path, tiny_model_dir):
    """The script's command line, run as `gspo validate` (a stand-in interpreter swaps the subcommand)."""
    raw = tmp_path / "raw"
    raw.mkdir()
    row = {"question": "What is 2 plus 3?", "answer": "2 + 3 = 5\n#### 5"}
    for split in ("train", "test"):
        (raw / f"{split}.jsonl").write_text((json.dumps(row) + "\n") * 64)
    prepare_gsm8k(raw, tmp_path / "data")
    stand_in = tmp_path / "python"
    stand_in.write_text(
        f'#!/bin/bash\nif [ "$1 $2 $3" = "-m gspo train" ]; then shift 3; '
        f'exec {sys.executable} -m gspo validate "$@"; fi\nexec {sys.executable} "$@"\n'
    )
    stand_in.chmod(0o755)
    proc = run(
        SCRIPT_3B,
        tmp_path,
        "trainer.test_freq=7",
        GSPO_ALLOW_CPU="1",
        PYTHON=str(stand_in),
        MODEL_PATH=str(tiny_model_dir),
        DATA_DIR=str(tmp_path / "data"),
        OUTPUT_DIR=str(tmp_path / "run"),
        NGPUS="4",
        NNODES="2",
        PYTHONPATH=vllm_on_path(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    resolved_yaml, _, report = proc.stdout.rstrip().rpartition("\n")
    cfg = yaml.safe_load(resolved_yaml)
    actor, rollout = cfg["actor_rollout_ref"]["actor"], cfg["actor_rollout_ref"]["rollout"]
    assert report.startswith("ok: model") and "reward: registry by data_source" in report
    assert actor["policy_loss"]["loss_mode"] == "gspo"
    assert (actor["clip_ratio_low"], actor["clip_ratio_high"]) == (3e-4, 4e-4)
    assert actor["loss_agg_mode"] == "seq-mean-token-mean" and actor["use_kl_loss"] is False
    assert (actor["optim"]["lr"], actor["optim"]["lr_warmup_steps_ratio"]) == (1e-6, 0.05)
    groups = cfg["algorithm"]["filter_groups"]
    assert (groups["enable"], groups["metric"], groups["max_num_gen_batches"]) == (True, "acc", 5)
    assert rollout["n"] == 16 and cfg["data"]["apply_chat_template"] == "auto"
    assert rollout["name"] == "vllm" and rollout["gpu_memory_utilization"] == 0.3
    correction = cfg["algorithm"]["rollout_correction"]
    assert (correction["rollout_is"], correction["rollout_is_threshold"]) == ("geometric", 2.0)
    assert (cfg["data"]["max_prompt_length"], cfg["data"]["max_response_length"]) == (512, 1024)
    assert (cfg["data"]["train_batch_size"], cfg["data"]["gen_batch_size"], actor["ppo_mini_batch_size"]) == (32, 48, 8)
    assert cfg["trainer"]["test_freq"] == 7  # the script sets 5; the appended key=value wins
    assert cfg["trainer"]["total_training_steps"] is None
    assert cfg["trainer"]["default_local_dir"] == str(tmp_path / "run")
    assert (cfg["trainer"]["nnodes"], cfg["trainer"]["n_gpus_per_node"]) == (2, 4)  # forwarded to torchrun


def gsm8k_sources() -> list[str]:
    """The synthetic GSM8K-format fixture always (CI), also the real copy where it exists."""
    return ["fixture", *(["real"] if REAL_GSM8K is not None else [])]


@pytest.mark.parametrize("source", gsm8k_sources())
def test_tiny_script_end_to_end_with_one_step(tmp_path, source):
    """The whole pipeline, cut to one step, 8 validation prompts and 4 eval prompts (~25 s on 1 CPU thread)."""
    import pyarrow.parquet as pq

    from tests.gsm8k_fixture import write_gsm8k_fixture

    data = tmp_path / "data"
    prepare_gsm8k(REAL_GSM8K if source == "real" else write_gsm8k_fixture(tmp_path / "raw"), data)
    pq.write_table(pq.read_table(data / "test.parquet").slice(0, 8), tmp_path / "val.parquet")
    proc = run(
        SCRIPT_TINY,
        tmp_path,
        "trainer.val_before_train=false",
        f"data.val_files=[{tmp_path / 'val.parquet'}]",
        timeout=600,
        DATA_DIR=str(data),
        OUTPUT_DIR=str(tmp_path / "out"),
        TINY_STEPS="1",
        TINY_EVAL_PROMPTS="4",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dir = tmp_path / "out" / "run"
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1]
    assert (run_dir / "final_model" / "config.json").is_file()
    summary = json.loads((run_dir / "eval" / "summary.json").read_text())
    assert summary["num_prompts"] == 4 and summary["n"] == 4 and "maj@4" in summary
    assert (run_dir / "report.md").is_file()
