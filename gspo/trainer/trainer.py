"""The GSPO trainer. One step reads as the algorithm: generate -> score -> filter -> advantages -> update.

The parts come from :func:`gspo.trainer.builder.build_training_parts`; the train batch from a
:class:`~gspo.trainer.producer.BatchProducer`; the update from :class:`~gspo.trainer.update.PolicyUpdate`. This
module is the loop around them: steps, validation, checkpoints, resume and the final export.
"""

from __future__ import annotations

import logging
import time
from functools import partial
from pathlib import Path

import torch
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from gspo.algos import ADV_ESTIMATORS
from gspo.config import GSPOConfig, to_yaml
from gspo.rollout import SamplingParams
from gspo.trainer.batch import RolloutBatch
from gspo.trainer.builder import build_training_parts
from gspo.trainer.checkpoint import (
    full_model_state_dict,
    load_checkpoint,
    save_checkpoint,
    save_hf_folder_atomically,
)
from gspo.trainer.dynamic_sampling import trained_batch_metrics
from gspo.trainer.metrics import MetricsLogger, summary_line
from gspo.trainer.parallel import local_rows
from gspo.trainer.producer import BatchProducer
from gspo.trainer.run_folder import crash_point, release_lock
from gspo.trainer.signals import StopRequest, TrainingInterrupted
from gspo.trainer.sinks import build_sinks
from gspo.trainer.timing import timer
from gspo.trainer.val_samples import ValidationSamples

log = logging.getLogger(__name__)


class Trainer:
    """Builds a run's parts from a :class:`GSPOConfig` (resuming when the config says so), then ``fit()`` trains.

    One trainer per process. Under ``torchrun`` every rank builds the same state from the same seed; prompts of
    each generation batch are split across ranks and the scored groups gathered back, so the dynamic-sampling
    decision is made identically everywhere; the update is data-parallel with FSDP2; only rank 0 logs and
    writes files other than checkpoint shards.
    """

    def __init__(self, config: GSPOConfig):
        parts = build_training_parts(config)
        self.config = config
        self.dist, self.device, self.output_dir = parts.dist, parts.device, parts.output_dir
        self.is_main = self.dist.is_main
        self.tokenizer, self.train_data, self.val_data = parts.tokenizer, parts.train_data, parts.val_data
        self.model, self.lora, self.engine = parts.model, parts.lora, parts.engine
        self.optimizer, self.scheduler = parts.optimizer, parts.scheduler
        self.export_template, self.export_dtype = parts.export_template, parts.export_dtype
        self.total_steps = parts.total_steps
        self.generator = parts.generator  # validation samples with it
        self.producer: BatchProducer = parts.producer
        self.policy_update = parts.policy_update
        self.global_step = 0
        self._consecutive_skips = 0
        self._saved_step: int | None = None
        self._resumed_step: int | None = None
        self.run_name = config.trainer.experiment_name or self.output_dir.resolve().name
        self.val_samples = ValidationSamples(self.output_dir, config.trainer.log_val_generations)
        if parts.resume_from is not None:
            self._resume(parts.resume_from)

    # ------------------------------------------------------------------------------------------------- step
    def train_step(self) -> dict[str, float]:
        """One optimizer-step batch: (generate -> score -> filter)+ -> advantages -> update."""
        timings: dict[str, float] = {}
        with timer(timings, "timing/step"):
            batch, metrics = self.producer.produce(self.global_step)
            with timer(timings, "timing/adv"):
                batch.advantages = self.compute_advantages(batch)
            batch = batch.to(self.device)
            metrics.update(self.update(batch, timings))
        metrics.update(trained_batch_metrics(batch))
        metrics.update(timings)
        metrics.update(self._throughput(batch, metrics))
        return metrics

    def compute_advantages(self, batch: RolloutBatch) -> torch.Tensor:
        """(N,) one advantage per sequence, relative to its prompt group (``algorithm.adv_estimator``)."""
        algorithm = self.config.algorithm
        return ADV_ESTIMATORS[algorithm.adv_estimator](batch.seq_final_reward, batch.group_ids,
                                                       norm_adv_by_std=algorithm.norm_adv_by_std_in_grpo)

    def update(self, batch: RolloutBatch, timings: dict[str, float]) -> dict[str, float]:
        """The policy update on this rank's rows of ``batch``, then one step of the learning-rate schedule.

        Device memory goes in the order the passes need it: the producer frees what generation holds before the
        first trainer forward (old log-probs, reference, optimizer steps) and hears of the new weights after the
        last; the engine takes its memory back when it next generates."""
        local = local_rows(batch, self.policy_update.context.mini_batch_rows, self.dist)
        self.producer.before_update()
        metrics = self.policy_update.prepare(local, step=self.global_step, timings=timings)
        with timer(timings, "timing/update"):
            metrics.update(self.policy_update.optimize(local))
            metrics["actor/lr"] = self.scheduler.get_last_lr()[0]
            self.scheduler.step()
            self._track_skips(int(metrics["actor/skipped_updates"]), int(metrics["actor/num_updates"]))
        self.producer.weights_changed()  # a rollout pool gets the new version now (timing/weight_sync)
        metrics.update(self.producer.update_metrics())
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
        batch, _ = self.generator.generate_and_score(prompts, params, val_ids, step=self.global_step)
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
        if cfg.test_freq > 0 and (self.global_step % cfg.test_freq == 0 or is_last):  # verl's rule
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
    def save_checkpoint(self) -> Path:
        """Sharded checkpoint of this step (every rank calls it; see :mod:`gspo.trainer.checkpoint`)."""
        root = self.output_dir / "checkpoints"
        if self._saved_step == self.global_step:  # e.g. a stop signal right after the last step's checkpoint
            return root / f"global_step_{self.global_step}"
        self._saved_step = self.global_step
        state, tensors = self.producer.state_dict()
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

    def _resume(self, path: Path) -> None:
        """Weights, optimizer, schedule and the producer's state from the checkpoint at ``path``."""
        if self.lora is not None:
            self.lora.check_base(path)
        state = load_checkpoint(path, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler,
                                dist=self.dist)
        self.producer.weights_changed()
        self.producer.load_state_dict(state.trainer_state, state.tensors)
        self.global_step = self._resumed_step = state.step
        log.info("resumed from %s at step %d", path, state.step)
