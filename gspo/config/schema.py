"""The typed configuration schema of gspo: dataclasses are the only home of defaults, and the comment above
each field is its documentation (``gspo config`` prints it).

Units: batch sizes named ``*_batch_size`` count prompts unless they end in ``_per_gpu`` (sequences);
lengths count tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, get_type_hints

from gspo.config.rollout import RolloutConfig, new_rollout_config

FILTER_METRICS = ("seq_reward", "seq_final_reward", "acc")
RESUME_MODES = ("auto", "disable", "resume_path")
DEVICES = ("auto", "cpu", "cuda")
LOGGERS = ("console", "tensorboard", "wandb", "mlflow")
CHAT_TEMPLATE_MODES = ("auto", "always", "never")
REWARD_ON_ERROR_MODES = ("raise", "zero")


@dataclass
class DataConfig:
    # Training prompt files (.parquet / .jsonl; embedded:// for shipped data); one file may be given bare.
    train_files: list[str] = field(default_factory=lambda: ["~/data/rlhf/gsm8k/train.parquet"])
    # Validation prompt files, scored greedily every trainer.test_freq steps; [] = no validation.
    val_files: list[str] = field(default_factory=lambda: ["~/data/rlhf/gsm8k/test.parquet"])
    # Column holding the prompt: a string or a list of chat messages ({role, content}).
    prompt_key: str = "prompt"
    # Prompt tokens (after the chat template); longer prompts are dropped or raise, never cut.
    max_prompt_length: int = 512
    # Generated tokens per response at most.
    max_response_length: int = 512
    # Prompts per optimizer-step batch (each with rollout.n responses).
    train_batch_size: int = 1024
    # Prompts drawn per generation batch; None = train_batch_size. Larger than train_batch_size leaves
    # room for groups that dynamic sampling drops.
    gen_batch_size: int | None = None
    # Drop prompts longer than max_prompt_length (a warning counts them); false: raise.
    filter_overlong_prompts: bool = False
    # auto: when the tokenizer has a chat template; always; never (raw text).
    apply_chat_template: str = "auto"
    # Shuffle the training prompts each epoch (seeded by trainer.seed).
    shuffle: bool = True


@dataclass
class ModelConfig:
    # Local HF model folder (config.json, weights, tokenizer); nothing is downloaded.
    path: str = "embedded://addition"
    # Recompute activations in the backward pass: less memory, about one extra forward of compute.
    enable_gradient_checkpointing: bool = True
    # LoRA through peft (`pip install -e '.[lora]'`), verl's keys: adapter rank, 0 = full fine-tuning. With a rank,
    # only the adapters train (fp32), the base is frozen (bf16 on CUDA), the KL reference is the base with the
    # adapters switched off, and final_model/ is the merged model (gspo/trainer/lora.py).
    lora_rank: int = 0
    # Adapter output scale alpha / rank.
    lora_alpha: float = 16.0
    # "all-linear" (every linear layer but the LM head, peft's shorthand) or a list of module names / suffixes.
    target_modules: Any = "all-linear"
    # Dropout on the adapter input in training forward passes (peft's lora_dropout). Above 0 the importance ratio
    # against the (dropout-free) old policy carries dropout noise, which GSPO's narrow clip range mostly clips.
    lora_dropout: float = 0.0
    # Zero the model's dropout in every forward, as TRL does for RL: dropout noise alone moves GSPO's sequence
    # ratio past its 3e-4 clip. false keeps the checkpoint's dropout in the update (other passes run in eval mode).
    disable_dropout: bool = True


@dataclass
class PolicyLossConfig:
    # A registered loss (gspo, vanilla), or, with `path`, the name you give the loss loaded from that file.
    loss_mode: str = "vanilla"
    # A Python file whose function `name` is the policy loss (as custom_reward_function.path / name); protocol in
    # gspo/algos/registry.py: it returns the per-token loss and its metrics, gspo aggregates.
    path: str | None = None
    # The function in policy_loss.path that computes the loss.
    name: str = "compute_policy_loss"


@dataclass
class OptimConfig:
    # AdamW learning rate.
    lr: float = 1e-6
    # Share of the training steps with a linear learning-rate warm-up.
    lr_warmup_steps_ratio: float = 0.0
    # Warm-up steps; >= 0 wins over lr_warmup_steps_ratio, -1 uses the ratio (verl's rule).
    lr_warmup_steps: int = -1
    # AdamW weight decay.
    weight_decay: float = 0.01


@dataclass
class FSDPConfig:
    """Data-parallel runs only (torchrun, more than one rank)."""

    # Keep sharded parameters, gradients and optimizer state on the CPU and run the optimizer step there; FSDP2
    # offloads the three together, so either switch turns it on. Saves GPU memory, costs step time. No effect on CPU.
    param_offload: bool = False
    # Same switch as param_offload (FSDP2 offloads the three together).
    optimizer_offload: bool = False


@dataclass
class ActorConfig:
    policy_loss: PolicyLossConfig = field(default_factory=PolicyLossConfig)
    # Lower clip range of the importance ratio: 1 - clip_ratio_low. With policy_loss.loss_mode=gspo and no value
    # given, the GSPO paper's 3e-4 (gspo/config/verl_defaults.py).
    clip_ratio_low: float = 0.2
    # Upper clip range of the importance ratio: 1 + clip_ratio_high. With policy_loss.loss_mode=gspo and no value
    # given, the GSPO paper's 4e-4.
    clip_ratio_high: float = 0.2
    # Dual-clip bound for negative advantages in the vanilla (PPO) loss; must be > 1.
    clip_ratio_c: float = 3.0
    # How token losses become one number: token-mean, seq-mean-token-sum, seq-mean-token-mean or
    # seq-mean-token-sum-norm (divides by N_seq x data.max_response_length, verl by the length alone: README).
    loss_agg_mode: str = "token-mean"
    # Prompts per optimizer step; more than one mini-batch per train batch makes the update off-policy.
    ppo_mini_batch_size: int = 256
    # Sequences per forward/backward; gradients accumulate over micro-batches.
    ppo_micro_batch_size_per_gpu: int = 256
    # Passes over each training batch per step.
    ppo_epochs: int = 1
    # Pack sequences by length into micro-batches of at most ppo_max_token_len_per_gpu padded tokens (rows x longest
    # prompt + response) instead of ppo_micro_batch_size_per_gpu rows; the update is unchanged, less padding work.
    use_dynamic_bsz: bool = False
    # With use_dynamic_bsz: padded tokens per update micro-batch at most.
    ppo_max_token_len_per_gpu: int = 16384
    # With use_dynamic_bsz: the token budget of the no-grad log-prob passes (old policy, reference), which keep no
    # activations and can take larger packs; null = ppo_max_token_len_per_gpu. verl's ref. / rollout.
    # log_prob_max_token_len_per_gpu set it.
    log_prob_max_token_len_per_gpu: int | None = None
    # Compute log-probs / entropy over the vocabulary in chunks of this many positions (0: all at once); bounds
    # the float32 logits copy for large vocabularies.
    logits_chunk_size: int = 0
    # Use the sampler's log-probs as the old policy's instead of recomputing them with a forward pass over the
    # batch. Saves that pass; they differ from a recomputation by the KV-cached decode's float noise (~1e-6 in
    # fp32; ~1e-2 in bf16, where rollout and training kernels round differently). null (auto): decided by the
    # old-policy rule, gspo/trainer/old_policy.py, which also says which rows use them and when the mismatch is
    # logged (training/rollout_probs_diff_*).
    use_rollout_log_probs: bool | None = None
    # Encode each group's prompt once for all its responses in the log-prob and update passes (same result, fewer
    # tokens: P + nR instead of n(P + R) per group). Off under activation checkpointing (HF disables the KV cache).
    share_prompt_forward: bool = True
    # Gradient-norm clipping threshold.
    grad_clip: float = 1.0
    # Weight of the entropy bonus in the loss; 0 = none.
    entropy_coeff: float = 0.0
    # With entropy_coeff != 0: recompute the entropy's softmax in backward instead of keeping it from the forward
    # (one (N, R, V) float32 tensor less per micro-batch, a softmax more); combine with logits_chunk_size.
    entropy_checkpointing: bool = False
    # Add a KL-to-reference loss term (loads a frozen copy of the initial model).
    use_kl_loss: bool = False
    # Weight of the KL loss term.
    kl_loss_coef: float = 0.001
    # KL estimator of the loss term: kl (k1), abs, mse (k2), low_var_kl (k3).
    kl_loss_type: str = "low_var_kl"
    optim: OptimConfig = field(default_factory=OptimConfig)
    fsdp_config: FSDPConfig = field(default_factory=FSDPConfig)


@dataclass
class ActorRolloutRefConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    actor: ActorConfig = field(default_factory=ActorConfig)
    # The keys every engine reads, then each registered engine's own (gspo/config/rollout.py).
    rollout: RolloutConfig = field(default_factory=new_rollout_config)


@dataclass
class PrefilterConfig:
    """Skip, before generation, prompts whose recent groups were all-equal (solved or failed every time)."""

    # Skip prompts that were all-equal on their recent visits (needs filter_groups.enable).
    enable: bool = False
    # Consecutive all-equal visits after which a prompt is skipped.
    min_constant_visits: int = 2
    # Chance that a skipped prompt is generated anyway, so none is lost for good.
    readmit_prob: float = 0.1
    # GRESO-style (arXiv 2506.02177): the chance falls with the streak, readmit_prob ** (streak - min_constant_visits
    # + 1), so a prompt all-equal on every re-admission is generated ever more rarely (still never zero).
    readmit_decay: bool = False
    # Chance for a skipped prompt whose last group all failed (accuracy 0), constant whatever the streak: failed
    # prompts are the ones a learning policy starts to solve, so they come back without back-off. null = the rule
    # above for every skipped prompt.
    failed_readmit_prob: float | None = None
    # Probe instead of skipping: a prompt the prefilter would skip gets this many responses first, and the other
    # rollout.n minus this many only when one of them scores unlike its last all-equal group (a failed prompt
    # answered right, a solved one answered wrong); otherwise the probe is dropped and the streak grows. A check
    # that costs probe_responses / n of a group, so prompts that turn learnable are caught early. 0 = skip.
    probe_responses: int = 0


@dataclass
class FilterGroupsConfig:
    # DAPO dynamic sampling: drop groups whose responses all score the same.
    enable: bool = False
    # What must vary within a kept group: acc, seq_reward or seq_final_reward.
    metric: str = "acc"
    # Generation batches per training step before giving up; <= 0: unlimited.
    max_num_gen_batches: int = 0
    # Carry kept groups beyond train_batch_size into the next step instead of dropping them (verl drops them).
    keep_surplus: bool = False
    # Surplus groups older than this many steps are dropped (their samples come from an older policy).
    max_surplus_age: int = 1
    # Size each generation batch from the running keep ratio so one batch usually fills the train batch.
    adaptive_gen_batch_size: bool = False
    prefilter: PrefilterConfig = field(default_factory=PrefilterConfig)


@dataclass
class RolloutCorrectionConfig:
    """verl's rollout correction: truncated importance weights min(pi_old / pi_rollout, threshold) on the loss,
    for the mismatch between the engine's sampling distribution and the trainer's (needs recomputed old log-probs)."""

    # Level of the weight: null (off) | token (one per token; vanilla PPO) | geometric (the geometric mean of the
    # sequence's token ratios, length-normalised as GSPO's ratio is: the choice for GSPO) | sequence (the product
    # of the token ratios; over long responses it sits at the threshold or near 0).
    rollout_is: str | None = None
    # Upper truncation of the rollout importance weight (verl's default 2.0).
    rollout_is_threshold: float = 2.0


@dataclass
class AlgorithmConfig:
    # Advantage estimator: grpo (group-normalised rewards).
    adv_estimator: str = "grpo"
    # Divide group-centred rewards by the group's std (false: Dr. GRPO).
    norm_adv_by_std_in_grpo: bool = True
    filter_groups: FilterGroupsConfig = field(default_factory=FilterGroupsConfig)
    rollout_correction: RolloutCorrectionConfig = field(default_factory=RolloutCorrectionConfig)


@dataclass
class OverlongBufferConfig:
    # DAPO's soft overlong penalty on responses in the last `len` tokens of the budget.
    enable: bool = False
    # Tokens before data.max_response_length where the penalty ramps from 0 (>= 1 when enabled).
    len: int = 0
    # Penalty at data.max_response_length (linear ramp over the buffer).
    penalty_factor: float = 0.0


@dataclass
class RewardModelConfig:
    overlong_buffer: OverlongBufferConfig = field(default_factory=OverlongBufferConfig)
    # What a reward function that raises, returns a non-number or times out does: stop the run, or score 0 and
    # count it (reward/errors).
    on_error: str = "raise"
    # Seconds one call of a custom reward function may take. Calls run in parallel in reward worker processes
    # (one per core, at most 8, started from a fork server: the trainer is never forked); a call past this is
    # killed, and under on_error=raise the run stops at the first one. null or <= 0: no limit, called one by one in
    # the trainer's process. Built-in rewards other than the math ones run in-process.
    timeout_s: float | None = 60.0
    # Processes that verify answers for the math rewards (math-verify); 0 = one per core this process may use,
    # split over a node's ranks, at most 8.
    math_workers: int = 0
    # CPU seconds math-verify may spend on one answer (its worker is killed 3 wall seconds later); an answer past
    # it is a reward error under on_error.
    math_timeout_s: float = 2.0


@dataclass
class CustomRewardFunctionConfig:
    # Python file with the reward function; null = the registry by data_source.
    path: str | None = None
    # Function in that file: (data_source, solution_str, ground_truth, extra_info).
    name: str = "compute_score"


@dataclass
class TrainerConfig:
    # Run folder: metrics.jsonl, config.yaml, checkpoints/, final_model/; null = verl's
    # checkpoints/<project_name>/<experiment_name>.
    default_local_dir: str | None = None
    # Optimizer steps; null = total_epochs over the training prompts.
    total_training_steps: int | None = None
    # Epochs when total_training_steps is null.
    total_epochs: int = 30
    # Checkpoint every this many steps (and at the end); <= 0: only at the end.
    save_freq: int = -1
    # Validate every this many steps and after the last; <= 0: never during training (as verl; val_before_train
    # still validates once before the first step).
    test_freq: int = -1
    # Validate once before the first step (the starting accuracy).
    val_before_train: bool = True
    # auto: continue from the latest checkpoint in the run folder; disable; resume_path.
    resume_mode: str = "auto"
    # Checkpoint folder (global_step_N) for resume_mode=resume_path.
    resume_from_path: str | None = None
    # Checkpoints kept on disk (oldest deleted first); null or <= 0 keeps all.
    max_actor_ckpt_to_keep: int | None = None
    # Optimizer steps in a row skipped for a non-finite loss or gradient before the run stops.
    max_consecutive_skips: int = 5
    # Metric sinks besides metrics.jsonl: console, tensorboard, wandb (offline unless WANDB_MODE says otherwise),
    # mlflow (a file store in the run folder unless MLFLOW_TRACKING_URI is set).
    logger: list[str] = field(default_factory=lambda: ["console"])
    # The wandb / mlflow project (experiment) name; with experiment_name, verl's run folder layout.
    project_name: str = "verl_examples"
    # The run's name in reports, wandb and mlflow; null = the run folder's name. When project_name or
    # experiment_name is set and default_local_dir is not, the run folder is checkpoints/<project>/<experiment>.
    experiment_name: str | None = "gsm8k"
    # Validation samples (prompt, response, score) printed and written to val_generations.jsonl per validation.
    log_val_generations: int = 0
    # Seed of prompt order and of every sampled response.
    seed: int = 1
    # auto (CUDA when available), cpu or cuda.
    device: str = "auto"
    # Intra-op CPU threads; 0 = one per core this process may use, split over a node's ranks (GSPO_NUM_THREADS
    # or OMP_NUM_THREADS override it). OpenMP workers sleep when idle (OMP_WAIT_POLICY=PASSIVE) unless the
    # variable is set.
    cpu_threads: int = 0
    # `gspo train` launches nnodes x n_gpus_per_node processes through torchrun when this is more than one (and
    # it is not already running under torchrun); on CPU, n_gpus_per_node counts processes.
    nnodes: int = 1
    # Processes per node (GPUs; on CPU, processes).
    n_gpus_per_node: int = 1


@dataclass
class AsyncTrainingConfig:
    """actor_rollout_ref.rollout.mode=async with a rollout pool: generation on ranks of its own, overlapping the
    update (gspo/trainer/async_rollout.py)."""

    # k: the batch of training step t is generated, with its whole dynamic-sampling loop, by exactly the policy of
    # version max(0, t - k) (the weights after that many optimizer steps), whatever the timing. 0 = on-policy (no
    # overlap; the same results as mode=sync), 1 = one step off (generation of step t+1 overlaps the update of
    # step t). An integer number of policy versions (verl's key of that name is a fraction of a batch). The age of
    # surplus groups (algorithm.filter_groups.max_surplus_age) then counts policy versions, so it includes k.
    staleness_threshold: int = 1
    # Rows sampled by an older policy (staleness > 0) are clipped against the proximal policy (the weights at the
    # start of their training step) and their loss weighted by the behaviour ratio pi_proximal / pi_sampler,
    # truncated at this value (AReaL's decoupled objective): the geometric mean over the response for GSPO's
    # sequence-level losses, per token otherwise. Rows of staleness 0 are trained exactly as in mode=sync.
    behav_imp_weight_cap: float = 2.0


@dataclass
class GSPOConfig:
    data: DataConfig = field(default_factory=DataConfig)
    actor_rollout_ref: ActorRolloutRefConfig = field(default_factory=ActorRolloutRefConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    reward_model: RewardModelConfig = field(default_factory=RewardModelConfig)
    custom_reward_function: CustomRewardFunctionConfig = field(default_factory=CustomRewardFunctionConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    async_training: AsyncTrainingConfig = field(default_factory=AsyncTrainingConfig)



def field_type(key: str) -> Any:
    """The schema's type for a dotted key (None when the key is not a schema field).

    Walks the default config, not the annotations: the rollout section's class is composed from the registered
    engines (:func:`gspo.config.rollout.rollout_config_class`)."""
    node: Any = GSPOConfig()
    kind: Any = None
    for part in key.split("."):
        if part not in getattr(node, "__dataclass_fields__", {}):
            return None
        kind = get_type_hints(type(node))[part]
        node = getattr(node, part)
    return kind
