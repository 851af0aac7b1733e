"""Load a causal LM and its tokenizer from a local folder (or the embedded default); nothing is downloaded."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from gspo.errors import InputError
from gspo.resources import resolve_path


class ModelLoadError(InputError):
    """The model path is missing, unreadable, or not a causal LM."""


def adapter_base_path(folder: Path) -> Path | None:
    """The base model folder of a PEFT adapter folder (``adapter_config.json``, no ``config.json``), else None."""
    config = folder / "adapter_config.json"
    if (folder / "config.json").is_file() or not config.is_file():
        return None
    try:
        return Path(json.loads(config.read_text())["base_model_name_or_path"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"actor_rollout_ref.model.path: cannot read the base model of {config}: {exc}") from None


def check_model_path(path: str) -> Path:
    """Fail fast, before any work starts, when ``path`` is not a local HF model folder (or a PEFT adapter folder
    whose base is one)."""
    folder = resolve_path(path)
    key = "actor_rollout_ref.model.path"
    if not folder.exists():
        raise ModelLoadError(f"{key}: {path!r} does not exist (only local folders are supported; no downloads)")
    base = adapter_base_path(folder)
    if base is not None:
        check_model_path(str(base))
        return folder
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"{key}: {path!r} has no config.json; expected a folder written by save_pretrained")
    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
    except Exception as exc:  # transformers raises several types for unreadable configs
        raise ModelLoadError(f"{key}: cannot read {folder / 'config.json'}: {exc}") from exc
    if type(config) not in AutoModelForCausalLM._model_mapping:
        raise ModelLoadError(f"{key}: {path!r} holds a {type(config).__name__}, which is not a causal LM")
    return folder


def load_tokenizer(path: str) -> PreTrainedTokenizerBase:
    folder = check_model_path(path)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    if tokenizer.pad_token_id is None:  # common for Llama-style checkpoints; EOS doubles as padding
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(path: str, device: torch.device, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """fp32 parameters on ``device`` (``dtype`` for a frozen LoRA base); mixed precision (bf16 on CUDA) is applied
    per forward by the caller."""
    folder = check_model_path(path)
    base = adapter_base_path(folder)
    try:
        model = AutoModelForCausalLM.from_pretrained(base or folder, dtype=dtype, local_files_only=True)
    except Exception as exc:
        raise ModelLoadError(f"actor_rollout_ref.model.path: cannot load {folder} as a causal LM: {exc}") from exc
    if base is not None:  # a LoRA checkpoint's adapter/ (or final_adapter/): its base with the adapter merged in
        try:
            from peft import PeftModel
        except ImportError:
            raise ModelLoadError(f"{folder} is a PEFT adapter folder; loading it needs peft "
                                 f"(pip install -e '.[lora]')") from None
        model = PeftModel.from_pretrained(model, folder).merge_and_unload()
    return model.to(device)


def empty_causal_lm(path: str, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """The model of ``path`` on the meta device: its class, config and generation config, no memory for weights.

    What every rank builds before FSDP2 shards it and the weights arrive (:mod:`gspo.trainer.sharded_loading`).
    A PEFT adapter folder gives its base's architecture (the merged model has the base's parameter names).
    """
    folder = check_model_path(path)
    source = adapter_base_path(folder) or folder
    config = AutoConfig.from_pretrained(source, local_files_only=True)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    generation = generation_config_of(source)
    if generation is not None:  # from_pretrained reads it too; sampling defaults and extra EOS ids live there
        model.generation_config = generation
    return model


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("trainer.device: 'cuda' was asked for but torch.cuda.is_available() is False")
    return torch.device(name)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 autocast on CUDA; full fp32 on CPU (CPU bf16 is slow and buys nothing for tiny models)."""
    return torch.bfloat16 if device.type == "cuda" else None


def enable_activation_checkpointing(model: PreTrainedModel) -> None:
    """Recompute activations in backward (transformers 5 renamed the method; 4.x only has the old name)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def generation_config_of(folder: Path) -> GenerationConfig | None:
    """The folder's generation_config.json without loading the weights (None when it has none)."""
    try:
        return GenerationConfig.from_pretrained(folder, local_files_only=True)
    except OSError:
        return None


def eos_token_ids(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel | GenerationConfig | None) -> list[int]:
    """The tokenizer's EOS plus every EOS the model's generation config (or ``model`` as one) lists (chat models
    often add one)."""
    ids = {tokenizer.eos_token_id}
    generation = model if isinstance(model, GenerationConfig) or model is None else model.generation_config
    generation_eos = getattr(generation, "eos_token_id", None)
    ids.update(generation_eos if isinstance(generation_eos, list) else [generation_eos])
    return sorted(i for i in ids if i is not None)


def cache_keyword(model: PreTrainedModel) -> str:
    """transformers >= 5.2x names the KV-cache argument ``cache``; earlier versions ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
