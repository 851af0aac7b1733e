"""Where our defaults differ from verl's, and why: the one table of them.

Every other schema key that verl has takes verl's default (v0.7.0: ``verl/trainer/config/ppo_trainer.yaml`` with
its actor / rollout / data sub-configs, and the DAPO recipe ``recipe/dapo/config/dapo_trainer.yaml`` for
``data.gen_batch_size``, ``algorithm.filter_groups.*`` and ``reward_model.overlong_buffer.*``), so a verl command
line means here what it means in verl. ``tests/test_config_verl_defaults.py`` pins verl's values for every key we
share. ``gspo config`` marks the keys below; the README's list is generated from :func:`markdown_list`.

The embedded tasks' settings are not defaults: they live in presets (:mod:`gspo.config.presets`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GSPO_LOSS = "gspo"
LOSS_MODE_KEY = "actor_rollout_ref.actor.policy_loss.loss_mode"
# The GSPO paper's clip range (Sec. 5.1), used when loss_mode=gspo and no clip value is given.
GSPO_CLIP = {"actor_rollout_ref.actor.clip_ratio_low": 3e-4, "actor_rollout_ref.actor.clip_ratio_high": 4e-4}


@dataclass(frozen=True)
class Difference:
    key: str
    verl: Any  # verl's default
    ours: str  # our default, as `gspo config` would show it, or the rule
    reason: str


DIFFERENCES: tuple[Difference, ...] = (
    Difference("actor_rollout_ref.model.path", "~/models/deepseek-llm-7b-chat", "embedded://addition",
               "nothing is downloaded: the embedded tiny model runs anywhere, and with no model path given the "
               "addition preset applies (gspo/presets/addition.yaml)"),
    Difference("actor_rollout_ref.actor.clip_ratio_low", 0.2, "0.2; 3e-4 when policy_loss.loss_mode=gspo",
               "GSPO's sequence ratios are length-normalised and stay within about 1e-3 of 1: the paper clips "
               "them at 3e-4 / 4e-4, where 0.2 would hardly ever clip; a value you give is kept"),
    Difference("actor_rollout_ref.actor.clip_ratio_high", 0.2, "0.2; 4e-4 when policy_loss.loss_mode=gspo",
               "the GSPO paper's upper clip, as for clip_ratio_low"),
    Difference("actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu", None, "256",
               "verl requires a value unless use_dynamic_bsz=true; here it bounds the sequences of one forward pass, "
               "and 256 runs everywhere without setting it"),
    Difference("actor_rollout_ref.rollout.mode", "async", "sync",
               "verl's async is its server-based rollout on the training GPUs, which generates as our sync does; "
               "async here is a separate rollout pool a bounded number of versions behind (n_gpus_per_node, "
               "async_training.staleness_threshold), off unless asked for"),
    Difference("actor_rollout_ref.rollout.name", "??? (required)", "hf",
               "verl requires an engine; hf runs on any machine, vllm is an optional install "
               "(pip install -e '.[vllm]')"),
    Difference("actor_rollout_ref.rollout.dtype", "bfloat16", "auto",
               "bfloat16 on CUDA as verl; float32 on CPU, where bfloat16 matmuls are slow and round the sampler's "
               "log-probs"),
    Difference("actor_rollout_ref.rollout.enforce_eager", False, "true",
               "no CUDA-graph capture at engine start-up (time and memory per engine); set false for faster decode"),
    Difference("actor_rollout_ref.rollout.enable_chunked_prefill", True, "null (true on CUDA, false on CPU)",
               "vLLM's CPU sampler cannot resume a seeded request whose prefill was split"),
    Difference("actor_rollout_ref.rollout.load_format", "dummy", "auto",
               "the engine reads the checkpoint itself; dummy (random init, the policy's weights pushed before the "
               "first generation) is accepted"),
    Difference("actor_rollout_ref.rollout.tensor_model_parallel_size", 2, "1",
               "only 1 is implemented: each rank drives its own engine on its own device"),
    Difference("algorithm.adv_estimator", "gae", "grpo",
               "only grpo is implemented (no critic model)"),
    Difference("algorithm.filter_groups.metric", None, "acc",
               "verl's DAPO recipe requires a metric when filter_groups.enable=true; acc is the one its examples use"),
    Difference("trainer.logger", ["console", "wandb"], "[console]",
               "wandb is an optional install that needs an account; add it with trainer.logger=[console,wandb]"),
    Difference("trainer.device", "cuda", "auto", "CUDA when torch sees one, else the CPU"),
    Difference("trainer.n_gpus_per_node", 8, "1",
               "gspo train launches torchrun itself for more than one process; 8 by default would start 8 processes "
               "on a machine with one GPU or none"),
)


def difference(key: str) -> Difference | None:
    return next((d for d in DIFFERENCES if d.key == key), None)


def apply_derived_defaults(config: Any, given: set[str]) -> None:
    """Defaults that depend on another key: the GSPO clip range under ``loss_mode=gspo`` for each clip key that no
    layer (preset, YAML file, override) set."""
    actor = config.actor_rollout_ref.actor
    if actor.policy_loss.loss_mode != GSPO_LOSS:
        return
    for key, value in GSPO_CLIP.items():
        if key not in given:
            setattr(actor, key.rsplit(".", 1)[1], value)


def show_value(value: Any, list_separator: str = ",") -> str:
    """A default as YAML / a command line writes it: null, true / false, [a,b]."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + list_separator.join(map(str, value)) + "]"
    return str(value)


def mark(key: str) -> str:
    """``(verl: X; differs because ...)`` for ``gspo config``, or '' for a key at verl's default."""
    found = difference(key)
    return f"(verl: {show_value(found.verl)}; differs because {found.reason})" if found else ""


def markdown_list() -> str:
    """The README's list of the defaults that differ from verl, one bullet per key."""
    return "\n".join(f"- `{d.key}`: `{d.ours}` (verl: `{show_value(d.verl)}`): {d.reason}." for d in DIFFERENCES)
