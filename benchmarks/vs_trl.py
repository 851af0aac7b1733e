"""Side-by-side speed benchmark: gspo's Trainer vs TRL's GRPOTrainer doing GSPO, on this machine's CPU.

Both trainers get the same model folder (same config, same initial weights, same locally built character
tokenizer), the same embedded addition prompts and exact-sum reward, and the same step shape:

    P prompts x n samples per generation batch, max R response tokens, lr, AdamW, grad clip 1.0, constant LR,
    GSPO sequence-level ratio clipped to [1 - 3e-4, 1 + 4e-4], seq-mean-token-mean loss, no KL (beta = 0),
    and 2 optimizer steps per generation batch (so the second step is off-policy and clipping is active).

gspo runs without dynamic sampling (``algorithm.filter_groups.enable=false``): one generation batch per step, so
this measures the engine, not the sampling strategy. Each trainer runs in a fresh subprocess (peak RSS is its
own ``VmHWM``), does W warm-up steps and then K timed steps; one "step" = one generation batch + its 2 optimizer
steps on both sides. Validation, checkpointing and logging to disk are not part of the timed step on either side.

Prints ONE JSON line: per size, seconds per step for each trainer, the ratio ours / TRL, phase
times, generated and trained tokens/s, peak RSS, mean reward, plus settings and the machine.

    pip install -e '.[bench]'
    python benchmarks/vs_trl.py --wait-idle 300                  # both sizes (small ~0.6M, medium ~20M params)
    python benchmarks/vs_trl.py --fixed-length --wait-idle 300   # equal token counts on both sides
    python benchmarks/vs_trl.py --size small --steps 10 --threads 1
    python benchmarks/vs_trl.py --repeats 3 --wait-idle 60      # 3 alternating pairs, median ratio

On a shared machine, other processes' bursts slow multi-threaded torch many times over (OpenMP workers spin-wait
for a descheduled peer). Each step therefore records how many cores other processes used meanwhile
(``other_load_cores_each``); the headline ``ratio_ours_over_trl`` uses only clean steps when there are enough
(``ratio_basis``), and ``--wait-idle`` waits for a quiet machine before each trainer starts.

--fixed-length makes every response exactly R tokens on both sides, so both generate and train the same
number of tokens: generation does not stop at EOS and EOS does not end the trained response (EOS can still be
sampled; it is dropped when decoding, as usual, so the reward stays the same function of the text). gspo's
config key ``actor_rollout_ref.rollout.ignore_eos=true`` does this (the engine then stops at no EOS and its
response mask covers all R tokens); TRL gets the same through
``generation_kwargs={"eos_token_id": []}`` plus ``trainer.eos_token_ids = []`` (its completion mask). gspo is
used through its public API only (config keys, ``Trainer.train_step`` and the metrics it returns). Without the
flag both stop at EOS and the token counts differ with what each samples.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# A timed step is "clean" when other processes used fewer cores than this on average during it. Even short bursts
# of other work slow multi-threaded torch a lot (its OpenMP workers spin-wait for a descheduled peer), so keep it low.
CLEAN_MAX_OTHER_CORES = 0.1

# ~20M-parameter Qwen2 on the same 15-token character vocabulary (the "small" size is the shipped warm start).
MEDIUM_MODEL = dict(hidden_size=512, num_hidden_layers=6, num_attention_heads=8, num_key_value_heads=4,
                    intermediate_size=1664)


# ------------------------------------------------------------------------------------------------------- helpers
def _peak_rss_mib() -> float:
    """This process's peak resident set size (VmHWM), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _system_busy_s() -> float:
    """CPU seconds all cores have spent busy since boot (/proc/stat), to measure other load during a run."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return float("nan")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def wait_until_idle(timeout_s: float, max_busy_cores: float = 0.3, quiet_s: float = 5.0) -> float:
    """Wait (up to ``timeout_s``) until the machine has been idle for ``quiet_s`` seconds; returns seconds waited."""
    start = time.perf_counter()
    quiet_since = None
    while time.perf_counter() - start < timeout_s:
        busy, t0 = _system_busy_s(), time.perf_counter()
        time.sleep(1.0)
        cores = (_system_busy_s() - busy) / (time.perf_counter() - t0)
        if cores <= max_busy_cores:
            quiet_since = quiet_since or t0
            if time.perf_counter() - quiet_since >= quiet_s:
                break
        else:
            quiet_since = None
    return time.perf_counter() - start


def _param_checksum(model) -> list[float]:
    """(number of parameters, sum, sum of squares): the two trainers must start from identical weights."""
    import torch
    with torch.no_grad():
        flat = torch.cat([p.detach().double().flatten() for p in model.parameters()])
    return [float(flat.numel()), round(float(flat.sum()), 6), round(float((flat * flat).sum()), 6)]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _summarise(steps: list[dict], warmup: int) -> dict:
    """Per-step records -> timed means (steps after ``warmup``)."""
    timed = steps[warmup:]
    sec = _mean([s["step_s"] for s in timed])
    # Steps during which other processes kept < CLEAN_MAX_OTHER_CORES busy (the machine may be shared).
    other = [(s["sys_busy_s"] - s["cpu_s"]) / s["step_s"] for s in timed]
    clean = [s for s, o in zip(timed, other) if o < CLEAN_MAX_OTHER_CORES]
    ordered = sorted(s["step_s"] for s in timed)
    median = (ordered[(len(ordered) - 1) // 2] + ordered[len(ordered) // 2]) / 2
    gen_s = _mean([s["gen_s"] for s in timed])
    update_s = _mean([s["update_s"] for s in timed])
    gen_tokens = _mean([s["generated_tokens"] for s in timed])
    trained_tokens = _mean([s["trained_tokens"] for s in timed])
    return {
        "sec_per_step": round(sec, 4),
        "sec_per_step_median": round(median, 4),
        "sec_per_step_clean": round(_mean([s["step_s"] for s in clean]), 4) if clean else None,
        "clean_steps": len(clean),
        "sec_per_step_each": [round(s["step_s"], 3) for s in timed],
        # process CPU seconds (all threads) per step: less sensitive than wall time to other load on the machine
        "cpu_s_per_step": round(_mean([s["cpu_s"] for s in timed]), 4),
        # cores kept busy by OTHER processes during the timed steps (system busy - this process); ~0 = clean run
        "other_load_cores": round(sum(s["sys_busy_s"] - s["cpu_s"] for s in timed)
                                  / sum(s["step_s"] for s in timed), 2),
        "other_load_cores_each": [round(o, 2) for o in other],
        "phase_s": {k: round(_mean([s[k] for s in timed]), 4)
                    for k in ("gen_s", "reward_s", "old_log_prob_s", "update_s", "other_s")},
        "generated_tokens_per_step": round(gen_tokens, 1),
        "trained_tokens_per_step": round(trained_tokens, 1),
        # tokens / seconds of the phase that handles them (gen: rollout; trained: the 2 optimizer steps)...
        "gen_tokens_per_s": round(gen_tokens / gen_s, 1),
        "train_tokens_per_s": round(trained_tokens / update_s, 1),
        # ...and end to end over the whole step.
        "step_gen_tokens_per_s": round(gen_tokens / sec, 1),
        "step_trained_tokens_per_s": round(trained_tokens / sec, 1),
        "mean_response_length": round(_mean([s["mean_response_length"] for s in timed]), 3),
        "reward_first_step": round(steps[0]["reward_mean"], 4),
        "reward_last_step": round(steps[-1]["reward_mean"], 4),
        "reward_timed_mean": round(_mean([s["reward_mean"] for s in timed]), 4),
    }


# ----------------------------------------------------------------------------------------------- ours (gspo)
def run_ours(opts: argparse.Namespace) -> dict:
    import torch

    from gspo.config import load_config
    from gspo.trainer.trainer import Trainer

    torch.set_num_threads(opts.threads)
    total = opts.warmup + opts.steps
    overrides = [
        f"actor_rollout_ref.model.path={opts.model}",
        "data.val_files=[]",
        f"data.train_batch_size={opts.prompts}",
        f"data.gen_batch_size={opts.prompts}",
        f"data.max_response_length={opts.max_response_length}",
        f"actor_rollout_ref.rollout.n={opts.n}",
        "actor_rollout_ref.rollout.temperature=1.0",
        f"actor_rollout_ref.rollout.micro_batch_size={opts.prompts * opts.n}",  # one generate() call, as TRL
        "actor_rollout_ref.actor.policy_loss.loss_mode=gspo",
        "actor_rollout_ref.actor.loss_agg_mode=seq-mean-token-mean",
        "actor_rollout_ref.actor.clip_ratio_low=0.0003",
        "actor_rollout_ref.actor.clip_ratio_high=0.0004",
        # 2 optimizer steps per generation batch, one forward/backward of P/2 * n sequences each (as TRL below).
        f"actor_rollout_ref.actor.ppo_mini_batch_size={opts.prompts // 2}",
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={opts.prompts // 2 * opts.n}",
        "actor_rollout_ref.actor.ppo_epochs=1",
        "actor_rollout_ref.actor.use_kl_loss=false",
        "actor_rollout_ref.actor.entropy_coeff=0.0",
        "actor_rollout_ref.actor.grad_clip=1.0",
        f"actor_rollout_ref.actor.optim.lr={opts.lr}",
        "algorithm.filter_groups.enable=false",
        f"trainer.total_training_steps={total}",
        f"trainer.default_local_dir={opts.workdir}/ours",
        "trainer.resume_mode=disable",
        "trainer.val_before_train=false",
        "trainer.device=cpu",
        f"trainer.seed={opts.seed}",
        *opts.ours_override,
    ]
    if opts.fixed_length:  # every response runs R tokens; EOS does not end it (see the module docstring)
        overrides.append("actor_rollout_ref.rollout.ignore_eos=true")
    trainer = Trainer(load_config(overrides=overrides, preset="addition"))  # the embedded task's settings
    checksum = _param_checksum(trainer.model)

    # Phases from the metrics train_step() returns (its public timings), nothing patched.
    steps = []
    for _ in range(total):
        start, cpu_start, sys_start = time.perf_counter(), time.process_time(), _system_busy_s()
        metrics = trainer.train_step()
        step_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
        phase = {"gen_s": metrics.get("timing/gen", 0.0), "reward_s": metrics.get("timing/reward", 0.0),
                 "old_log_prob_s": metrics.get("timing/old_log_prob", 0.0), "update_s": metrics["timing/update"],
                 "reward_mean": metrics["reward/all/score_mean"],
                 "generated_tokens": metrics["train/generated_tokens"],
                 "mean_response_length": metrics["response_length/mean"],
                 "trained_tokens": metrics["train/trained_tokens"], "num_updates": metrics["actor/num_updates"],
                 "clipfrac": metrics["actor/pg_clipfrac"], "sys_busy_s": _system_busy_s() - sys_start}
        known = phase["gen_s"] + phase["reward_s"] + phase["old_log_prob_s"] + phase["update_s"]
        steps.append({**phase, "step_s": step_s, "cpu_s": cpu_s, "other_s": step_s - known})
    result = _summarise(steps, opts.warmup)
    result.update(peak_rss_mib=round(_peak_rss_mib(), 1), init_param_checksum=checksum,
                  torch_threads=torch.get_num_threads(),
                  num_params=int(checksum[0]), optimizer_steps_per_step=int(steps[-1]["num_updates"]),
                  pg_clipfrac_timed_mean=round(_mean([s["clipfrac"] for s in steps[opts.warmup:]]), 5))
    return result


# ------------------------------------------------------------------------------------------------------- TRL
def run_trl(opts: argparse.Namespace) -> dict:
    for key, value in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                       "WANDB_DISABLED": "true", "WANDB_MODE": "disabled", "TRANSFORMERS_VERBOSITY": "error",
                       "DATASETS_VERBOSITY": "error", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
                       "TOKENIZERS_PARALLELISM": "false"}.items():
        os.environ.setdefault(key, value)
    import logging
    import warnings

    import torch
    from transformers import TrainerCallback
    try:
        from datasets import Dataset
        from trl import GRPOConfig, GRPOTrainer
    except ImportError as exc:
        raise SystemExit(f"{exc}: install the benchmark extras with  pip install -e '.[bench]'") from None

    from gspo.model.loading import load_causal_lm, load_tokenizer
    from gspo.tasks.addition import load_addition_rows

    warnings.filterwarnings("ignore")
    for name in ("trl", "transformers", "accelerate", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)
    torch.set_num_threads(opts.threads)

    total = opts.warmup + opts.steps
    tokenizer = load_tokenizer(opts.model)  # the same loader (and folder) gspo uses
    model = load_causal_lm(opts.model, torch.device("cpu"))
    checksum = _param_checksum(model)
    rows = [{"prompt": r["prompt"], "ground_truth": r["ground_truth"]} for r in load_addition_rows("train")]
    dataset = Dataset.from_list(rows)

    batch_rewards: list[float] = []
    reward_seconds: list[float] = []

    def addition_reward(completions, ground_truth, **kwargs) -> list[float]:
        """What gspo.rewards.addition_reward does: 1.0 for the exact (whitespace-stripped) sum, else 0.0."""
        start = time.perf_counter()
        scores = [1.0 if c.strip() == str(g).strip() else 0.0 for c, g in zip(completions, ground_truth)]
        batch_rewards.append(_mean(scores))
        reward_seconds.append(time.perf_counter() - start)
        return scores

    generation_kwargs = {"eos_token_id": []} if opts.fixed_length else None
    args = GRPOConfig(
        output_dir=f"{opts.workdir}/trl",
        # --- step shape. TRL counts per_device_train_batch_size in completions (sequences), not prompts.
        # One generation batch = per_device_train_batch_size * steps_per_generation = (P*n/2) * 2 = P*n rows
        # (P prompts x num_generations). The optimizer steps every gradient_accumulation_steps (=1) training
        # steps, so the 2 slices of a generation batch are 2 optimizer steps of P*n/2 sequences each, one
        # forward/backward each: exactly gspo's ppo_mini_batch_size=P/2 with micro-batch P*n/2. Because
        # gradient_accumulation_steps (1) is not a multiple of steps_per_generation * num_iterations (2), TRL
        # computes old_per_token_logps after generation (one no-grad forward, in chunks of
        # per_device_train_batch_size), as gspo does, so the second optimizer step is off-policy and clips.
        per_device_train_batch_size=opts.prompts * opts.n // 2,
        steps_per_generation=2,
        gradient_accumulation_steps=1,
        num_iterations=1,
        num_generations=opts.n,
        max_completion_length=opts.max_response_length,
        max_steps=2 * total,  # optimizer steps
        # --- GSPO loss: sequence-level ratio, per-sequence token-mean then mean over sequences (= gspo's
        # seq-mean-token-mean), clip [1-3e-4, 1+4e-4], no KL, group-std-normalised advantages.
        importance_sampling_level="sequence",
        loss_type="grpo",
        epsilon=3e-4,
        epsilon_high=4e-4,
        beta=0.0,
        scale_rewards="group",
        mask_truncated_completions=False,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        generation_kwargs=generation_kwargs,
        # --- optimizer: the same as gspo's fused torch.optim.AdamW (TRL's default too), constant LR, clip 1.0.
        learning_rate=opts.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        optim="adamw_torch_fused",
        weight_decay=0.0,
        max_grad_norm=1.0,
        # --- plain fp32 CPU, offline, quiet, nothing written.
        use_cpu=True,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,  # TRL's default is True; gspo does not checkpoint by default
        use_vllm=False,
        report_to="none",
        push_to_hub=False,
        save_strategy="no",
        eval_strategy="no",
        logging_steps=2,
        disable_tqdm=True,
        log_level="error",
        dataloader_num_workers=0,
        seed=opts.seed,
    )

    stamps: list[tuple] = []  # (optimizer step, wall, process CPU, system busy CPU) at the end of each

    class StepTimer(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            stamps.append((0, time.perf_counter(), time.process_time(), _system_busy_s()))

        def on_step_end(self, args, state, control, **kwargs):
            stamps.append((state.global_step, time.perf_counter(), time.process_time(), _system_busy_s()))

    trainer = GRPOTrainer(model=model, reward_funcs=addition_reward, args=args, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=[StepTimer()])
    if opts.fixed_length:
        trainer.eos_token_ids = []  # TRL's completion mask: no EOS ends a completion (see module docstring)

    # Phase timers around TRL's own methods (instance attributes; TRL's code is not changed).
    phases: list[dict] = []
    generate, generate_and_score = trainer._generate, trainer._generate_and_score_completions

    def timed_generate(*a, **kw):
        start = time.perf_counter()
        out = generate(*a, **kw)
        phases[-1]["gen_s"] = time.perf_counter() - start
        phases[-1]["generated_tokens"] = sum(len(ids) for ids in out[1])
        return out

    def timed_generate_and_score(*a, **kw):
        phases.append({})
        start = time.perf_counter()
        out = generate_and_score(*a, **kw)
        phases[-1]["gen_and_score_s"] = time.perf_counter() - start
        phases[-1]["trained_tokens"] = float(out["prompt_mask"].sum() + out["completion_mask"].sum())
        phases[-1]["mean_response_length"] = float(out["completion_mask"].sum(-1).float().mean())
        return out

    trainer._generate = timed_generate
    trainer._generate_and_score_completions = timed_generate_and_score
    trainer.train()

    at = {stamp[0]: stamp[1] for stamp in stamps}
    cpu_at = {stamp[0]: stamp[2] for stamp in stamps}
    sys_at = {stamp[0]: stamp[3] for stamp in stamps}
    steps = []
    for i in range(total):
        step_s = at[2 * (i + 1)] - at[2 * i]
        cpu_s = cpu_at[2 * (i + 1)] - cpu_at[2 * i]
        p = phases[i]
        rest = p["gen_and_score_s"] - p["gen_s"] - reward_seconds[i]  # old log-probs + advantages + bookkeeping
        steps.append({
            "step_s": step_s, "cpu_s": cpu_s, "sys_busy_s": sys_at[2 * (i + 1)] - sys_at[2 * i],
            "gen_s": p["gen_s"], "reward_s": reward_seconds[i], "old_log_prob_s": rest,
            # the 2 optimizer steps incl. the Trainer loop around them (dataloader, callbacks, logging)
            "update_s": step_s - p["gen_and_score_s"], "other_s": 0.0,
            "generated_tokens": p["generated_tokens"], "trained_tokens": p["trained_tokens"],
            "mean_response_length": p["mean_response_length"], "reward_mean": batch_rewards[i],
        })
    result = _summarise(steps, opts.warmup)
    clip = [row.get("clip_ratio/region_mean") for row in trainer.state.log_history
            if row.get("clip_ratio/region_mean") is not None]
    result.update(peak_rss_mib=round(_peak_rss_mib(), 1), init_param_checksum=checksum,
                  torch_threads=torch.get_num_threads(),  # accelerate must not have changed it
                  num_params=int(checksum[0]), optimizer_steps_per_step=trainer.state.global_step // total,
                  pg_clipfrac_timed_mean=round(_mean(clip[opts.warmup:]), 5) if clip else None)
    return result


# ---------------------------------------------------------------------------------------------------- parent
def build_model_folder(size: str, folder: Path, seed: int, max_len: int) -> str:
    """The model folder both trainers load: the shipped warm start, or a seeded random-init ~20M Qwen2."""
    from gspo.tasks.addition import ADDITION_ASSET_DIR
    if size == "small":
        return str(ADDITION_ASSET_DIR)
    import torch
    from transformers import GenerationConfig, Qwen2ForCausalLM

    from gspo.tasks.addition import build_addition_model_config, build_addition_tokenizer

    tokenizer = build_addition_tokenizer()
    config = build_addition_model_config(len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                         eos_token_id=tokenizer.eos_token_id,
                                         max_position_embeddings=max(32, max_len), **MEDIUM_MODEL)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id, do_sample=False)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return str(folder)


def _child(which: str, opts: argparse.Namespace, model: str, workdir: Path) -> dict:
    result_file = workdir / f"{which}.json"
    cmd = [sys.executable, __file__, "--_child", which, "--_model", model, "--_result", str(result_file),
           "--_workdir", str(workdir), "--prompts", str(opts.prompts), "--n", str(opts.n),
           "--max-response-length", str(opts.max_response_length), "--lr", str(opts.lr),
           "--warmup", str(opts.warmup), "--steps", str(opts.steps), "--threads", str(opts.threads),
           "--seed", str(opts.seed)] + (["--fixed-length"] if opts.fixed_length else []) \
        + [arg for override in opts.ours_override for arg in ("--ours-override", override)]
    env = {**os.environ, "OMP_NUM_THREADS": str(opts.threads), "MKL_NUM_THREADS": str(opts.threads)}
    waited = wait_until_idle(opts.wait_idle) if opts.wait_idle > 0 else 0.0
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0 or not result_file.exists():
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
        raise SystemExit(f"{which} run failed with exit code {proc.returncode}")
    result = json.loads(result_file.read_text())
    result["process_wall_s"] = round(time.perf_counter() - start, 1)
    # 1-minute load average before / after: well above 0 means other processes shared the cores (noisy timing)
    result["loadavg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    result["waited_for_idle_s"] = round(waited, 1)
    return result


def _machine() -> dict:
    import torch
    import transformers
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import trl
        trl_version = trl.__version__
    except ImportError:
        trl_version = None
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "transformers": transformers.__version__, "trl": trl_version}


def _git_state() -> str | None:
    repo = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "gspo"], cwd=repo,
                               capture_output=True, text=True).stdout.strip()
        return head + ("+dirty(gspo/)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def main(opts: argparse.Namespace) -> dict:
    sizes = ["small", "medium"] if opts.size == "both" else [opts.size]
    out = {"benchmark": "vs_trl", "machine": _machine(), "git": _git_state(),
           "settings": {"prompts_per_step": opts.prompts, "n": opts.n, "max_response_length": opts.max_response_length,
                        "lr": opts.lr, "optimizer_steps_per_step": 2, "warmup_steps": opts.warmup,
                        "timed_steps": opts.steps, "threads": opts.threads, "fixed_length": opts.fixed_length,
                        "seed": opts.seed, "clip": [3e-4, 4e-4], "kl_beta": 0.0, "dynamic_sampling": False,
                        "ours_overrides": opts.ours_override},
           "sizes": {}}
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix=f"vs_trl_{size}_") as tmp:
            workdir = Path(tmp)
            model = build_model_folder(size, workdir / "model", opts.seed,
                                       16 + opts.max_response_length)
            # Alternate the order (ours, TRL, TRL, ours, ...) so that a drift of the machine's speed during the
            # invocation does not favour one side; each repeat is a fresh pair of processes.
            if opts.ours_only:  # no TRL installed (CI's --quick): our side alone, no ratio
                ours = _child("ours", opts, model, workdir)
                out["sizes"][size] = {"num_params": ours["num_params"], "ours": ours, "trl": None}
                continue
            pairs = []
            for repeat in range(opts.repeats):
                order = ("ours", "trl") if repeat % 2 == 0 else ("trl", "ours")
                pair = {which: _child(which, opts, model, workdir) for which in order}
                pairs.append((pair["ours"], pair["trl"]))
        for ours, trl in pairs:
            if ours["init_param_checksum"] != trl["init_param_checksum"]:
                raise SystemExit(f"initial weights differ: {ours['init_param_checksum']} vs "
                                 f"{trl['init_param_checksum']}")
        # Headline ratio: wall time over clean steps when at least half the timed steps of each side were clean
        # (the machine may be shared), else CPU time when running one thread, else wall time over all timed
        # steps; ratio_basis says which. With one thread, time slicing does not inflate CPU seconds (a busy
        # sibling hyperthread and shared caches still do, by up to ~25% here); with more threads, spin-waiting
        # OpenMP workers inflate them under load as much as wall time.
        enough = min(min(o["clean_steps"], t["clean_steps"]) for o, t in pairs) * 2 >= opts.steps
        basis = ("clean_steps" if enough else "cpu_s_1_thread" if opts.threads == 1 else "all_steps")
        key = {"clean_steps": "sec_per_step_clean", "cpu_s_1_thread": "cpu_s_per_step",
               "all_steps": "sec_per_step"}[basis]
        each = [o[key] / t[key] for o, t in pairs]
        # The median pair (the upper one of an even count, which does not favour gspo) gives the headline ratio
        # and the details reported.
        ratio, median_index = sorted((r, i) for i, r in enumerate(each))[len(each) // 2]
        ours, trl = pairs[median_index]
        out["sizes"][size] = {"num_params": ours["num_params"], "model": "shipped warm start gspo/assets/addition"
                              if size == "small" else f"random init Qwen2 {MEDIUM_MODEL}",
                              "ratio_ours_over_trl": round(ratio, 3), "ratio_basis": basis,
                              "ratio_each_repeat": [round(r, 3) for r in each],
                              "sec_per_step_each_repeat": {"ours": [o["sec_per_step"] for o, _ in pairs],
                                                           "trl": [t["sec_per_step"] for _, t in pairs]},
                              "ratio_all_steps": round(ours["sec_per_step"] / trl["sec_per_step"], 3),
                              # median step time of ours over TRL's, within the headline pair (not the headline)
                              "ratio_of_median_steps": round(ours["sec_per_step_median"]
                                                             / trl["sec_per_step_median"], 3),
                              "ratio_cpu_s": round(ours["cpu_s_per_step"] / trl["cpu_s_per_step"], 3),
                              # every timed step of both trainers was clean
                              "clean_run": min(ours["clean_steps"], trl["clean_steps"]) == opts.steps,
                              "ours": ours, "trl": trl}
    return out


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=["small", "medium", "both"], default="both")
    p.add_argument("--fixed-length", action="store_true",
                   help="every response exactly --max-response-length tokens on both sides (EOS does not stop)")
    p.add_argument("--prompts", type=int, default=32, help="prompts per step (even: 2 optimizer steps)")
    p.add_argument("--n", type=int, default=8, help="samples per prompt (num_generations)")
    p.add_argument("--max-response-length", type=int, default=6)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--steps", type=int, default=6, help="timed steps (K)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads / OMP_NUM_THREADS for both")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--repeats", type=int, default=1,
                   help="run the pair this many times, alternating the order; the headline ratio is the median")
    p.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                   help="before each trainer, wait up to SECONDS for the machine to be idle (shared machines)")
    p.add_argument("--ours-override", action="append", default=[], metavar="KEY=VALUE",
                   help="extra gspo config override (repeatable), "
                        "e.g. actor_rollout_ref.actor.use_rollout_log_probs=true")
    p.add_argument("--ours-only", action="store_true", help="run gspo's side only (no ratio; TRL not needed)")
    p.add_argument("--quick", action="store_true",
                   help="seconds-long smoke run: small size, 4 prompts x 2, 1 step; ours only unless TRL is installed")
    p.add_argument("--_child", choices=["ours", "trl"], help=argparse.SUPPRESS)
    p.add_argument("--_model", help=argparse.SUPPRESS)
    p.add_argument("--_result", help=argparse.SUPPRESS)
    p.add_argument("--_workdir", help=argparse.SUPPRESS)
    opts = p.parse_args(argv)
    if opts.quick:
        opts.size, opts.prompts, opts.n, opts.max_response_length = "small", 4, 2, 4
        opts.warmup, opts.steps, opts.threads, opts.repeats = 0, 1, 1, 1
        opts.ours_only = opts.ours_only or importlib.util.find_spec("trl") is None
    if opts.prompts % 2:
        p.error("--prompts must be even (2 optimizer steps of prompts/2 each)")
    return opts


if __name__ == "__main__":
    options = _parse(sys.argv[1:])
    if options._child:
        options.model, options.workdir = options._model, options._workdir
        run = run_ours if options._child == "ours" else run_trl
        Path(options._result).write_text(json.dumps(run(options)))
    else:
        print(json.dumps(main(options)))
