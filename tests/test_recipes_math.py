"""The math recipe scripts: syntax, fail-fast refusal, the GPU overrides under the real schema, the CPU smoke run."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gspo.data.math import prepare_math

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "recipe" / "gspo" / "gspo_dynamic_sampling_math.sh"
SCRIPT_TINY = REPO / "recipe" / "gspo" / "gspo_dynamic_sampling_tiny_math.sh"
SMOKE_DATA = REPO / "recipe" / "gspo" / "data"
ENV_KEYS = ("GSPO_ALLOW_CPU", "MODEL_PATH", "TRAIN_FILE", "TRAIN_FORMAT", "VAL_FILE", "DATA_DIR", "NGPUS", "NNODES")


def vllm_on_path(tmp_path: Path) -> str:
    """A PYTHONPATH with a stand-in ``vllm`` package in front: the script's check and `gspo validate` only ask
    whether vLLM is installed; neither builds an engine."""
    (tmp_path / "stand_ins" / "vllm").mkdir(parents=True)
    (tmp_path / "stand_ins" / "vllm" / "__init__.py").write_text('"""Stands in for vLLM: never imported for use."""\n')
    return os.pathsep.join(filter(None, [str(tmp_path / "stand_ins"), os.environ.get("PYTHONPATH")]))


def run(script: Path, cwd: Path, *args: str, timeout: int = 120, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ENV_KEYS}
    return subprocess.run(["bash", str(script), *args], cwd=cwd, env={**base, "PYTHON": sys.executable, **env},
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("script", [SCRIPT, SCRIPT_TINY], ids=lambda p: p.name)
def test_scripts_parse(script):
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0


def test_refuses_at_once_naming_everything_missing(tmp_path):
    # CUDA_VISIBLE_DEVICES="" hides any GPU: the refusal is checked on every machine.
    proc = run(SCRIPT, tmp_path, MODEL_PATH=str(tmp_path / "no-model"), TRAIN_FILE=str(tmp_path / "no.parquet"),
               VAL_FILE=str(tmp_path / "no.jsonl"), DATA_DIR=str(tmp_path / "data"), CUDA_VISIBLE_DEVICES="")
    assert proc.returncode == 1
    assert "no CUDA GPU" in proc.stderr and "GSPO_ALLOW_CPU=1" in proc.stderr
    assert f"no model folder at MODEL_PATH={tmp_path / 'no-model'}" in proc.stderr
    assert "BytedTsinghua-SIA/DAPO-Math-17k" in proc.stderr and "HuggingFaceH4/MATH-500" in proc.stderr
    assert importlib.util.find_spec("vllm") or "vLLM is not installed" in proc.stderr
    assert list(tmp_path.iterdir()) == []  # nothing prepared, nothing trained


def test_overrides_resolve_under_the_schema_and_user_args_win(tmp_path):
    """The script's command line, run as `gspo validate` (a stand-in interpreter swaps the subcommand)."""
    train = prepare_math(SMOKE_DATA / "math_smoke_train.jsonl", "math", tmp_path / "data", split="train")["path"]
    prepare_math(SMOKE_DATA / "math_smoke_test.jsonl", "math500", tmp_path / "data", split="test")
    tiny_model_dir = tmp_path / "model"
    subprocess.run([sys.executable, str(REPO / "recipe" / "gspo" / "build_tiny_model.py"), train, str(tiny_model_dir)],
                   check=True, capture_output=True, timeout=300)
    stand_in = tmp_path / "python"
    stand_in.write_text(f'#!/bin/bash\nif [ "$1 $2 $3" = "-m gspo train" ]; then shift 3; '
                        f'exec {sys.executable} -m gspo validate "$@"; fi\nexec {sys.executable} "$@"\n')
    stand_in.chmod(0o755)
    proc = run(SCRIPT, tmp_path, "trainer.test_freq=7", "data.train_batch_size=16", "data.gen_batch_size=16",
               GSPO_ALLOW_CPU="1", PYTHON=str(stand_in), MODEL_PATH=str(tiny_model_dir),
               DATA_DIR=str(tmp_path / "data"), OUTPUT_DIR=str(tmp_path / "run"), NGPUS="4", NNODES="1",
               PYTHONPATH=vllm_on_path(tmp_path))
    assert proc.returncode == 0, proc.stderr
    resolved_yaml, _, report = proc.stdout.rstrip().rpartition("\n")
    cfg = yaml.safe_load(resolved_yaml)
    actor = cfg["actor_rollout_ref"]["actor"]
    assert report.startswith("ok: model") and "16 train prompts" in report and "6 val prompts" in report
    assert actor["policy_loss"]["loss_mode"] == "gspo" and (actor["clip_ratio_low"], actor["clip_ratio_high"]) == (
        3e-4, 4e-4)
    assert (cfg["data"]["max_prompt_length"], cfg["data"]["max_response_length"]) == (1024, 3072)
    assert cfg["reward_model"]["on_error"] == "zero" and cfg["reward_model"]["overlong_buffer"]["len"] == 512
    assert cfg["algorithm"]["filter_groups"]["enable"] is True
    assert cfg["actor_rollout_ref"]["rollout"]["name"] == "vllm"
    assert cfg["algorithm"]["rollout_correction"]["rollout_is"] == "geometric"
    assert cfg["trainer"]["test_freq"] == 7 and cfg["data"]["train_batch_size"] == 16  # appended key=value wins
    assert cfg["trainer"]["n_gpus_per_node"] == 4


def test_tiny_script_end_to_end(tmp_path):
    """Converter + tiny model fitted to box answers + train (1 step) + eval (2 prompts x 4) + report on the
    hand-written files (~2 min on a busy 2-core machine)."""
    proc = run(SCRIPT_TINY, tmp_path, "trainer.val_before_train=false", timeout=900, OUTPUT_DIR=str(tmp_path / "out"),
               TINY_STEPS="1", TINY_EVAL_PROMPTS="2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = tmp_path / "out"
    assert "train.parquet: 16 rows" in proc.stdout and "test.parquet: 6 rows" in proc.stdout
    metrics = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1]
    assert metrics[0]["reward/extra/has_answer"] > 0  # the fitted model boxes answers; math-verify checked them
    summary = json.loads((out / "run" / "eval" / "summary.json").read_text())
    assert summary["num_prompts"] == 2 and summary["n"] == 4 and "maj@4" in summary and "pass@4" in summary
    assert (out / "run" / "final_model" / "config.json").is_file()
