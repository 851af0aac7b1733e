"""Construction: every part of a run, built from a :class:`GSPOConfig` in the order that fails cheapest first.

Data, reward and loss are checked before any weights load; the resume is planned (and a mismatched checkpoint
refused) before the model loads; the rollout engine is built before FSDP shards the policy, because the hf engine
copies the unsharded policy. :class:`gspo.trainer.Trainer` takes the parts and runs the loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from gspo.config import GSPOConfig
from gspo.data import PromptDataset
from gspo.distributed import DistContext, init_distributed
from gspo.model.folder import stored_dtype
from gspo.model.loading import (
    autocast_dtype,
    enable_activation_checkpointing,
    eos_token_ids,
    load_causal_lm,
    load_tokenizer,
    resolve_device,
)
from gspo.resources import resolve_path
from gspo.rollout import EngineSpec, RolloutEngine, build_rollout_engine
from gspo.trainer.async_rollout import AsyncBatchProducer, AsyncPools, RolloutWorker, init_async_pools
from gspo.trainer.dropout import disable_dropout
from gspo.trainer.generation import GroupGenerator
from gspo.trainer.lora import LoRAPolicy, base_dtype
from gspo.trainer.old_policy import choose_rollout_log_probs
from gspo.trainer.optim import build_optimizer, build_scheduler
from gspo.trainer.parallel import check_data_parallel, export_template, shard_model
from gspo.trainer.preflight import (
    build_dataset,
    build_policy_loss,
    build_reward_manager,
    check_runnable,
    check_writable,
    count_training_steps,
    seed_everything,
)
from gspo.trainer.producer import BatchProducer, SyncBatchProducer
from gspo.trainer.resume import plan_resume
from gspo.trainer.run_folder import open_run_folder, start_launcher_watchdog
from gspo.trainer.sharded_loading import load_sharded_causal_lm
from gspo.trainer.update import PolicyUpdate
from gspo.trainer.update_context import UpdateContext


@dataclass(frozen=True)
class TrainingParts:
    """What a run is made of; the trainer's loop composes these and builds nothing itself."""

    config: GSPOConfig
    dist: DistContext
    device: torch.device
    output_dir: Path  # trainer.default_local_dir, locked for this run
    tokenizer: PreTrainedTokenizerBase
    train_data: PromptDataset
    val_data: PromptDataset | None
    model: PreTrainedModel  # the policy (FSDP2-sharded under torchrun)
    lora: LoRAPolicy | None  # None: full fine-tuning
    engine: RolloutEngine
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    export_template: PreTrainedModel  # meta-device model of the policy's class: checkpoints and final_model
    export_dtype: torch.dtype | None  # the dtype the model folder stores, kept by every export
    total_steps: int
    resume_from: Path | None  # a verified checkpoint of this same run, or None
    generator: GroupGenerator  # validation generates with it too
    producer: BatchProducer  # SyncBatchProducer, or AsyncBatchProducer with a rollout pool
    policy_update: PolicyUpdate


def build_training_parts(config: GSPOConfig) -> TrainingParts:
    """Build a run's parts: the process group, run folder lock and seed first, then data and checks, then the
    policy, its engine, FSDP, the reference, the optimizer, and the producer and update around them."""
    cfg = config
    dist = init_distributed(cfg.trainer.device)
    pools = init_async_pools(cfg, dist)  # None without a rollout pool
    if pools is not None:
        dist = pools.dist  # the trainer pool: the update's collectives stay inside it
    check_data_parallel(cfg, dist.world_size)
    output_dir = Path(cfg.trainer.default_local_dir)
    check_writable(output_dir, dist.rank)
    open_run_folder(output_dir, cfg.trainer.resume_mode, dist)  # lock: one run per folder
    seed_everything(cfg.trainer.seed)
    device = resolve_device(cfg.trainer.device)
    if device.type == "cuda" and dist.is_distributed:
        device = torch.device("cuda", dist.local_rank)

    # Cheap checks first (data, reward), so bad input fails before model weights are loaded.
    model_path = cfg.actor_rollout_ref.model.path
    tokenizer = load_tokenizer(model_path)
    train_data = build_dataset(cfg, "data.train_files", tokenizer)
    val_data = build_dataset(cfg, "data.val_files", tokenizer) if cfg.data.val_files else None
    check_runnable(cfg, train_data, val_data)
    rewards = build_reward_manager(cfg)
    policy_loss = build_policy_loss(cfg)
    total_steps = count_training_steps(cfg, len(train_data))
    resume_from = plan_resume(cfg, output_dir, total_steps, dist)  # verified, same run

    model, lora = _build_policy(cfg, dist, device)
    export_dtype = stored_dtype(resolve_path(model_path))  # final_model / checkpoint model/ keep it
    template = export_template(model)  # checkpoints and final_model never touch the engine
    # Built after sharding: under FSDP the hf engine generates with the sharded policy (gathered per phase).
    engine = _build_engine(cfg, model, tokenizer, device, dist.world_size, own_process=pools is not None)
    reference_model = _build_reference(cfg, model_path, lora, dist, device)
    optimizer = build_optimizer(model, cfg.actor_rollout_ref.actor.optim)
    scheduler = build_scheduler(optimizer, cfg.actor_rollout_ref.actor.optim, total_steps)

    generator = GroupGenerator(engine=engine, policy=model, tokenizer=tokenizer, rewards=rewards, device=device,
                               dist=dist, seed=cfg.trainer.seed, push_trainable_only=lora is not None)
    context = UpdateContext(
        model=model, optimizer=optimizer, actor=cfg.actor_rollout_ref.actor,
        responses_per_prompt=cfg.actor_rollout_ref.rollout.n, temperature=cfg.actor_rollout_ref.rollout.temperature,
        max_response_length=cfg.data.max_response_length, policy_loss=policy_loss,
        # Under FSDP its bf16 parameter casting replaces autocast on CUDA.
        autocast_dtype=None if dist.is_distributed else autocast_dtype(device), dist=dist,
        reference_model=reference_model, lora=lora,
        use_rollout_log_probs=choose_rollout_log_probs(
            cfg.actor_rollout_ref.actor.use_rollout_log_probs, engine_matches_trainer=engine.log_probs_match_trainer,
            rollout_is=cfg.algorithm.rollout_correction.rollout_is),
        rollout_correction=cfg.algorithm.rollout_correction,
        behaviour_weight_cap=None if pools is None else cfg.async_training.behav_imp_weight_cap)
    producer = SyncBatchProducer(generator, train_data, cfg) if pools is None else AsyncBatchProducer(
        pools, cfg, total_steps=total_steps, model=model, generator=generator, device=device)
    return TrainingParts(
        config=cfg, dist=dist, device=device, output_dir=output_dir, tokenizer=tokenizer, train_data=train_data,
        val_data=val_data, model=model, lora=lora, engine=engine, optimizer=optimizer, scheduler=scheduler,
        export_template=template, export_dtype=export_dtype, total_steps=total_steps,
        resume_from=resume_from, generator=generator, producer=producer, policy_update=PolicyUpdate(context))


def build_rollout_worker(config: GSPOConfig) -> RolloutWorker:
    """A rollout rank's parts: its pool, data, reward, its own copy of the policy, the engine and the producer
    (the same dynamic sampling as a synchronous run); no run folder, optimizer or checkpoint of its own."""
    cfg = config
    pools: AsyncPools | None = init_async_pools(cfg, init_distributed(cfg.trainer.device))
    assert pools is not None and pools.role == "rollout"
    start_launcher_watchdog()  # no orphan: it exits when its launcher dies
    seed_everything(cfg.trainer.seed)
    device = resolve_device(cfg.trainer.device)
    if device.type == "cuda":
        device = torch.device("cuda", pools.local_rank)
    model_path = cfg.actor_rollout_ref.model.path
    tokenizer = load_tokenizer(model_path)
    train_data = build_dataset(cfg, "data.train_files", tokenizer)
    rewards = build_reward_manager(cfg)
    model_cfg = cfg.actor_rollout_ref.model
    model = load_causal_lm(model_path, device, base_dtype(model_cfg, device))
    if model_cfg.disable_dropout:
        disable_dropout(model)
    LoRAPolicy.attach(model, model_cfg)  # the trainer's adapters (B = 0: the base), then each published version
    # Parameters keep requires_grad as the trainer's do: frozen ones take other CPU kernels whose last bits
    # differ, and generation must be the synchronous run's bit for bit (it runs under no_grad either way).
    engine = _build_engine(cfg, model, tokenizer, device, pools.dist.world_size, own_process=True)
    generator = GroupGenerator(engine=engine, policy=model, tokenizer=tokenizer, rewards=rewards, device=device,
                               dist=pools.dist, seed=cfg.trainer.seed)
    return RolloutWorker(pools, cfg, producer=SyncBatchProducer(generator, train_data, cfg), generator=generator,
                         model=model, device=device)


def _build_engine(cfg: GSPOConfig, model: PreTrainedModel, tokenizer, device: torch.device, world_size: int, *,
                  own_process: bool) -> RolloutEngine:
    """The rollout engine for ``model`` (the policy as this rank holds it) from ``actor_rollout_ref.rollout``;
    ``world_size``: the processes that generate together; ``own_process``: beside a rollout pool."""
    return build_rollout_engine(EngineSpec(
        model_path=resolve_path(cfg.actor_rollout_ref.model.path), policy=lambda: model,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_ids=[] if cfg.actor_rollout_ref.rollout.ignore_eos else eos_token_ids(tokenizer, model),
        device=device, rollout=cfg.actor_rollout_ref.rollout, max_prompt_length=cfg.data.max_prompt_length,
        max_response_length=cfg.data.max_response_length, world_size=world_size,
        lora_rank=cfg.actor_rollout_ref.model.lora_rank, own_process=own_process))


def _build_policy(cfg: GSPOConfig, dist: DistContext, device: torch.device
                  ) -> tuple[PreTrainedModel, LoRAPolicy | None]:
    """The policy on ``device`` (FSDP2-sharded under torchrun: rank 0 reads the checkpoint, the others receive
    their shards), dropout off if asked, LoRA adapters attached (None: full fine-tuning)."""
    model_cfg = cfg.actor_rollout_ref.model

    def prepare(model: PreTrainedModel) -> None:
        if model_cfg.disable_dropout:
            disable_dropout(model)
        if model_cfg.enable_gradient_checkpointing:
            enable_activation_checkpointing(model)

    # Rank 0 reads and sends each block to the others (torch's broadcast over the whole world: not beside a
    # rollout pool, whose trainer pool is a sub-group; there every trainer rank reads the folder).
    if dist.is_distributed and model_cfg.lora_rank == 0 and dist.group is None:
        return _load_sharded(cfg, model_cfg.path, dist, device, prepare), None
    # LoRA fingerprints the base weights before attaching: every rank loads the base, then shards.
    model = load_causal_lm(model_cfg.path, device, base_dtype(model_cfg, device))
    if model_cfg.disable_dropout:  # before the adapters: their lora_dropout is the user's
        disable_dropout(model)
    lora = LoRAPolicy.attach(model, model_cfg)
    if model_cfg.enable_gradient_checkpointing:
        enable_activation_checkpointing(model)
    if dist.is_distributed:
        _shard(model, cfg, dist, device)
    return model, lora


def _load_sharded(cfg: GSPOConfig, model_path: str, dist: DistContext, device: torch.device,
                  prepare) -> PreTrainedModel:
    fsdp = cfg.actor_rollout_ref.actor.fsdp_config
    offload = device.type == "cuda" and (fsdp.param_offload or fsdp.optimizer_offload)
    return load_sharded_causal_lm(model_path, dist, device=device, prepare=prepare,
                                  shard=lambda model: _shard(model, cfg, dist, device),
                                  shard_device=torch.device("cpu") if offload else None)


def _shard(model: PreTrainedModel, cfg: GSPOConfig, dist: DistContext, device: torch.device) -> None:
    """FSDP2 over the ranks; on CUDA in bf16 (FSDP's parameter casting), optionally offloaded to the CPU."""
    fsdp = cfg.actor_rollout_ref.actor.fsdp_config
    on_cuda = device.type == "cuda"  # on CPU the state already lives in host memory: offload is moot
    shard_model(model, world_size=dist.world_size, bf16=on_cuda, group=dist.group,
                cpu_offload=on_cuda and (fsdp.param_offload or fsdp.optimizer_offload), device_type=device.type)


def _build_reference(cfg: GSPOConfig, model_path: str, lora: LoRAPolicy | None, dist: DistContext,
                     device: torch.device) -> PreTrainedModel | None:
    """The frozen KL reference copy, or None: without the KL loss, and with LoRA, whose reference is the policy
    with its adapters switched off (the copy would cost a full set of weights)."""
    if not cfg.actor_rollout_ref.actor.use_kl_loss or lora is not None:
        return None

    def freeze(model: PreTrainedModel) -> None:
        model.eval().requires_grad_(False)
        if cfg.actor_rollout_ref.model.disable_dropout:
            disable_dropout(model)

    if dist.is_distributed and dist.group is None:
        return _load_sharded(cfg, model_path, dist, device, freeze)
    reference = load_causal_lm(model_path, device)
    freeze(reference)
    if dist.is_distributed:
        _shard(reference, cfg, dist, device)
    return reference
