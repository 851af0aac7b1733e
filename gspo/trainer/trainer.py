"""The GSPO trainer. One step reads as the algorithm: generate -> score -> filter -> advantages -> update."""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from gspo.algos import (
    ADV_ESTIMATORS,
    importance_weight_metrics,
    rollout_importance_weights,
    rollout_mismatch_metrics,
)
from gspo.config import GSPOConfig, to_yaml
from gspo.data import PromptItem, PromptSampler
from gspo.distributed import init_distributed
from gspo.model_folder import stored_dtype
from gspo.models import (
    autocast_dtype,
    enable_activation_checkpointing,
    eos_token_ids,
    load_causal_lm,
    load_tokenizer,
    resolve_device,
)
from gspo.resources import resolve_path
from gspo.rollout import EngineSpec, SamplingParams, build_rollout_engine, group_keys
from gspo.trainer.actor import compute_log_probs, update_policy
from gspo.trainer.batch import RolloutBatch
from gspo.trainer.checkpoint import (
    full_model_state_dict,
    load_checkpoint,
    save_checkpoint,
    save_hf_folder_atomically,
)
from gspo.trainer.compat import plan_resume
from gspo.trainer.dropout import disable_dropout
from gspo.trainer.dynamic_sampling import (
    DynamicSamplingState,
    GenerationStats,
    collect_train_batch,
    trained_batch_metrics,
)
from gspo.trainer.lora import LoRAPolicy, base_dtype
from gspo.trainer.metrics import MetricsLogger, summary_line
from gspo.trainer.old_policy import (
    num_on_policy_rows,
    rollout_log_probs_are_old,
    rows_to_recompute,
    with_on_policy_rows_marked,
)
from gspo.trainer.optim import build_optimizer, build_scheduler
from gspo.trainer.parallel import (
    check_data_parallel,
    export_template,
    gather_from_ranks,
    iter_full_parameters,
    local_rows,
    merge_rank_reward_metrics,
    shard_model,
)
from gspo.trainer.run_folder import crash_point, open_run_folder, release_lock
from gspo.trainer.setup import (
    build_dataset,
    build_policy_loss,
    build_reward_manager,
    check_runnable,
    check_writable,
    count_training_steps,
    seed_everything,
)
from gspo.trainer.sharded_loading import load_sharded_causal_lm
from gspo.trainer.signals import StopRequest, TrainingInterrupted
from gspo.trainer.sinks import build_sinks
from gspo.trainer.val_samples import ValidationSamples

log = logging.getLogger(__name__)


class Trainer:
    """Builds everything a run needs from a :class:`GSPOConfig`, then ``fit()`` trains.

    One trainer per process. Under ``torchrun`` every rank builds the same state from the same seed; prompts of
    each generation batch are split across ranks and the scored groups gathered back, so the dynamic-sampling
    decision is made identically everywhere; the update is data-parallel with FSDP2; only rank 0 logs and
    writes files other than checkpoint shards.
    """

    def __init__(self, config: GSPOConfig):
        self.config = cfg = config
        self.dist = init_distributed(cfg.trainer.device)
        self.is_main = self.dist.is_main
        check_data_parallel(cfg, self.dist.world_size)
        self.output_dir = Path(cfg.trainer.default_local_dir)
        check_writable(self.output_dir, self.dist.rank)
        open_run_folder(self.output_dir, cfg.trainer.resume_mode, self.dist)  # lock: one run per folder
        seed_everything(cfg.trainer.seed)
        self.device = resolve_device(cfg.trainer.device)
        if self.device.type == "cuda" and self.dist.is_distributed:
            self.device = torch.device("cuda", self.dist.local_rank)
        self.autocast_dtype = autocast_dtype(self.device)

        # Cheap checks first (data, reward), so bad input fails before model weights are loaded.
        model_path = cfg.actor_rollout_ref.model.path
        self.tokenizer = load_tokenizer(model_path)
        self.train_data = build_dataset(cfg, "data.train_files", self.tokenizer)
        self.val_data = build_dataset(cfg, "data.val_files", self.tokenizer) if cfg.data.val_files else None
        check_runnable(cfg, self.train_data, self.val_data)
        self.rewards = build_reward_manager(cfg)
        self.policy_loss = build_policy_loss(cfg)
        self.sampler = PromptSampler(len(self.train_data), seed=cfg.trainer.seed, shuffle=cfg.data.shuffle)
        self.total_steps = self._total_training_steps()
        self._resume_from = plan_resume(cfg, self.output_dir, self.total_steps, self.dist)  # verified, same run
        self.model, self.lora = self._build_policy(model_path)
        self.export_dtype = stored_dtype(resolve_path(model_path))  # final_model / checkpoint model/ keep it
        self.export_template = export_template(self.model)  # checkpoints and final_model never touch the engine
        # Built after sharding: under FSDP the hf engine generates with the sharded policy (gathered per phase).
        self.engine = build_rollout_engine(EngineSpec(
            model_path=resolve_path(model_path), policy=lambda: self.model, pad_token_id=self.tokenizer.pad_token_id,
            eos_token_ids=[] if cfg.actor_rollout_ref.rollout.ignore_eos
            else eos_token_ids(self.tokenizer, self.model), device=self.device,
            rollout=cfg.actor_rollout_ref.rollout, max_prompt_length=cfg.data.max_prompt_length,
            max_response_length=cfg.data.max_response_length, world_size=self.dist.world_size,
            lora_rank=cfg.actor_rollout_ref.model.lora_rank))
        if self.dist.is_distributed:
            self.autocast_dtype = None  # FSDP's bf16 parameter casting replaces autocast on CUDA
        self._rollout_stale = False  # the engine starts from the policy's weights; an update or a resume changes them
        # Recomputing the old log-probs is waste when the sampler computed them as the trainer would (fp32 hf).
        use_rollout, correcting = cfg.actor_rollout_ref.actor.use_rollout_log_probs, cfg.algorithm.rollout_correction
        self.use_rollout_log_probs = (self.engine.log_probs_match_trainer and not correcting.rollout_is
                                      if use_rollout is None else use_rollout)
        self.ref_model = self._build_ref_model(model_path)
        self.optimizer = build_optimizer(self.model, cfg.actor_rollout_ref.actor.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.actor_rollout_ref.actor.optim, self.total_steps)
        self.sampling_state = DynamicSamplingState(
            cfg.algorithm.filter_groups, default_gen_batch_size=cfg.data.gen_batch_size or cfg.data.train_batch_size,
            num_prompts=len(self.train_data), seed=cfg.trainer.seed)
        self.global_step = 0
        self._next_group_id = 0
        self._consecutive_skips = 0
        self._saved_step: int | None = None
        self._resumed_step: int | None = None
        self.run_name = cfg.trainer.experiment_name or self.output_dir.resolve().name
        self.val_samples = ValidationSamples(self.output_dir, cfg.trainer.log_val_generations)
        self._maybe_resume()

    # ------------------------------------------------------------------------------------------------ setup
    def _build_policy(self, model_path: str):
        """The policy (FSDP2-sharded under torchrun: rank 0 reads the checkpoint, the others receive their
        shards) and its LoRA adapters (None: full fine-tuning)."""
        model_cfg = self.config.actor_rollout_ref.model

        def prepare(model) -> None:
            if model_cfg.disable_dropout:
                disable_dropout(model)
            if model_cfg.enable_gradient_checkpointing:
                enable_activation_checkpointing(model)

        if self.dist.is_distributed and model_cfg.lora_rank == 0:
            return self._load_sharded(model_path, prepare), None
        model = load_causal_lm(model_path, self.device, base_dtype(model_cfg, self.device))
        if model_cfg.disable_dropout:  # before the adapters: their lora_dropout is the user's
            disable_dropout(model)
        lora = LoRAPolicy.attach(model, model_cfg)
        if model_cfg.enable_gradient_checkpointing:
            enable_activation_checkpointing(model)
        if self.dist.is_distributed:
            self._shard(model)
        return model, lora

    def _load_sharded(self, model_path: str, prepare):
        fsdp = self.config.actor_rollout_ref.actor.fsdp_config
        offload = self.device.type == "cuda" and (fsdp.param_offload or fsdp.optimizer_offload)
        return load_sharded_causal_lm(model_path, self.dist, device=self.device, shard=self._shard, prepare=prepare,
                                      shard_device=torch.device("cpu") if offload else None)

    def _shard(self, model) -> None:
        """FSDP2 over the ranks; on CUDA in bf16 (FSDP's parameter casting), optionally offloaded to the CPU."""
        fsdp = self.config.actor_rollout_ref.actor.fsdp_config
        on_cuda = self.device.type == "cuda"  # on CPU the state already lives in host memory: offload is moot
        shard_model(model, world_size=self.dist.world_size, bf16=on_cuda,
                    cpu_offload=on_cuda and (fsdp.param_offload or fsdp.optimizer_offload),
                    device_type=self.device.type)

    def _build_ref_model(self, model_path: str):
        if not self.config.actor_rollout_ref.actor.use_kl_loss or self.lora is not None:
            # The reference model costs a full copy of the weights: load it only when used. With LoRA the
            # reference is the policy with its adapters switched off.
            return None

        def freeze(model) -> None:
            model.eval().requires_grad_(False)
            if self.config.actor_rollout_ref.model.disable_dropout:
                disable_dropout(model)

        if self.dist.is_distributed:
            return self._load_sharded(model_path, freeze)
        ref = load_causal_lm(model_path, self.device)
        freeze(ref)
        return ref

    def _total_training_steps(self) -> int:
        return count_training_steps(self.config, len(self.train_data))

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
            local = local_rows(batch, self.config.actor_rollout_ref.actor.ppo_mini_batch_size
                               * self.config.actor_rollout_ref.rollout.n, self.dist)  # this rank's rows
            metrics.update(self.compute_old_log_probs(local, timings))
            self.compute_reference_log_probs(local, timings)
            with _timer(timings, "timing/update"):
                metrics.update(self.update(local))
        metrics.update(trained_batch_metrics(batch))
        metrics.update(timings)
        metrics.update(self._throughput(batch, metrics))
        return metrics

    def collect_train_batch(self, timings: dict[str, float]) -> tuple[RolloutBatch, dict[str, float]]:
        """DAPO dynamic sampling: generation batches until ``train_batch_size`` informative groups are kept."""
        params = self._sampling_params()
        stats = GenerationStats(eos_token_ids=self.engine.eos_token_ids,
                                max_response_length=self.config.data.max_response_length)
        return collect_train_batch(
            self.config.data.train_batch_size, self.config.algorithm.filter_groups, self.sampling_state,
            step=self.global_step, draw_prompts=self.sampler.take, stats=stats,
            generate_and_score=lambda indices, num_responses=None: self.generate_and_score(
                [self.train_data[i] for i in indices],
                params if num_responses is None else replace(params, n=num_responses), timings),
            pad_token_id=self.tokenizer.pad_token_id)

    def generate_and_score(self, prompts: list[PromptItem], params: SamplingParams,
                           timings: dict[str, float] | None = None, group_ids: torch.Tensor | None = None
                           ) -> tuple[RolloutBatch, dict[str, float]]:
        """Generate and score ``prompts`` (each rank its contiguous share); every rank gets the whole batch.

        ``group_ids`` (one per prompt) seed the sampling; by default the next unused training ids. Returns the
        scored batch in prompt order and the reward function's metrics over all of it.
        """
        timings = {} if timings is None else timings
        if group_ids is None:  # training group ids never repeat in a run
            group_ids = torch.arange(self._next_group_id, self._next_group_id + len(prompts))
            self._next_group_id += len(prompts)
        if self._rollout_stale:  # collective under FSDP: every rank, before any exit
            # With LoRA only the adapters change (the hf engine's copy holds them; vllm is refused with LoRA).
            self.engine.update_weights(iter_full_parameters(self.model, self.device,
                                                            trainable_only=self.lora is not None))
            self._rollout_stale = False
        self.engine.resume_memory()
        start, stop = self.dist.share_bounds(len(prompts))

        def local_share() -> tuple[RolloutBatch, dict[str, float]] | None:
            if start == stop:
                return None
            with _timer(timings, "timing/gen"):
                batch = self.generate(prompts[start:stop], group_ids[start:stop], params)
            with _timer(timings, "timing/reward"):
                return batch, self.score(batch, prompts[start:stop])

        parts = [part for part in gather_from_ranks(self.dist, local_share) if part is not None]
        batch = RolloutBatch.concat([b for b, _ in parts], self.tokenizer.pad_token_id)
        return batch, merge_rank_reward_metrics([(m, b.num_sequences) for b, m in parts])

    def generate(self, prompts: list[PromptItem], group_ids: torch.Tensor, params: SamplingParams) -> RolloutBatch:
        """Sample ``params.n`` responses per prompt; rows of a group are contiguous.

        Sampling is seeded from (trainer.seed, group id): with an engine that seeds each response (hf) a response
        does not depend on its batch, its rank or a resume. The sampler's log-probs come back with every sampled
        batch (old log-probs, or the rollout/trainer mismatch metrics).
        """
        keys = group_keys(self.config.trainer.seed, group_ids) if params.do_sample else None
        with_log_probs = params.do_sample
        generation = self.engine.generate([p.prompt_ids for p in prompts], params, keys, with_log_probs)
        prompt_index = torch.tensor([p.index for p in prompts]).repeat_interleave(params.n)
        return RolloutBatch.from_generation(generation, group_ids=group_ids.repeat_interleave(params.n),
                                            prompt_index=prompt_index, generation_step=self.global_step).to("cpu")

    def score(self, batch: RolloutBatch, prompts: list[PromptItem]) -> dict[str, float]:
        """Fill ``seq_reward`` / ``seq_final_reward`` / ``acc`` in place; return the reward function's metrics
        (errors, overlong shaping, extras). The reward means are the dynamic-sampling statistics' to compute."""
        texts = self.tokenizer.batch_decode(batch.response_ids, skip_special_tokens=True)
        rewards = self.rewards.score_groups(texts, batch.response_lengths, prompts,
                                            batch.num_sequences // len(prompts))
        batch.seq_reward, batch.seq_final_reward, batch.acc = rewards.seq_reward, rewards.seq_final_reward, rewards.acc
        return rewards.metrics

    def _log_prob_options(self) -> dict:
        rollout_cfg, actor = self.config.actor_rollout_ref.rollout, self.config.actor_rollout_ref.actor
        return dict(micro_batch_size=actor.ppo_micro_batch_size_per_gpu, temperature=rollout_cfg.temperature,
                    autocast_dtype=self.autocast_dtype, logits_chunk_size=actor.logits_chunk_size,
                    max_token_len=(actor.log_prob_max_token_len_per_gpu or actor.ppo_max_token_len_per_gpu)
                    if actor.use_dynamic_bsz else None,
                    dist=self.dist, share_prompts=actor.share_prompt_forward)

    def compute_old_log_probs(self, batch: RolloutBatch, timings: dict[str, float]) -> dict[str, float]:
        """Set ``batch.old_log_probs`` (this rank's rows) by the old-policy rule (:mod:`gspo.trainer.old_policy`):
        the sampler's when they are the old policy's, else a forward pass over the rows past the on-policy ones;
        left None when every row is on-policy. When the sampler's log-probs are there but not used, every row is
        recomputed (as verl does) to measure the rollout/trainer mismatch, whose metrics are returned."""
        actor = self.config.actor_rollout_ref.actor
        on_policy_rows = num_on_policy_rows(actor.ppo_mini_batch_size * self.config.actor_rollout_ref.rollout.n
                                            // self.dist.world_size, actor.ppo_epochs)
        if rollout_log_probs_are_old(batch, on_policy_rows=on_policy_rows, step=self.global_step,
                                     use_rollout_log_probs=self.use_rollout_log_probs, dist=self.dist):
            batch.old_log_probs = batch.rollout_log_probs
            return {}
        if batch.rollout_log_probs is not None:  # the update still skips the on-policy rows' old log-probs
            on_policy_rows = 0
        if (later := rows_to_recompute(batch, on_policy_rows)) is not None:
            with _timer(timings, "timing/old_log_prob"):
                recomputed = compute_log_probs(self.model, later, **self._log_prob_options())
                batch.old_log_probs = with_on_policy_rows_marked(on_policy_rows, recomputed)
        return self._rollout_mismatch(batch)

    def _rollout_mismatch(self, batch: RolloutBatch) -> dict[str, float]:
        """verl's mismatch metrics over every rank's rows; with rollout correction on, this rank's importance
        weights (``batch.rollout_is_weights``). Nothing when the sampler's log-probs are missing (e.g. surplus
        groups restored from a checkpoint that had none)."""
        if batch.rollout_log_probs is None or batch.old_log_probs is None:
            return {}
        local = (batch.old_log_probs, batch.rollout_log_probs, batch.response_mask)
        parts = self.dist.all_gather_objects(tuple(t.cpu() for t in local)) if self.dist.is_distributed else [local]
        old, rollout, mask = (torch.cat([part[i].cpu() for part in parts]) for i in range(3))
        metrics = rollout_mismatch_metrics(old, rollout, mask)
        correction = self.config.algorithm.rollout_correction
        if correction.rollout_is:
            options = dict(level=correction.rollout_is, threshold=correction.rollout_is_threshold)
            batch.rollout_is_weights = rollout_importance_weights(*local, **options)
            metrics.update(importance_weight_metrics(rollout_importance_weights(old, rollout, mask, **options), mask,
                                                     correction.rollout_is_threshold))
        return metrics

    def compute_reference_log_probs(self, batch: RolloutBatch, timings: dict[str, float]) -> None:
        """Set ``batch.ref_log_probs`` (this rank's rows) when the KL loss needs the reference policy."""
        if self.config.actor_rollout_ref.actor.use_kl_loss:
            with _timer(timings, "timing/ref"), self._reference() as reference:
                batch.ref_log_probs = compute_log_probs(reference, batch, **self._log_prob_options())

    @contextmanager
    def _reference(self):
        """The KL reference policy: its own frozen copy, or with LoRA the base (the policy, adapters off)."""
        if self.lora is None:
            yield self.ref_model
            return
        with self.lora.adapters_disabled():
            yield self.model

    def update(self, batch: RolloutBatch) -> dict[str, float]:
        self.engine.release_memory()
        metrics = update_policy(self.model, self.optimizer, batch, self.config.actor_rollout_ref.actor,
                                n=self.config.actor_rollout_ref.rollout.n,
                                temperature=self.config.actor_rollout_ref.rollout.temperature,
                                autocast_dtype=self.autocast_dtype,
                                max_response_length=self.config.data.max_response_length, dist=self.dist,
                                policy_loss=self.policy_loss)
        self._rollout_stale = True
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
        """Tokens per second of the whole run (all ranks), from rank 0's timings."""
        trained = batch.response_mask.sum().item() + batch.prompt_mask.sum().item()
        throughput = {"train/trained_tokens": float(trained),
                      "perf/train_tokens_per_s": trained / max(metrics["timing/update"], 1e-9)}
        if metrics.get("timing/gen", 0.0) > 0:  # a step filled from surplus alone generated nothing
            throughput["perf/gen_tokens_per_s"] = metrics["train/generated_tokens"] / metrics["timing/gen"]
        return throughput

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
        # Validation ids are their own (negative) space: the same noise at every evaluation (common random
        # numbers make the curve smoother) and training samples do not depend on when validation ran.
        val_ids = -1 - torch.tensor([p.index for p in prompts], dtype=torch.long)
        batch, _ = self.generate_and_score(prompts, params, group_ids=val_ids)
        if self.config.trainer.log_val_generations > 0 and self.is_main:
            self.val_samples.write(self.global_step, prompts, batch, self.tokenizer)
        return {"val/score_mean": batch.seq_reward.mean().item(), "val/acc_mean": batch.acc.mean().item(),
                "val/response_length_mean": batch.response_lengths.float().mean().item(),
                "timing/val": time.perf_counter() - start}

    # ----------------------------------------------------------------------------------------------- loop
    def fit(self) -> dict[str, float]:
        """Train for ``total_steps``; validate and checkpoint on schedule. Returns the last step's metrics.

        SIGINT / SIGTERM let the current step finish, write a checkpoint and raise :class:`TrainingInterrupted`.
        """
        cfg = self.config.trainer
        logger = self._metrics_logger() if self.is_main else None
        if self.is_main:
            (self.output_dir / "config.yaml").write_text(to_yaml(self.config))
        last: dict[str, float] = {}
        progress = None
        try:
            with StopRequest() as stop:
                if cfg.val_before_train and self.global_step == 0:
                    last = self.validate()
                    self._log(logger, 0, last)
                    crash_point("after_validation", 0)
                    if "console" in cfg.logger and self.is_main and last:
                        print(summary_line(0, last), flush=True)  # the starting accuracy, before any update
                progress = tqdm(total=self.total_steps, initial=self.global_step, desc="training steps",
                                disable=not self.is_main, dynamic_ncols=True)
                try:
                    while self.global_step < self.total_steps:
                        last = self._fit_one_step(logger, progress)
                        # Ranks stop together: a signal that reached any rank stops all after this step.
                        if self.dist.all_reduce_max(int(stop.signal_name is not None)):
                            path = self.save_checkpoint()
                            raise TrainingInterrupted(stop.signal_name or "SIGTERM", self.global_step, path)
                finally:
                    progress.close()  # ends the bar's line: what is printed next (a stop message) gets its own
            self.save_final_model()
        finally:
            if progress is not None:
                progress.close()  # an error's one line then starts on a line of its own
            if logger is not None:
                logger.close()
            if self.is_main:
                release_lock(self.output_dir)
        return last

    def _metrics_logger(self) -> MetricsLogger:
        """metrics.jsonl plus the sinks in trainer.logger (tensorboard, wandb, mlflow); rank 0 only."""
        cfg = self.config.trainer
        config = OmegaConf.to_container(OmegaConf.structured(self.config))
        sinks = build_sinks(cfg.logger, self.output_dir, project=cfg.project_name, name=self.run_name, config=config)
        return MetricsLogger(self.output_dir, cfg.logger, resume_step=self._resumed_step, sinks=sinks)

    def _fit_one_step(self, logger: MetricsLogger | None, progress: tqdm) -> dict[str, float]:
        cfg = self.config.trainer
        metrics = self.train_step()
        self.global_step += 1
        is_last = self.global_step == self.total_steps
        if (cfg.test_freq > 0 and self.global_step % cfg.test_freq == 0) or is_last:
            metrics.update(self.validate())
        self._log(logger, self.global_step, metrics)  # the row before the checkpoint: see gspo.trainer.run_folder
        crash_point("after_row", self.global_step)
        if (cfg.save_freq > 0 and self.global_step % cfg.save_freq == 0) or is_last:
            self.save_checkpoint()
        progress.update(1)
        if "console" in cfg.logger and self.is_main:
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

    def save_checkpoint(self) -> Path:
        """Sharded checkpoint of this step (every rank calls it; see :mod:`gspo.trainer.checkpoint`)."""
        root = self.output_dir / "checkpoints"
        if self._saved_step == self.global_step:  # e.g. a stop signal right after the last step's checkpoint
            return root / f"global_step_{self.global_step}"
        self._saved_step = self.global_step
        state, tensors = self._trainer_state()
        return save_checkpoint(root, self.global_step, model=self.model,
                               hf_model=self.export_template, tokenizer=self.tokenizer, optimizer=self.optimizer,
                               scheduler=self.scheduler, trainer_state=state, tensors=tensors,
                               config_yaml=to_yaml(self.config),
                               max_to_keep=self.config.trainer.max_actor_ckpt_to_keep, dist=self.dist,
                               export=self.lora and self.lora.checkpoint_export(self.tokenizer, self.dist),
                               export_dtype=self.export_dtype)

    def save_final_model(self) -> Path:
        """The trained policy as a plain HF folder (safetensors + tokenizer), gathered to rank 0."""
        final = self.output_dir / "final_model"
        if self.lora is not None:  # merged plain HF model, and the PEFT adapter beside it
            self.lora.save_final(final, self.output_dir / "final_adapter", self.tokenizer, self.dist,
                                 save_folder=partial(save_hf_folder_atomically, marker={"step": self.global_step},
                                                     dtype=self.export_dtype))
            self.dist.barrier()
            return final
        state_dict = full_model_state_dict(self.model, self.dist)
        if self.is_main:  # a re-run's export replaces the previous one whole, never leaving it half written
            save_hf_folder_atomically(final, hf_model=self.export_template, state_dict=state_dict,
                                      tokenizer=self.tokenizer, marker={"step": self.global_step},
                                      dtype=self.export_dtype)
        self.dist.barrier()
        return final

    def _maybe_resume(self) -> None:
        path = self._resume_from
        if path is None:
            return
        if self.lora is not None:
            self.lora.check_base(path)
        state = load_checkpoint(path, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler,
                                dist=self.dist)
        self._rollout_stale = True
        self.sampler.load_state_dict(state.trainer_state["sampler"])
        self.sampling_state.load_state_dict(state.trainer_state["dynamic_sampling"], state.tensors)
        self._next_group_id = state.trainer_state["next_group_id"]
        self.global_step = self._resumed_step = state.step
        log.info("resumed from %s at step %d", path, state.step)


@contextmanager
def _timer(timings: dict[str, float], name: str):
    """Adds elapsed seconds to ``timings[name]`` (sums over repeated phases such as several gen batches)."""
    start = time.perf_counter()
    yield
    timings[name] = timings.get(name, 0.0) + time.perf_counter() - start
