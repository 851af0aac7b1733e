"""The GPU acceptance checks of what only a GPU has: FSDP2 over NCCL and vLLM's sleep / weight push / wake cycle.
Each returns a :class:`Verdict`; both need CUDA in the acceptance run (the FSDP2 one also runs on gloo, for its
test)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from _acceptance_assets import (
    CheckContext,
    Verdict,
    build_addition_model,
    expect_finite_updates,
    is_finite,
    write_addition_data,
    write_parity_reward,
)
from _runner import run_gspo_train

SLEEP_FREES_AT_LEAST = 0.5  # of what the engine holds awake (KV cache + weights); level 1 frees nearly all of it
GROWTH_ALLOWED_GIB = 0.5  # device memory after the third generate may exceed the first's by this much
SAME_TOKENS_AT_LEAST = 0.9  # of the prompts whose greedy tokens repeat when the same weights come back
# ~180M parameters (365 MB in bf16): weights woken twice, or a copy kept per push, would show past the growth
# allowed; head_dim 128 for vLLM's attention kernels.
VLLM_MODEL_DIMS = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=12, num_attention_heads=8,
                       num_key_value_heads=2, max_position_embeddings=128)


# ---------------------------------------------------------------------------------------------------- FSDP2
def check_fsdp2_nccl(ctx: CheckContext) -> Verdict:
    """With 2 GPUs: `gspo train` on 2 processes (torchrun, NCCL, FSDP2), 2 steps. With 1: the trainer's FSDP2
    pieces in a 1-rank NCCL process group (a 1-process run does not shard), as :func:`sharded_updates` says."""
    import torch

    if ctx.on_cuda and torch.cuda.device_count() >= 2:
        return _two_processes(ctx, torch.cuda.device_count())
    return _one_rank(ctx)


def _two_processes(ctx: CheckContext, num_gpus: int) -> Verdict:
    model = build_addition_model(ctx.folder / "model", ctx.device)
    train, val = write_addition_data(ctx.folder / "data")
    run = run_gspo_train(ctx.folder / "run", [
        "--preset", "addition", f"actor_rollout_ref.model.path={model}", f"data.train_files=[{train}]",
        f"data.val_files=[{val}]",
        f"custom_reward_function.path={write_parity_reward(ctx.folder)}", "trainer.n_gpus_per_node=2",
        "trainer.device=cuda", "trainer.total_training_steps=2", "data.train_batch_size=4", "data.gen_batch_size=8",
        "actor_rollout_ref.rollout.n=4", "actor_rollout_ref.actor.ppo_mini_batch_size=2",
        "data.max_response_length=8", "trainer.val_before_train=false", "trainer.logger=[]"])
    verdict = Verdict({"mode": f"2 processes (gspo train under torchrun, NCCL; {num_gpus} GPUs visible)",
                       "wall_s": round(run.wall_s, 1)})
    if verdict.expect(run.exit_code == 0, f"gspo train exited {run.exit_code}: {run.stderr_tail[-800:]}"):
        expect_finite_updates(verdict, run.rows, steps=2)
    return verdict


def _one_rank(ctx: CheckContext) -> Verdict:
    import torch
    import torch.distributed as dist

    model = build_addition_model(ctx.folder / "model", ctx.device)
    device = torch.device("cuda", 0) if ctx.on_cuda else torch.device("cpu")
    if ctx.on_cuda:
        torch.cuda.set_device(device)
    # The trainer's backends (gspo.distributed.init_distributed): CUDA tensors over NCCL, host values over gloo.
    dist.init_process_group("cpu:gloo,cuda:nccl" if ctx.on_cuda else "gloo", store=dist.HashStore(), rank=0,
                            world_size=1)
    try:
        verdict = Verdict({"mode": "1 rank in an NCCL process group (one GPU)" if ctx.on_cuda
                           else "1 rank in a gloo process group (CPU)", "backend": str(dist.get_backend())})
        for offload in (False, True) if ctx.on_cuda else (False,):
            name = "cpu_offload" if offload else "on_device"
            verdict.measured[name] = sharded_updates(model, device, offload, verdict)
        total = torch.ones(4, device=device)
        dist.all_reduce(total)
        verdict.expect(total.tolist() == [1.0] * 4, f"all_reduce over 1 rank gave {total.tolist()}")
    finally:
        dist.destroy_process_group()
    return verdict


def sharded_updates(model_dir: Path, device, cpu_offload: bool, verdict: Verdict, steps: int = 4) -> dict:
    """``fully_shard`` the model as the trainer does (bf16 compute on CUDA), take ``steps`` AdamW steps on one
    fixed batch, then gather the full weights as the rollout engine's push does: every parameter is sharded, the
    losses are finite and fall, and the gathered weights keep every name and shape."""
    import torch
    from torch.distributed.tensor import DTensor

    from gspo.model.loading import load_causal_lm
    from gspo.trainer.parallel import full_grad_norm, iter_full_parameters, shard_model

    model = load_causal_lm(str(model_dir), device)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters(remove_duplicate=False)}
    shard_model(model, world_size=1, bf16=device.type == "cuda", cpu_offload=cpu_offload)
    verdict.expect(all(isinstance(p, DTensor) for p in model.parameters()), "a parameter was left unsharded")
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    ids = torch.randint(3, model.config.vocab_size, (4, 16), generator=torch.Generator().manual_seed(0)).to(device)
    losses, norms = [], []
    for _ in range(steps):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        norms.append(full_grad_norm(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)))
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    gathered = {name: tuple(tensor.shape) for name, tensor in iter_full_parameters(model)}
    where = "with CPU offload" if cpu_offload else "on the device"
    verdict.expect(all(map(is_finite, losses + norms)), f"{where}: non-finite loss or grad norm {losses} {norms}")
    verdict.expect(losses[-1] < losses[0], f"{where}: the loss did not fall over {steps} steps: {losses}")
    verdict.expect(gathered == shapes, f"{where}: gathered weights differ in names or shapes from the model's")
    return {"losses": [round(x, 4) for x in losses], "grad_norms": [round(x, 4) for x in norms],
            "gathered_tensors": len(gathered)}


# ------------------------------------------------------------------------------------------------ vLLM cycles
def check_vllm_cycles(ctx: CheckContext) -> Verdict:
    """The vllm engine (gspo/rollout/vllm_engine.py, sleep mode on) through three cycles of release_memory (sleep)
    -> update_weights (push) -> resume_memory (wake) -> generate (greedy), pushing weights A, B, A; the device's
    used memory is read after each call. Judged by :func:`judge_cycles`."""
    if importlib.util.find_spec("vllm") is None:
        return Verdict(problems=["vLLM is not installed: pip install -e '.[vllm]'"])
    import torch
    from transformers import AutoConfig, Qwen2ForCausalLM

    from gspo.config import RolloutConfig
    from gspo.model.loading import load_causal_lm
    from gspo.rollout import EngineSpec, SamplingParams, build_rollout_engine

    folder = build_addition_model(ctx.folder / "model", "cuda", dtype="bfloat16", **VLLM_MODEL_DIMS)
    device = torch.device("cuda")
    weights_a = load_causal_lm(str(folder), device, dtype=torch.bfloat16)
    torch.manual_seed(1)
    weights_b = Qwen2ForCausalLM(AutoConfig.from_pretrained(folder)).to(device, torch.bfloat16)
    before_build = used_gib()
    engine = build_rollout_engine(EngineSpec(
        model_path=folder, policy=lambda: weights_a, pad_token_id=0, eos_token_ids=[], device=device,
        rollout=RolloutConfig(name="vllm", gpu_memory_utilization=0.3, free_cache_engine=True),
        max_prompt_length=32, max_response_length=16))
    after_build = used_gib()
    generator = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, weights_a.config.vocab_size, (8 + i % 24,), generator=generator).tolist()
               for i in range(32)]
    readings, tokens = run_cycles(engine, [weights_a, weights_b, weights_a], prompts,
                                  SamplingParams(n=1, do_sample=False, max_new_tokens=16), device, used_gib)
    return judge_cycles(after_build - before_build, after_build, readings, tokens)


def run_cycles(engine, policies: list, prompts: list[list[int]], params, device, read_used_gib
               ) -> tuple[list[dict], list[list[list[int]]]]:
    """One release_memory -> update_weights -> resume_memory -> generate cycle per policy, pushing its weights as
    the trainer does (:func:`gspo.trainer.parallel.iter_full_parameters`); the used memory after each call and
    the response ids of each generate."""
    from gspo.trainer.parallel import iter_full_parameters

    readings, tokens = [], []
    for policy in policies:
        reading = {}
        engine.release_memory()
        reading["after_sleep"] = read_used_gib()
        engine.update_weights(iter_full_parameters(policy))
        reading["after_push"] = read_used_gib()
        engine.resume_memory()
        reading["after_wake"] = read_used_gib()
        generation = engine.generate(prompts, params)
        reading["after_generate"] = read_used_gib()
        readings.append(reading)
        tokens.append(generation.response_ids.tolist())
    return readings, tokens


def used_gib() -> float:
    """Device memory in use (GiB, every allocator and process on it), after the queued work finished."""
    import torch

    torch.cuda.synchronize()
    free, total = torch.cuda.mem_get_info()
    return round((total - free) / 2**30, 3)


def judge_cycles(engine_gib: float, after_build: float, readings: list[dict], tokens: list[list[list[int]]]
                 ) -> Verdict:
    """Pass conditions of three sleep / push / wake / generate cycles pushing weights A, B, A.

    ``engine_gib``: device memory the engine took when built (awake); ``readings[i]``: used GiB after each call of
    cycle i; ``tokens[i]``: its greedy response ids per prompt. Each sleep frees at least ``SLEEP_FREES_AT_LEAST``
    of ``engine_gib`` from the moment before it; the third generate ends within ``GROWTH_ALLOWED_GIB`` of the first
    (no leak per cycle); B's tokens differ from A's on most prompts (the push took effect) and A's come back on at
    least ``SAME_TOKENS_AT_LEAST`` of them.
    """
    woken = [(r["after_push"] - r["after_sleep"], r["after_wake"] - r["after_push"]) for r in readings]
    verdict = Verdict({"engine_gib": round(engine_gib, 3), "cycles": readings,
                       "push_woke_gib": [round(w, 3) for w, _ in woken],  # the weights (the KV cache sleeps on)
                       "wake_took_gib": [round(k, 3) for _, k in woken]})  # the KV cache
    awake = after_build
    for number, reading in enumerate(readings, start=1):
        freed = awake - reading["after_sleep"]
        verdict.expect(freed >= SLEEP_FREES_AT_LEAST * engine_gib,
                       f"cycle {number}: sleep freed {freed:.2f} GiB of the engine's {engine_gib:.2f} GiB")
        awake = reading["after_generate"]
    growth = readings[-1]["after_generate"] - readings[0]["after_generate"]
    verdict.expect(growth <= GROWTH_ALLOWED_GIB, f"device memory grew {growth:.2f} GiB from cycle 1 to 3")
    first, pushed_b, back_to_a = tokens
    changed = sum(a != b for a, b in zip(first, pushed_b)) / len(first)
    repeated = sum(a == c for a, c in zip(first, back_to_a)) / len(first)
    verdict.measured.update(prompts_changed_by_push=changed, prompts_repeated_after_push_back=repeated)
    verdict.expect(changed >= 0.5, f"weights B changed the greedy tokens of only {changed:.0%} of the prompts")
    verdict.expect(repeated >= SAME_TOKENS_AT_LEAST,
                   f"pushing A back repeated the greedy tokens of only {repeated:.0%} of the prompts")
    return verdict
