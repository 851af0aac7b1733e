"""verl keys that are not in our schema: each maps to one of ours, is a documented no-op (the behaviour is already
ours), or fails naming the key and what this project does instead. Never accepted and ignored.

A schema key always wins over this table; a key in neither is an unknown-key error with a "did you mean".
``gspo config`` lists this table beside the schema.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gspo.errors import ConfigError

Check = Callable[[Any, Any], "str | None"]  # (value, resolved GSPOConfig) -> None if fine, else what to do instead

LONG_SEQUENCES = ("fit long sequences with actor_rollout_ref.actor.use_dynamic_bsz=true, "
                  "actor_rollout_ref.actor.logits_chunk_size and actor_rollout_ref.model.enable_gradient_checkpointing")


@dataclass(frozen=True)
class VerlKey:
    key: str  # dotted; a trailing ".*" matches every key below it
    doc: str  # one line for `gspo config`: what the key does here
    maps_to: str | None = None  # our schema key that takes the value
    check: Check | None = None

    def matches(self, key: str) -> bool:
        return key == self.key or (self.key.endswith(".*") and key.startswith(self.key[:-1]))


def _equals(expected: Any, instead: str) -> Check:
    return lambda value, cfg: None if value == expected else instead


def _same_as(read: Callable[[Any], Any], key: str, why: str) -> Check:
    def check(value: Any, cfg: Any) -> str | None:
        ours = read(cfg)
        return None if value == ours else f"{why}: set {key}={str(ours).lower() if isinstance(ours, bool) else ours}" \
            f" to match, or set {key}={value} to change both"
    return check


def _actor(cfg: Any) -> Any:
    return cfg.actor_rollout_ref.actor


def _check_fsdp_size(value: Any, cfg: Any) -> str | None:
    world = cfg.trainer.nnodes * cfg.trainer.n_gpus_per_node
    if value in (-1, world):
        return None
    return (f"hybrid sharding is not implemented: FSDP shards over all trainer.nnodes x trainer.n_gpus_per_node = "
            f"{world} ranks; drop the key (or set -1)")


def _check_reward_manager(value: Any, cfg: Any) -> str | None:
    if value == "dapo":
        return None
    if value == "naive":
        return None if not cfg.reward_model.overlong_buffer.enable else (
            "verl's naive manager has no overlong shaping: use reward_manager=dapo with the overlong buffer")
    return (f"reward manager {value!r} is not implemented: rewards come from the registry by data_source or from "
            f"custom_reward_function.path (both scored like verl's naive/dapo managers); use dapo or naive")


def _check_max_resp_len(value: Any, cfg: Any) -> str | None:
    if value == cfg.data.max_response_length:
        return None
    return (f"the overlong buffer is measured from data.max_response_length={cfg.data.max_response_length}; "
            f"set data.max_response_length={value} or drop the key")


_PADDING = ("rows are not unpadded here: attention is dense over each micro-batch with a padding mask; "
            "actor_rollout_ref.actor.use_dynamic_bsz=true packs rows by length and cuts the columns that are padding "
            "in every row")
_SP = "sequence parallelism (Ulysses) is not implemented: " + LONG_SEQUENCES
_LOG_PROB_PACKING = "the no-grad log-prob passes pack rows exactly when the update does"

VERL_KEYS: tuple[VerlKey, ...] = (
    VerlKey("data.truncation", "'error' only: overlong prompts are dropped (data.filter_overlong_prompts=true) or "
            "raise, never cut", check=_equals("error", "prompts are never cut here: data.filter_overlong_prompts=true "
                                              "drops longer prompts, false raises (verl's 'error'); raise "
                                              "data.max_prompt_length to keep them")),
    VerlKey("data.return_raw_chat", "true or false (no-op): verl keeps the chat messages for its async rollout "
            "server; here the chat template is applied once, by data.apply_chat_template",
            check=lambda value, cfg: None if isinstance(value, bool) else "expected true or false"),
    VerlKey("algorithm.use_kl_in_reward", "false only: no KL penalty in the reward",
            check=_equals(False, "a KL penalty in the reward is not implemented; use "
                                 "actor_rollout_ref.actor.use_kl_loss=true with kl_loss_coef (KL as a loss term)")),
    VerlKey("algorithm.kl_ctrl.*", "no-op: read by verl only with algorithm.use_kl_in_reward=true, refused here"),
    VerlKey("actor_rollout_ref.model.use_remove_padding", "true only (no-op): " + _PADDING,
            check=_equals(True, _PADDING + "; drop the key")),
    VerlKey("actor_rollout_ref.model.override_config.*", "refused: edit config.json in a copy of the model folder",
            check=lambda value, cfg: "model config overrides are not applied here: edit config.json in a copy of the "
                                     "model folder and point actor_rollout_ref.model.path at it"),
    VerlKey("actor_rollout_ref.actor.ulysses_sequence_parallel_size", "1 only: " + _SP, check=_equals(1, _SP)),
    VerlKey("actor_rollout_ref.ref.ulysses_sequence_parallel_size", "1 only: " + _SP, check=_equals(1, _SP)),
    VerlKey("actor_rollout_ref.actor.fsdp_config.fsdp_size", "-1 or the world size: FSDP shards over every rank",
            check=_check_fsdp_size),
    VerlKey("actor_rollout_ref.ref.fsdp_config.param_offload", "must equal the actor's: the reference model is "
            "offloaded with actor_rollout_ref.actor.fsdp_config", check=_same_as(
                lambda cfg: _actor(cfg).fsdp_config.param_offload or _actor(cfg).fsdp_config.optimizer_offload,
                "actor_rollout_ref.actor.fsdp_config.param_offload", "the reference model is offloaded as the actor")),
    VerlKey("actor_rollout_ref.ref.log_prob_use_dynamic_bsz", "must equal actor.use_dynamic_bsz: " + _LOG_PROB_PACKING,
            check=_same_as(lambda cfg: _actor(cfg).use_dynamic_bsz, "actor_rollout_ref.actor.use_dynamic_bsz",
                           _LOG_PROB_PACKING)),
    VerlKey("actor_rollout_ref.rollout.log_prob_use_dynamic_bsz", "must equal actor.use_dynamic_bsz: "
            + _LOG_PROB_PACKING, check=_same_as(lambda cfg: _actor(cfg).use_dynamic_bsz,
                                                "actor_rollout_ref.actor.use_dynamic_bsz", _LOG_PROB_PACKING)),
    VerlKey("actor_rollout_ref.ref.log_prob_max_token_len_per_gpu", "-> actor.log_prob_max_token_len_per_gpu",
            maps_to="actor_rollout_ref.actor.log_prob_max_token_len_per_gpu"),
    VerlKey("actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu", "-> actor.log_prob_max_token_len_per_gpu",
            maps_to="actor_rollout_ref.actor.log_prob_max_token_len_per_gpu"),
    VerlKey("rollout.nnodes", "-> actor_rollout_ref.rollout.nnodes (verl's one-step-off rollout pool)",
            maps_to="actor_rollout_ref.rollout.nnodes"),
    VerlKey("rollout.n_gpus_per_node", "-> actor_rollout_ref.rollout.n_gpus_per_node (verl's one-step-off rollout "
            "pool)", maps_to="actor_rollout_ref.rollout.n_gpus_per_node"),
    VerlKey("reward_model.enable", "false only: no reward model; rewards are functions",
            check=_equals(False, "model-based rewards are not implemented: write a reward function and set "
                                 "custom_reward_function.path")),
    VerlKey("reward_model.reward_manager", "dapo or naive: our reward manager is verl's dapo (naive = without "
            "the overlong buffer)", check=_check_reward_manager),
    VerlKey("reward_model.reward_kwargs.overlong_buffer_cfg.enable", "-> reward_model.overlong_buffer.enable",
            maps_to="reward_model.overlong_buffer.enable"),
    VerlKey("reward_model.reward_kwargs.overlong_buffer_cfg.len", "-> reward_model.overlong_buffer.len",
            maps_to="reward_model.overlong_buffer.len"),
    VerlKey("reward_model.reward_kwargs.overlong_buffer_cfg.penalty_factor",
            "-> reward_model.overlong_buffer.penalty_factor", maps_to="reward_model.overlong_buffer.penalty_factor"),
    VerlKey("reward_model.reward_kwargs.overlong_buffer_cfg.log", "no-op: reward/overlong_penalty_mean and "
            "reward/overlong_ratio are always logged while the buffer is on",
            check=lambda value, cfg: None if isinstance(value, bool) else "expected true or false"),
    VerlKey("reward_model.reward_kwargs.max_resp_len", "must equal data.max_response_length (the buffer's end)",
            check=_check_max_resp_len),
)


def find(key: str) -> VerlKey | None:
    return next((entry for entry in VERL_KEYS if entry.matches(key)), None)


class VerlKeys:
    """Collects the verl keys of one config resolution; :meth:`check` judges them against the final config."""

    def __init__(self) -> None:
        self._seen: list[tuple[VerlKey, str, Any, str]] = []

    def translate(self, key: str, value: Any, where: str) -> tuple[str, Any] | None:
        """(schema key, value) to merge, or None for a key to check later; ``key`` is not a schema key (the schema
        wins: the caller asks here only for keys outside it). Keys outside the table pass through unchanged (the
        schema merge reports them as unknown)."""
        entry = find(key)
        if entry is None:
            return key, value
        self._seen.append((entry, key, value, where))
        return (entry.maps_to, value) if entry.maps_to else None

    def check(self, config: Any) -> None:
        targets: dict[str, tuple[str, Any]] = {}
        for entry, key, value, where in self._seen:
            if entry.maps_to:
                other = targets.setdefault(entry.maps_to, (key, value))
                if other[1] != value:
                    raise ConfigError(f"{key}={value!r} ({where}) disagrees with {other[0]}={other[1]!r}: both set "
                                      f"{entry.maps_to} here; give them one value")
            problem = entry.check(value, config) if entry.check else None
            if problem:
                raise ConfigError(f"{key}={value!r} ({where}): {problem}")
