"""Host memory of FSDP2 start-up on CPU: peak RSS per rank while the trainer is built and during one step.

A random ~100M-parameter Qwen2 (built from a config, saved to a temporary folder with the embedded character
tokenizer; nothing is downloaded) is trained for one step with the KL loss on (so the reference model loads too),
2 prompts x 2 responses of exactly 16 tokens:

- ``single``: one process (no FSDP);
- ``sharded``: N gloo ranks with this tree's code (rank 0 reads the checkpoint, the shards arrive by broadcast,
  the hf engine generates with the sharded policy);
- ``baseline``: N gloo ranks with the code of ``--baseline-rev`` (default: the release before sharded start-up,
  where every rank loads the whole model and the hf engine keeps an unsharded copy), extracted with
  ``git archive`` into a temporary folder and run from there.

Prints one JSON object: per run and rank, the RSS after imports, the peak RSS of start-up and of the whole run
(start-up + one step), and the bytes of parameters resident after start-up and before the step (policy,
reference, and the rollout engine's own copy where it has one; shards only under FSDP); the step's generation
time and the time of one all-gather of the policy (what generating from sharded weights would pay in every
decoding step, and what the hf engine pays once per generation phase); then the ratios of the sharded start-up's
peaks to the baseline's.

    python benchmarks/startup_memory.py [--nproc 2] [--baseline-rev REV] [--layers 11] [--hidden 768]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINE_REV = "3771a94"  # every rank loads the whole model; the hf engine copies it before sharding
MIB = 2 ** 20


def _status_mib(*fields: str) -> dict[str, float]:
    """Fields of /proc/self/status (kB) in MiB: VmRSS (resident now), VmHWM (peak resident), RssAnon, RssFile."""
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in fields:
            values[name] = int(rest.split()[0]) / 1024
    return values


def _resident_parameter_bytes(*models) -> int:
    """Bytes of distinct parameter storage in ``models`` held by this rank (a DTensor's local shard only)."""
    from torch.distributed.tensor import DTensor

    seen, total = set(), 0
    for model in models:
        if model is None:
            continue
        for param in model.parameters():
            local = param.to_local() if isinstance(param, DTensor) else param
            if local.is_meta or local.data_ptr() in seen:
                continue
            seen.add(local.data_ptr())
            total += local.nbytes
    return total


def worker(out: Path, overrides: list[str]) -> None:
    """One rank: build the trainer, take one step, write ``rank_R.json``."""
    from gspo.config import load_config
    from gspo.trainer import Trainer

    imported = _status_mib("VmRSS")["VmRSS"]
    trainer = Trainer(load_config(None, overrides, preset="addition"))  # the embedded task's settings
    startup = _status_mib("VmRSS", "VmHWM", "RssAnon", "RssFile")
    engine_model = getattr(trainer.engine, "model", None)
    engine_copy = engine_model if engine_model is not None and engine_model is not trainer.model else None
    metrics = trainer.train_step()
    run_peak = _status_mib("VmHWM")["VmHWM"]
    # What generating from sharded weights costs per forward: one all-gather of the policy (the engine does it
    # once per generation phase instead, which is what resume_memory times; 0 without FSDP).
    start = time.perf_counter()
    trainer.engine.resume_memory()
    gather_s = time.perf_counter() - start
    trainer.engine.release_memory()
    rank = trainer.dist.rank
    report = {"rank": rank, "rss_after_imports_mib": round(imported), "startup_peak_rss_mib": round(startup["VmHWM"]),
              "rss_after_startup_mib": round(startup["VmRSS"]), "anon_after_startup_mib": round(startup["RssAnon"]),
              "file_after_startup_mib": round(startup["RssFile"]),
              "run_peak_rss_mib": round(run_peak),
              "policy_parameter_bytes": _resident_parameter_bytes(trainer.model),
              "reference_parameter_bytes": _resident_parameter_bytes(_reference_model(trainer)),
              "engine_copy_parameter_bytes": _resident_parameter_bytes(engine_copy),
              "policy_all_gather_s": round(gather_s, 3), "gen_s": round(metrics["timing/gen"], 3),
              "generated_tokens": metrics.get("train/generated_tokens")}
    (out / f"rank_{rank}.json").write_text(json.dumps(report))


def _reference_model(trainer):
    """The trainer's frozen reference model: in its update context, or (the baseline release) on the trainer."""
    update = getattr(trainer, "policy_update", None)
    return update.context.reference_model if update is not None else getattr(trainer, "ref_model", None)


def build_model(folder: Path, layers: int, hidden: int) -> int:
    """A random Qwen2 with the embedded character tokenizer; returns its number of parameters."""
    import torch
    from transformers import Qwen2ForCausalLM

    from gspo.tasks.addition import build_addition_model_config, build_addition_tokenizer

    tokenizer = build_addition_tokenizer()
    config = build_addition_model_config(len(tokenizer), hidden_size=hidden, intermediate_size=4 * hidden,
                                         num_hidden_layers=layers, num_attention_heads=hidden // 64,
                                         num_key_value_heads=hidden // 64)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def run(name: str, source: Path, nproc: int, model: Path, scratch: Path) -> list[dict]:
    """The worker under ``source``'s gspo, on ``nproc`` processes (torchrun when more than one)."""
    out = scratch / name
    out.mkdir()
    overrides = [f"actor_rollout_ref.model.path={model}", f"trainer.default_local_dir={out / 'run'}",
                 "data.train_batch_size=2", "data.gen_batch_size=2", "actor_rollout_ref.rollout.n=2",
                 "actor_rollout_ref.actor.ppo_mini_batch_size=2",
                 "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
                 "data.max_response_length=16", "actor_rollout_ref.rollout.ignore_eos=true",
                 "algorithm.filter_groups.enable=false",
                 "actor_rollout_ref.actor.use_kl_loss=true", "trainer.total_training_steps=1",
                 "trainer.val_before_train=false", "trainer.test_freq=-1", "trainer.save_freq=-1", "trainer.logger=[]",
                 "trainer.device=cpu", "trainer.resume_mode=disable"]
    launcher = [sys.executable] if nproc == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    env = {**{k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")},
           "PYTHONPATH": str(source), "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // nproc))}
    proc = subprocess.run([*launcher, str(Path(__file__).resolve()), "--worker", str(out), *overrides],
                          capture_output=True, text=True, env=env, cwd=source)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"{name}: the worker failed with exit code {proc.returncode}")
    return [json.loads((out / f"rank_{rank}.json").read_text()) for rank in range(nproc)]


def extract(rev: str, folder: Path) -> Path:
    """The tree of ``rev`` (this repository's git history) under ``folder``."""
    folder.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--baseline-rev", default=BASELINE_REV)
    parser.add_argument("--layers", type=int, default=11)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--quick", action="store_true",
                        help="a seconds-long smoke run: a 1-layer model of width 64, no baseline run")
    args = parser.parse_args()
    if args.quick:
        args.layers, args.hidden = 1, 64
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        model = scratch / "model"
        num_params = build_model(model, args.layers, args.hidden)
        runs = {"single": run("single", ROOT, 1, model, scratch),
                "sharded": run("sharded", ROOT, args.nproc, model, scratch)}
        if not args.quick:
            baseline = extract(args.baseline_rev, scratch / "baseline_source")
            runs["baseline"] = run("baseline", baseline, args.nproc, model, scratch)
    fp32_bytes = 4 * num_params

    def worst(name: str, key: str) -> float:
        return max(rank[key] for rank in runs[name])

    result = {
        "machine": {"cpu": _cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__,
                    "load_average_1min": os.getloadavg()[0]},
        "model": {"parameters": num_params, "fp32_bytes": fp32_bytes, "layers": args.layers, "hidden": args.hidden},
        "nproc": args.nproc, "runs": runs,
        "sharded_policy_parameters_per_rank_vs_one_fp32_copy": [
            round(r["policy_parameter_bytes"] / fp32_bytes, 3) for r in runs["sharded"]],
        "sharded_worst_startup_peak_mib": worst("sharded", "startup_peak_rss_mib"),
    }
    if "baseline" in runs:
        pairs = list(zip(runs["sharded"], runs["baseline"]))
        result.update(baseline_rev=args.baseline_rev, sharded_vs_baseline_startup_peak_per_rank=[
            round(s["startup_peak_rss_mib"] / b["startup_peak_rss_mib"], 3) for s, b in pairs],
            sharded_vs_baseline_run_peak_per_rank=[
            round(s["run_peak_rss_mib"] / b["run_peak_rss_mib"], 3) for s, b in pairs])
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        worker(Path(sys.argv[2]), sys.argv[3:])
    else:
        main()
