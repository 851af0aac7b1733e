"""LoRA (low-rank adapters, through peft) on the policy: ``actor_rollout_ref.model.lora_rank > 0``.

What changes against full fine-tuning, and why:

- Adapters are injected into the loaded HF model in place (each targeted ``nn.Linear`` becomes peft's
  ``lora.Linear``: ``base_layer`` + ``lora_A`` (r, in) + ``lora_B`` (out, r)), so the trainer, the rollout engine and
  FSDP2 keep working on the same HF module tree. Only the adapters require gradients, so only they get gradients
  and AdamW state; they are kept in float32. The frozen base is float32 on CPU (exact tests) and bfloat16 on CUDA
  (half the memory of the weights; the forward computes in bf16 there anyway).
- The KL reference policy is the same module with the adapters switched off (:meth:`LoRAPolicy.adapters_disabled`):
  no second copy of the weights.
- The adapted policy computes ``W x + (alpha / r) B A x``; :func:`iter_merged_weights` yields the plain HF weights
  ``W + (alpha / r) B A`` that compute the same function, for ``final_model/`` and for pushing weights into an
  inference engine (vLLM) after an update.
- Checkpoints hold the trainable parameters only (the adapters: DCP ``state/`` with their AdamW moments) and a
  PEFT adapter folder ``adapter/`` instead of a full ``model/``; the base is re-read from
  ``actor_rollout_ref.model.path`` on resume and checked against a fingerprint stored with the adapter.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from transformers import AutoModelForCausalLM, PreTrainedModel

from gspo.config import ConfigError, ModelConfig
from gspo.distributed import DistContext, full_tensor_of
from gspo.trainer.run_folder import RunFolderError

ADAPTER_NAME = "default"  # peft's name for the one adapter
FINGERPRINT_FILE = "base_fingerprint.json"
_KEY = "actor_rollout_ref.model"


def require_peft():
    try:
        import peft
    except ImportError:
        raise ConfigError(f"{_KEY}.lora_rank: LoRA needs peft; install it with pip install -e '.[lora]' "
                          f"(or set lora_rank=0 for full fine-tuning)") from None
    return peft


def base_dtype(model_cfg: ModelConfig, device: torch.device) -> torch.dtype:
    """The dtype to load the base weights in: bf16 for a frozen base on CUDA, else fp32."""
    return torch.bfloat16 if model_cfg.lora_rank > 0 and device.type == "cuda" else torch.float32


class LoRAPolicy:
    """The adapters of a policy model: switching them off (reference), merged weights, saving and checking."""

    def __init__(self, model: PreTrainedModel, peft_model, base_fingerprint: list[float]):
        self.model = model  # the HF model with the adapters inside; what the trainer trains and generates with
        self.peft_model = peft_model  # peft's wrapper around it: config and PEFT-format saving only
        self.base_fingerprint = base_fingerprint
        self.layers = lora_layers(model)

    @classmethod
    def attach(cls, model: PreTrainedModel, model_cfg: ModelConfig) -> LoRAPolicy | None:
        """Inject adapters into ``model`` in place and freeze everything else; None when ``lora_rank`` is 0.

        Adapter init follows peft (A: Kaiming-uniform from torch's global RNG, B: zeros), so the policy starts
        equal to the base and a seeded run is reproducible.
        """
        if model_cfg.lora_rank == 0:
            return None
        peft = require_peft()
        fingerprint = weights_fingerprint(model)
        config = peft.LoraConfig(r=model_cfg.lora_rank, lora_alpha=model_cfg.lora_alpha,
                                 target_modules=model_cfg.target_modules, lora_dropout=model_cfg.lora_dropout,
                                 bias="none")
        try:
            peft_model = peft.get_peft_model(model, config)
        except ValueError as exc:  # e.g. no module matches target_modules
            raise ConfigError(f"{_KEY}.target_modules: {exc}") from None
        unsupported = [name for name, module in model.named_modules()
                       if isinstance(module, peft.tuners.lora.LoraLayer)
                       and not isinstance(module, peft.tuners.lora.Linear)]
        if unsupported:
            raise ConfigError(f"{_KEY}.target_modules: only linear layers can take adapters here, not "
                              f"{unsupported[0]} ({type(dict(model.named_modules())[unsupported[0]]).__name__})")
        for param in model.parameters():
            if param.requires_grad:
                param.data = param.data.float()  # adapters train in fp32 whatever the base's dtype
        return cls(model, peft_model, fingerprint)

    @property
    def scaling(self) -> float:
        config = self.peft_model.peft_config[ADAPTER_NAME]
        return config.lora_alpha / config.r

    @contextmanager
    def adapters_disabled(self):
        """The base policy: every adapter layer computes ``base_layer(x)`` alone (no copy of any weight).

        Sets peft's per-layer flag directly: peft's ``enable_adapters`` would also flip the adapters'
        ``requires_grad``, which FSDP2 must not see change between its initialisation and the training passes.
        """
        for layer in self.layers.values():
            layer._disable_adapters = True
        try:
            yield
        finally:
            for layer in self.layers.values():
                layer._disable_adapters = False

    # ------------------------------------------------------------------------------------------ exports
    def merged_state_dict(self, dist: DistContext, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """The merged plain HF weights on rank 0's CPU (empty elsewhere); every rank must call it."""
        merged = {}
        for name, tensor in iter_merged_weights(self.model, dtype=dtype):
            if dist.is_main:
                merged[name] = tensor.cpu()
        return merged

    def adapter_state_dict(self, dist: DistContext) -> dict[str, torch.Tensor]:
        """The trainable parameters, unsharded, on rank 0's CPU (empty elsewhere); every rank must call it."""
        if not dist.is_distributed:
            return {name: param.detach().cpu() for name, param in self.model.named_parameters() if param.requires_grad}
        return get_model_state_dict(self.model, options=StateDictOptions(
            full_state_dict=True, cpu_offload=True, ignore_frozen_params=True))

    def save_adapter(self, folder: Path, state: dict[str, torch.Tensor], tokenizer) -> None:
        """A PEFT adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``), loadable with
        ``PeftModel.from_pretrained(base, folder)``, plus the tokenizer and the base fingerprint. Rank 0 only."""
        wrapped = {f"base_model.model.{name}": tensor for name, tensor in state.items()}
        self.peft_model.save_pretrained(folder, state_dict=wrapped, safe_serialization=True)
        tokenizer.save_pretrained(folder)
        (folder / FINGERPRINT_FILE).write_text(json.dumps(self.base_fingerprint))

    def checkpoint_export(self, tokenizer, dist: DistContext) -> Callable[[Path], None]:
        """For ``save_checkpoint(export=...)``: writes ``<checkpoint>/adapter/`` (collective, rank 0 writes)."""
        def export(folder: Path) -> None:
            state = self.adapter_state_dict(dist)
            if dist.is_main:
                self.save_adapter(folder / "adapter", state, tokenizer)
        return export

    def save_final(self, final: Path, adapter_folder: Path, tokenizer, dist: DistContext, save_folder) -> None:
        """``final``: the merged plain HF model; ``adapter_folder``: the PEFT adapter. Collective; rank 0 writes
        through ``save_folder(folder, hf_model=..., state_dict=..., tokenizer=...)`` (atomic)."""
        merged = self.merged_state_dict(dist)
        adapter = self.adapter_state_dict(dist)
        if dist.is_main:
            save_folder(final, hf_model=plain_model_like(self.model), state_dict=merged, tokenizer=tokenizer)
            self.save_adapter(adapter_folder, adapter, tokenizer)

    def check_base(self, checkpoint: Path) -> None:
        """Adapters only make sense on the base they were trained on: refuse to resume them on another one."""
        file = checkpoint / "adapter" / FINGERPRINT_FILE
        if not file.is_file():
            raise RunFolderError(f"{checkpoint}: not a LoRA checkpoint (no adapter/{FINGERPRINT_FILE}); resume it with "
                             f"{_KEY}.lora_rank=0 or start fresh (trainer.resume_mode=disable)")
        saved = json.loads(file.read_text())
        if not _same_fingerprint(saved, self.base_fingerprint):
            raise RunFolderError(f"{checkpoint}: its adapters were trained on other base weights than "
                             f"{_KEY}.path now holds; point the path at the original base or start fresh")


def lora_layers(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """Module name -> peft LoRA linear layer, in module order."""
    peft = require_peft()
    return {name: module for name, module in model.named_modules() if isinstance(module, peft.tuners.lora.Linear)}


@torch.no_grad()
def iter_merged_weights(model: torch.nn.Module, *, dtype: torch.dtype | None = None
                        ) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` pairs of the plain HF model that computes what the adapted ``model`` computes.

    Each adapted linear layer yields ``prefix.weight = W + (alpha / r) B A`` (the product in float32) and its
    ``prefix.bias``; every other state-dict entry is yielded as it is. Names are the base model's (no
    ``base_layer`` / ``lora_`` parts), i.e. what ``AutoModelForCausalLM`` and vLLM's ``load_weights`` expect.
    Tensors are full (unsharded), on the parameters' device, cast to ``dtype`` (None: merged weights float32,
    the rest unchanged); tied weights appear under each of their names.

    Under FSDP every rank must consume the iterator to the end (each sharded tensor is all-gathered).
    """
    layers = lora_layers(model)
    state = model.state_dict()
    for name, value in state.items():
        prefix, sep, leaf = name.rpartition(".base_layer.")
        if sep and prefix in layers:
            if leaf == "weight":
                layer = layers[prefix]
                a = full_tensor_of(state[f"{prefix}.lora_A.{ADAPTER_NAME}.weight"]).float()  # (r, in)
                b = full_tensor_of(state[f"{prefix}.lora_B.{ADAPTER_NAME}.weight"]).float()  # (out, r)
                weight = full_tensor_of(value).float() + layer.scaling[ADAPTER_NAME] * (b @ a)  # (out, in)
                yield f"{prefix}.weight", weight.to(dtype or torch.float32)
            else:
                yield f"{prefix}.{leaf}", _cast(full_tensor_of(value), dtype)
        elif ".lora_A." in name or ".lora_B." in name:
            continue
        else:
            yield name, _cast(full_tensor_of(value), dtype)


def _cast(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    return tensor if dtype is None or not tensor.is_floating_point() else tensor.to(dtype)


def plain_model_like(model: PreTrainedModel) -> PreTrainedModel:
    """An adapter-free model of ``model``'s class and configs on the meta device (no memory): the skeleton
    ``save_pretrained`` writes the merged weights with."""
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(copy.deepcopy(model.config))
    plain.generation_config = copy.deepcopy(model.generation_config)
    return plain


def weights_fingerprint(model: torch.nn.Module) -> list[float]:
    """[number of tensors, number of elements, float64 sum of |w|]: cheap, and the same for a bf16 and an fp32
    copy of the same weights (rounding errors cancel in the sum) to well within :func:`_same_fingerprint`."""
    tensors = list(model.state_dict().values())
    total = sum(float(t.abs().sum(dtype=torch.float64)) for t in tensors if t.is_floating_point())
    return [float(len(tensors)), float(sum(t.numel() for t in tensors)), total]


def _same_fingerprint(saved: list[float], current: list[float]) -> bool:
    return saved[:2] == current[:2] and abs(saved[2] - current[2]) <= 1e-4 * max(1.0, abs(saved[2]))
