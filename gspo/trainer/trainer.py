"""The GSPO trainer. One step reads as the algorithm: generate -> score -> filter -> advantages -> update."""

from __future__ import annotations

import logging
import random
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from gspo.algos import ADV_ESTIMATORS
from gspo.config import GSPOConfig, to_yaml
from gspo.data import PromptItem, PromptSampler
from gspo.models import autocast_dtype, enable_activation_checkpointing, load_causal_lm, load_tokenizer, resolve_device
from gspo.rollout import HFRolloutEngine, SamplingParams
from gspo.trainer.actor import UpdateSchedule, compute_log_probs, update_policy
from gspo.trainer.batch import RolloutBatch
from gspo.trainer.checkpoint import find_latest, load_checkpoint, save_checkpoint
from gspo.trainer.dynamic_sampling import (GenerationStats, count_groups, keep_informative_groups, split_groups,
                                          trained_batch_metrics)
from gspo.trainer.sampling_state import DynamicSamplingState
from gspo.trainer.metrics import MetricsLogger, summary_line
from gspo.trainer.optim import build_optimizer, build_scheduler
from gspo.trainer.setup import build_dataset, build_reward_manager, check_runnable
from gspo.trainer.signals import StopRequest, TrainingInterrupted

log = logging.getLogger(__name__)


class Trainer:
    """Builds everything a run needs from a :class:`GSPOConfig`, then ``fit()`` trains.

    Single process today; every loss is normalised by batch-global counts and only ``is_main`` logs and writes,
    so data parallelism slots in without touching the algorithm.
    """

    def __init__(self, config: GSPOConfig):
        self.config = cfg = config
        self.is_main = True
        self.output_dir = Path(cfg.trainer.default_local_dir)
        _check_writable(self.output_dir)
        _seed_everything(cfg.trainer.seed)
        self.device = resolve_device(cfg.trainer.device)
        self.autocast_dtype = autocast_dtype(self.device)

        # Cheap checks first (data, reward), so bad input fails before model weights are loaded.
        model_path = cfg.actor_rollout_ref.model.path
        self.tokenizer = load_tokenizer(model_path)
        self.train_data = build_dataset(cfg, "data.train_files", self.tokenizer)
        self.val_data = build_dataset(cfg, "data.val_files", self.tokenizer) if cfg.data.val_files else None
        check_runnable(cfg, self.train_data)
        self.rewards = build_reward_manager(cfg)
        self.sampler = PromptSampler(len(self.train_data), seed=cfg.trainer.seed, shuffle=cfg.data.shuffle)
        self.model = load_causal_lm(model_path, self.device)
        if cfg.actor_rollout_ref.model.enable_gradient_checkpointing:
            enable_activation_checkpointing(self.model)
        self.ref_model = self._build_ref_model(model_path)
        self.engine = HFRolloutEngine(self.model, pad_token_id=self.tokenizer.pad_token_id,
                                      eos_token_ids=self._eos_token_ids(),
                                      micro_batch_size=cfg.actor_rollout_ref.rollout.micro_batch_size,
                                      autocast_dtype=self.autocast_dtype)
        self.total_steps = self._total_training_steps()
        self.optimizer = build_optimizer(self.model, cfg.actor_rollout_ref.actor.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.actor_rollout_ref.actor.optim, self.total_steps)
        actor = cfg.actor_rollout_ref.actor
        self.schedule = UpdateSchedule(num_mini_batches=cfg.data.train_batch_size // actor.ppo_mini_batch_size,
                                       ppo_epochs=actor.ppo_epochs)
        self.sampling_state = DynamicSamplingState(
            cfg.algorithm.filter_groups, default_gen_batch_size=cfg.data.gen_batch_size or cfg.data.train_batch_size,
            num_prompts=len(self.train_data))
        self.global_step = 0
        self._next_group_id = 0
        self._consecutive_skips = 0
        self._maybe_resume()

    # ------------------------------------------------------------------------------------------------ setup
    def _build_ref_model(self, model_path: str):
        if not self.config.actor_rollout_ref.actor.use_kl_loss:
            return None  # the reference model costs a full copy of the weights: load it only when used
        ref = load_causal_lm(model_path, self.device).eval()
        ref.requires_grad_(False)
        return ref

    def _eos_token_ids(self) -> list[int]:
        ids = {self.tokenizer.eos_token_id}
        generation_eos = getattr(self.model.generation_config, "eos_token_id", None)
        ids.update(generation_eos if isinstance(generation_eos, list) else [generation_eos])
        return sorted(i for i in ids if i is not None)

    def _total_training_steps(self) -> int:
        cfg = self.config
        if cfg.trainer.total_training_steps is not None:  # wins over total_epochs
            return cfg.trainer.total_training_steps
        gen_batch = cfg.data.gen_batch_size or cfg.data.train_batch_size
        return max(1, len(self.train_data) // gen_batch) * cfg.trainer.total_epochs

    def _sampling_params(self) -> SamplingParams:
        rollout = self.config.actor_rollout_ref.rollout
        return SamplingParams(n=rollout.n, temperature=rollout.temperature, top_p=rollout.top_p,
                              top_k=rollout.top_k, do_sample=True,
                              max_new_tokens=self.config.data.max_response_length)

    # ------------------------------------------------------------------------------------------------- step
    def train_step(self) -> dict[str, float]:
        """One optimizer-step batch: (generate -> score -> filter)+ -> advantages -> update."""
        timings: dict[str, float] = {}
        with _timer(timings, "timing/step"):
            batch, metrics = self.collect_train_batch(timings)
            with _timer(timings, "timing/adv"):
                batch.advantages = ADV_ESTIMATORS[self.config.algorithm.adv_estimator](
                    batch.seq_final_reward, batch.group_ids,
                    norm_adv_by_std=self.config.algorithm.norm_adv_by_std_in_grpo)
            batch = batch.to(self.device)
            self.compute_reference_log_probs(batch, timings)
            with _timer(timings, "timing/update"):
                metrics.update(self.update(batch))
        metrics.update(trained_batch_metrics(batch))
        metrics.update(timings)
        metrics.update(self._throughput(batch, metrics))
        return metrics

    def collect_train_batch(self, timings: dict[str, float]) -> tuple[RolloutBatch, dict[str, float]]:
        """DAPO dynamic sampling: generation batches until ``train_batch_size`` informative groups are kept."""
        cfg = self.config
        needed = cfg.data.train_batch_size
        filtering = cfg.algorithm.filter_groups
        cap = filtering.max_num_gen_batches
        stats = GenerationStats(eos_token_ids=self.engine.eos_token_ids,
                                max_response_length=cfg.data.max_response_length)
        kept: list[RolloutBatch] = []
        surplus = self.sampling_state.take_surplus(self.global_step)
        if surplus is not None:  # kept groups left over from the last step go first, so none grows stale
            stats.add_surplus(surplus, self.global_step)
            kept.append(surplus)
        while stats.num_kept_groups < needed:
            if filtering.enable and 0 < cap <= stats.num_gen_batches:
                raise stats.cap_error(needed, cap, filtering.metric)
            prompts = self._draw_prompts(needed - stats.num_kept_groups, stats)
            with _timer(timings, "timing/gen"):
                batch = self.generate(prompts, self._sampling_params())
            with _timer(timings, "timing/reward"):
                reward_metrics = self.score(batch, prompts)
            if filtering.enable:
                self.sampling_state.observe(batch, filtering.metric)
            kept_now = keep_informative_groups(batch, filtering.metric) if filtering.enable else batch
            stats.add(batch, kept_now, reward_metrics)
            kept.append(kept_now)
        train_batch, leftover = split_groups(RolloutBatch.concat(kept, self.tokenizer.pad_token_id), needed)
        self.sampling_state.store_surplus(leftover)
        assert count_groups(train_batch) == needed
        return train_batch, stats.metrics()

    def _draw_prompts(self, groups_needed: int, stats: GenerationStats) -> list[PromptItem]:
        """The next generation batch's prompts, sized and prefiltered by the dynamic-sampling state."""
        while True:
            drawn = self.sampler.take(self.sampling_state.gen_batch_size(groups_needed))
            admitted, skipped = self.sampling_state.admit(drawn)
            stats.add_prefiltered(skipped)
            if admitted:
                return [self.train_data[i] for i in admitted]

    def generate(self, prompts: list[PromptItem], params: SamplingParams) -> RolloutBatch:
        """Sample ``params.n`` responses per prompt; rows of a group are contiguous, group ids never repeat."""
        generation = self.engine.generate([p.prompt_ids for p in prompts], params)
        first = self._next_group_id
        self._next_group_id += len(prompts)
        group_ids = torch.arange(first, first + len(prompts)).repeat_interleave(params.n)
        prompt_index = torch.tensor([p.index for p in prompts]).repeat_interleave(params.n)
        return RolloutBatch.from_generation(generation, group_ids=group_ids, prompt_index=prompt_index,
                                            generation_step=self.global_step).to("cpu")

    def score(self, batch: RolloutBatch, prompts: list[PromptItem]) -> dict[str, float]:
        """Fill ``seq_reward`` / ``seq_final_reward`` / ``acc`` in place; return the reward function's metrics
        (errors, overlong shaping, extras); the means are recomputed over all batches by the caller."""
        n = batch.num_sequences // len(prompts)
        rows = [p for p in prompts for _ in range(n)]
        texts = self.tokenizer.batch_decode(batch.response_ids, skip_special_tokens=True)
        rewards = self.rewards.score(texts, batch.response_lengths, [p.ground_truth for p in rows],
                                     [p.data_source for p in rows], [p.extra_info for p in rows])
        batch.seq_reward, batch.seq_final_reward, batch.acc = rewards.seq_reward, rewards.seq_final_reward, rewards.acc
        return {k: v for k, v in rewards.metrics.items() if not k.endswith(("/score_mean", "/final_mean", "/acc_mean"))}

    def compute_reference_log_probs(self, batch: RolloutBatch, timings: dict[str, float]) -> None:
        """Old-policy log-probs (skipped when the update is exactly on-policy) and reference log-probs (KL)."""
        rollout_cfg, actor = self.config.actor_rollout_ref.rollout, self.config.actor_rollout_ref.actor
        common = dict(micro_batch_size=actor.ppo_micro_batch_size_per_gpu, temperature=rollout_cfg.temperature,
                      autocast_dtype=self.autocast_dtype, logits_chunk_size=actor.logits_chunk_size,
                      max_token_len=actor.ppo_max_token_len_per_gpu if actor.use_dynamic_bsz else None)
        if not self.schedule.is_on_policy:
            with _timer(timings, "timing/old_log_prob"):
                batch.old_log_probs = compute_log_probs(self.model, batch, **common)
        if self.ref_model is not None:
            with _timer(timings, "timing/ref"):
                batch.ref_log_probs = compute_log_probs(self.ref_model, batch, **common)

    def update(self, batch: RolloutBatch) -> dict[str, float]:
        metrics = update_policy(self.model, self.optimizer, batch, self.config.actor_rollout_ref.actor,
                                n=self.config.actor_rollout_ref.rollout.n,
                                temperature=self.config.actor_rollout_ref.rollout.temperature,
                                autocast_dtype=self.autocast_dtype,
                                max_response_length=self.config.data.max_response_length)
        metrics["actor/lr"] = self.scheduler.get_last_lr()[0]
        self.scheduler.step()
        self._track_skips(int(metrics["actor/skipped_updates"]), int(metrics["actor/num_updates"]))
        return metrics

    def _track_skips(self, skipped: int, attempted: int) -> None:
        """Stop after ``max_consecutive_skips`` optimizer steps in a row dropped for non-finite gradients."""
        self._consecutive_skips = self._consecutive_skips + skipped if skipped == attempted else skipped
        limit = self.config.trainer.max_consecutive_skips
        if self._consecutive_skips >= limit:
            raise FloatingPointError(
                f"{self._consecutive_skips} optimizer steps in a row had a non-finite loss or gradient "
                f"(trainer.max_consecutive_skips={limit}). Lower actor_rollout_ref.actor.optim.lr, check the "
                f"reward for NaN/inf, or resume from the last checkpoint.")

    def _throughput(self, batch: RolloutBatch, metrics: dict[str, float]) -> dict[str, float]:
        trained = batch.response_mask.sum().item() + batch.prompt_mask.sum().item()
        return {"perf/gen_tokens_per_s": metrics["train/generated_tokens"] / max(metrics.get("timing/gen", 0.0), 1e-9),
                "perf/train_tokens_per_s": trained / max(metrics["timing/update"], 1e-9)}

    # ------------------------------------------------------------------------------------------ validation
    def validate(self) -> dict[str, float]:
        """Mean score and accuracy over the validation set with ``rollout.val_kwargs`` (mean@n)."""
        if self.val_data is None:
            return {}
        val = self.config.actor_rollout_ref.rollout.val_kwargs
        params = SamplingParams(n=val.n, temperature=val.temperature, top_p=val.top_p, top_k=val.top_k,
                                do_sample=val.do_sample and val.temperature > 0,
                                max_new_tokens=self.config.data.max_response_length)
        start = time.perf_counter()
        prompts = list(self.val_data)
        batch = self.generate(prompts, params)
        self.score(batch, prompts)
        return {"val/score_mean": batch.seq_reward.mean().item(), "val/acc_mean": batch.acc.mean().item(),
                "val/response_length_mean": batch.response_lengths.float().mean().item(),
                "timing/val": time.perf_counter() - start}

    # ----------------------------------------------------------------------------------------------- loop
    def fit(self) -> dict[str, float]:
        """Train for ``total_steps``; validate and checkpoint on schedule. Returns the last step's metrics.

        SIGINT / SIGTERM let the current step finish, write a checkpoint and raise :class:`TrainingInterrupted`.
        """
        cfg = self.config.trainer
        logger = MetricsLogger(self.output_dir, cfg.logger, resume_step=self.global_step) if self.is_main else None
        if self.is_main:
            (self.output_dir / "config.yaml").write_text(to_yaml(self.config))
        last: dict[str, float] = {}
        try:
            with StopRequest() as stop:
                if cfg.val_before_train and self.global_step == 0:
                    last = self.validate()
                    self._log(logger, 0, last)
                progress = tqdm(total=self.total_steps, initial=self.global_step, desc="training steps",
                                disable=not self.is_main, dynamic_ncols=True)
                while self.global_step < self.total_steps:
                    last = self._fit_one_step(logger, progress)
                    if stop.signal_name is not None:
                        path = self.save_checkpoint()
                        raise TrainingInterrupted(stop.signal_name, self.global_step, path)
                progress.close()
            self.save_final_model()
        finally:
            if logger is not None:
                logger.close()
        return last

    def _fit_one_step(self, logger: MetricsLogger | None, progress: tqdm) -> dict[str, float]:
        cfg = self.config.trainer
        metrics = self.train_step()
        self.global_step += 1
        is_last = self.global_step == self.total_steps
        if (cfg.test_freq > 0 and self.global_step % cfg.test_freq == 0) or is_last:
            metrics.update(self.validate())
        if (cfg.save_freq > 0 and self.global_step % cfg.save_freq == 0) or is_last:
            self.save_checkpoint()
        self._log(logger, self.global_step, metrics)
        progress.update(1)
        if "console" in cfg.logger:
            progress.write(summary_line(self.global_step, metrics))
        return metrics

    def _log(self, logger: MetricsLogger | None, step: int, metrics: dict[str, float]) -> None:
        if logger is not None and metrics:
            logger.log(step, metrics)

    # ------------------------------------------------------------------------------------------ checkpoints
    def _trainer_state(self) -> tuple[dict, dict[str, torch.Tensor]]:
        sampling, surplus = self.sampling_state.state_dict()
        return ({"sampler": self.sampler.state_dict(), "dynamic_sampling": sampling,
                 "next_group_id": self._next_group_id}, surplus)

    def save_checkpoint(self) -> Path | None:
        if not self.is_main:
            return None
        state, tensors = self._trainer_state()
        return save_checkpoint(self.output_dir / "checkpoints", self.global_step, model=self.model,
                               tokenizer=self.tokenizer, optimizer=self.optimizer, scheduler=self.scheduler,
                               trainer_state=state, tensors=tensors, config_yaml=to_yaml(self.config),
                               max_to_keep=self.config.trainer.max_actor_ckpt_to_keep)

    def save_final_model(self) -> Path:
        """The trained policy as a plain HF folder (safetensors + tokenizer)."""
        final = self.output_dir / "final_model"
        if self.is_main:
            self.model.save_pretrained(final, safe_serialization=True)
            self.tokenizer.save_pretrained(final)
        return final

    def _maybe_resume(self) -> None:
        cfg = self.config.trainer
        if cfg.resume_mode == "disable":
            return
        path = (Path(cfg.resume_from_path) if cfg.resume_mode == "resume_path"
                else find_latest(self.output_dir / "checkpoints"))
        if path is None:
            return
        state = load_checkpoint(path, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler)
        self.sampler.load_state_dict(state.trainer_state["sampler"])
        self.sampling_state.load_state_dict(state.trainer_state["dynamic_sampling"], state.tensors)
        self._next_group_id = state.trainer_state["next_group_id"]
        self.global_step = state.step
        log.info("resumed from %s at step %d", path, state.step)


@contextmanager
def _timer(timings: dict[str, float], name: str):
    """Adds elapsed seconds to ``timings[name]`` (sums over repeated phases such as several gen batches)."""
    start = time.perf_counter()
    yield
    timings[name] = timings.get(name, 0.0) + time.perf_counter() - start


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise PermissionError(f"trainer.default_local_dir: cannot write to {folder}: {exc}") from exc
