"""The GPU acceptance checks that train through the product's own entry points: a bf16 step with its MFU
(benchmarks/gpu_step.py), LoRA on a bf16 base (the Trainer), the 3B recipe's shapes (its shell script) and verl's
GSPO example line (`gspo train`). Each returns a :class:`Verdict`; on CPU (a dry run) they run with tiny shapes."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

from _acceptance_assets import (
    CheckContext,
    Verdict,
    build_addition_model,
    expect_finite_updates,
    is_finite,
    read_metrics,
    write_addition_data,
    write_parity_reward,
)

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipe" / "gspo"
# The recipe's shapes on CUDA (recipe/gspo/gspo_dynamic_sampling_3b_math.sh); on CPU a dry run shrinks them.
RECIPE_CPU_SHAPES = ["data.max_response_length=4", "data.train_batch_size=2", "data.gen_batch_size=4",
                     "actor_rollout_ref.rollout.n=4", "actor_rollout_ref.actor.ppo_mini_batch_size=2",
                     "actor_rollout_ref.rollout.micro_batch_size=16", "trainer.device=cpu"]


def child_env() -> dict[str, str]:
    """This process's environment with the repository first on PYTHONPATH (the scripts import gspo)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def check_bf16_step(ctx: CheckContext) -> Verdict:
    """Two training steps of benchmarks/gpu_step.py's ~0.5B model with the hf engine: the update runs under bf16
    autocast, its loss and gradient norm are finite, and its MFU (second step) lies in (0, 1]."""
    command = [sys.executable, str(ROOT / "benchmarks" / "gpu_step.py"), "--engines", "hf", "--steps", "2",
               *(["--peak-tflops", str(ctx.peak_tflops)] if ctx.peak_tflops else [])]
    proc = subprocess.run(command, capture_output=True, text=True, env=child_env())
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    row = json.loads(lines[-1]) if lines else {}
    verdict = Verdict(row)
    if not verdict.expect(proc.returncode == 0 and bool(row) and "error" not in row,
                          f"gpu_step.py exited {proc.returncode}: {row.get('error') or proc.stderr[-500:]}"):
        return verdict
    verdict.expect(row["autocast"] == "torch.bfloat16", f"the update ran under autocast {row['autocast']}, not bf16")
    verdict.expect(is_finite(row["pg_loss"]) and is_finite(row["grad_norm"]),
                   f"pg_loss {row['pg_loss']}, grad_norm {row['grad_norm']} (expected finite)")
    if row["mfu"] is None:
        verdict.measured["note"] = f"no bf16 peak known for {row['device']!r}: pass --peak-tflops for the MFU"
    else:
        verdict.expect(0 < row["mfu"] <= 1, f"MFU {row['mfu']} outside (0, 1]: the peak or the timing is wrong")
    return verdict


def check_lora_bf16(ctx: CheckContext) -> Verdict:
    """Two steps of LoRA (rank 8, all linear layers) on a checkpoint stored in bf16: only the fp32 adapters train,
    the frozen base stays bf16 on CUDA (fp32 on CPU, by design), losses are finite, and the run exports a PEFT
    adapter and a merged model in the checkpoint's bf16."""
    import torch

    from gspo.config import load_config
    from gspo.model.folder import stored_dtype
    from gspo.trainer import Trainer

    model = build_addition_model(ctx.folder / "model", ctx.device, dtype="bfloat16")
    train, val = write_addition_data(ctx.folder / "data")
    out = ctx.folder / "run"
    trainer = Trainer(load_config(None, [
        f"actor_rollout_ref.model.path={model}", f"data.train_files=[{train}]", f"data.val_files=[{val}]",
        f"custom_reward_function.path={write_parity_reward(ctx.folder)}", f"trainer.default_local_dir={out}",
        "actor_rollout_ref.model.lora_rank=8", "actor_rollout_ref.model.lora_alpha=16",
        "actor_rollout_ref.actor.optim.lr=1e-3", "data.train_batch_size=4", "data.gen_batch_size=8",
        "actor_rollout_ref.rollout.n=4", "actor_rollout_ref.actor.ppo_mini_batch_size=2",
        "data.max_response_length=8", "trainer.total_training_steps=2", "trainer.val_before_train=false",
        "trainer.test_freq=-1", "trainer.logger=[]", f"trainer.device={ctx.device}", "trainer.resume_mode=disable"],
        preset="addition"))
    trainer.fit()
    params = list(trainer.model.parameters())
    base_dtypes = sorted({str(p.dtype) for p in params if not p.requires_grad})
    adapter_dtypes = sorted({str(p.dtype) for p in params if p.requires_grad})
    verdict = Verdict({"base_dtypes": base_dtypes, "adapter_dtypes": adapter_dtypes,
                       "trainable_params": sum(p.numel() for p in params if p.requires_grad),
                       "base_params": sum(p.numel() for p in params if not p.requires_grad),
                       "peak_torch_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3)
                       if ctx.on_cuda else None})
    expected_base = "torch.bfloat16" if ctx.on_cuda else "torch.float32"
    verdict.expect(base_dtypes == [expected_base], f"frozen base in {base_dtypes}, expected {expected_base}")
    verdict.expect(adapter_dtypes == ["torch.float32"], f"adapters in {adapter_dtypes}, expected torch.float32")
    verdict.expect(0 < verdict.measured["trainable_params"] < verdict.measured["base_params"],
                   "only the adapters may train")
    expect_finite_updates(verdict, read_metrics(out), steps=2)
    verdict.expect((out / "final_adapter" / "adapter_config.json").is_file(), "no final_adapter/adapter_config.json")
    exported = stored_dtype(out / "final_model") if (out / "final_model").is_dir() else None
    verdict.measured["final_model_dtype"] = str(exported)
    verdict.expect(exported == torch.bfloat16, f"final_model stored in {exported}, expected the base's bf16")
    return verdict


def check_recipe_3b_shapes(ctx: CheckContext) -> Verdict:
    """recipe/gspo/gspo_dynamic_sampling_3b_math.sh as written (512 + 1024 tokens, 32 of 48 prompts x 16
    responses, mini-batches of 8, micro-batches of 4, dynamic sampling) for 2 steps on the recipe's tiny random
    Qwen2 (recipe/gspo/build_tiny_model.py) and synthetic GSM8K-format data, with a reward that splits groups."""
    from gspo.data.gsm8k import prepare_gsm8k
    from tests.gsm8k_fixture import write_gsm8k_fixture

    sys.path.insert(0, str(RECIPE))
    import build_tiny_model

    data, model, out = ctx.folder / "data", ctx.folder / "model", ctx.folder / "run"
    prepare_gsm8k(write_gsm8k_fixture(ctx.folder / "raw", num_train=128, num_test=8), data)
    build_tiny_model.main(str(data / "train.parquet"), str(model), 0)
    # The recipe generates with vLLM; where vLLM cannot run (no CUDA, or not installed) its shapes run on hf.
    engine = "vllm" if ctx.on_cuda and importlib.util.find_spec("vllm") is not None else "hf"
    env = {**child_env(), "MODEL_PATH": str(model), "DATA_DIR": str(data), "OUTPUT_DIR": str(out), "NGPUS": "1",
           "NNODES": "1", "PYTHON": sys.executable, "ROLLOUT_ENGINE": engine,
           **({} if ctx.on_cuda else {"GSPO_ALLOW_CPU": "1"})}
    overrides = ["trainer.total_training_steps=2", f"custom_reward_function.path={write_parity_reward(ctx.folder)}",
                 *([] if ctx.on_cuda else RECIPE_CPU_SHAPES)]
    proc = subprocess.run(["bash", str(RECIPE / "gspo_dynamic_sampling_3b_math.sh"), *overrides], cwd=ctx.folder,
                          capture_output=True, text=True, env=env)
    rows = read_metrics(out)
    verdict = Verdict({"engine": engine, "shapes": _resolved_shapes(out / "config.yaml")})
    if not verdict.expect(proc.returncode == 0, f"the recipe exited {proc.returncode}: {proc.stderr[-800:]}"):
        return verdict
    expect_finite_updates(verdict, rows, steps=2)
    last = rows[-1]
    verdict.measured.update({key: last.get(key) for key in ("timing/step", "timing/gen", "timing/update",
                                                             "response_length/mean", "train/num_gen_batches",
                                                             "perf/gen_tokens_per_s")})
    verdict.expect((out / "final_model" / "config.json").is_file(), "no final_model/config.json")
    return verdict


def _resolved_shapes(config_file: Path) -> dict:
    """The batch and sequence shapes the run resolved (its config.yaml), or {} before it wrote one."""
    import yaml

    if not config_file.is_file():
        return {}
    cfg = yaml.safe_load(config_file.read_text())
    actor, rollout, data = cfg["actor_rollout_ref"]["actor"], cfg["actor_rollout_ref"]["rollout"], cfg["data"]
    return {"max_prompt_length": data["max_prompt_length"], "max_response_length": data["max_response_length"],
            "train_batch_size": data["train_batch_size"], "gen_batch_size": data["gen_batch_size"],
            "n": rollout["n"], "ppo_mini_batch_size": actor["ppo_mini_batch_size"],
            "ppo_micro_batch_size_per_gpu": actor["ppo_micro_batch_size_per_gpu"]}


def verl_engine_overrides(on_cuda: bool) -> tuple[str, list[str]]:
    """The engine keys of verl's line laid out as tests/test_verl_gspo_command_line.ENGINE_OVERRIDES: vLLM with
    the script's keys (memory share scaled down) on CUDA when vLLM is installed, else the hf engine."""
    import importlib.util

    from tests.test_verl_gspo_command_line import ENGINE_OVERRIDES, MAX_PROMPT, MAX_RESPONSE

    if not on_cuda or importlib.util.find_spec("vllm") is None:
        return "hf", ENGINE_OVERRIDES
    key = "actor_rollout_ref.rollout."
    return "vllm", [f"{key}name=vllm", f"{key}mode=async", f"{key}gpu_memory_utilization=0.3",
                    f"{key}tensor_model_parallel_size=1", f"{key}enable_chunked_prefill=true",
                    f"{key}max_num_batched_tokens={MAX_PROMPT + MAX_RESPONSE}"]  # as the script sets it


def check_verl_gspo_line(ctx: CheckContext) -> Verdict:
    """verl's GSPO example (examples/gspo_trainer/test_gspo_3b_math.sh, every override in its order, at its batch
    shape of 512 prompts x 16 responses with the response length cut, as in tests/test_verl_gspo_command_line.py)
    for 1 step through `gspo train` in this process: parameter and optimizer offload, dynamic batch sizes, gradient
    and entropy checkpointing, on the device at hand."""
    from gspo.cli import main
    from tests.test_verl_gspo_command_line import CKPTS_DIR, verl_gspo_overrides

    model = build_addition_model(ctx.folder / "model", ctx.device)
    train, val = write_addition_data(ctx.folder / "data", num_train=600)  # the line draws 512 prompts per step
    engine, engine_overrides = verl_engine_overrides(ctx.on_cuda)
    overrides = [*verl_gspo_overrides(model, train, val, '["console"]', engine=engine_overrides),
                 f"custom_reward_function.path={write_parity_reward(ctx.folder)}", f"trainer.device={ctx.device}",
                 "trainer.total_training_steps=1"]
    os.chdir(ctx.folder)  # verl's layout: checkpoints/<project_name>/<experiment_name> under the working folder
    exit_code = main(["train", *overrides])
    run = ctx.folder / CKPTS_DIR
    verdict = Verdict({"engine": engine, "exit_code": exit_code})
    if engine == "hf" and ctx.on_cuda:
        verdict.measured["note"] = "vLLM is not installed, so the hf engine ran (pip install -e '.[vllm]')"
    if verdict.expect(exit_code == 0, f"gspo train exited {exit_code}"):
        expect_finite_updates(verdict, read_metrics(run), steps=1)
        verdict.expect((run / "final_model" / "config.json").is_file(), "no final_model/config.json")
    return verdict
