"""Rollout with vLLM, colocated and in-process: one ``vllm.LLM`` per rank on that rank's device, tensor parallel 1.

The trainer keeps the policy; the engine keeps its own copy of the weights (loaded from the model folder, or random
with ``load_format=dummy``) and receives the policy's after every update through :meth:`update_weights`, in memory,
one tensor at a time (vLLM's ``reload_weights``), followed by a prefix-cache reset (cached prompt KV was computed
with the old weights). Tied embeddings: the trainer's iterator names every tied parameter under each of its names,
so an engine that keeps a separate output layer (vLLM's CPU backend repacks ``lm_head``) receives it.

Beside a rollout pool (``EngineSpec.own_process``) the engine cannot live in the rank's process: vLLM builds its
process groups over the whole torch.distributed world, and the other pool never joins them. There vLLM's engine core
and worker run in a spawned child process with a world of one (tensor parallel 1), and each update crosses to it as
one safetensors blob (:mod:`gspo.rollout.vllm_worker`), a host-memory copy of the weights per update.

Sampling: the ``n`` responses of a prompt are one request, seeded by its group key (so a run is reproducible for a
fixed config and world size, but a response depends on its batch: ``seeded_per_response`` is False). Log-probs are
vLLM's processed ones (after temperature, top-k and top-p), i.e. those of the distribution sampled from. The
response mask is the hf engine's: up to and including the first EOS, truncated at ``max_new_tokens``.

Memory (CUDA, ``free_cache_engine``): vLLM's sleep mode. ``sleep(level=1)`` pauses the scheduler, backs the
weights up to host memory and discards the KV cache; ``wake_up(tags=[...])`` maps back the tags named ("weights",
"kv_cache"; all without tags) and resumes the scheduler only once nothing sleeps. It refuses, with a log line and
waking nothing, a tag that is not asleep. So the engine keeps a state (asleep, weights awake, awake) and names each
tag once, in verl's order: "weights" for a weight update, then "kv_cache" before generating.
"""

from __future__ import annotations

import contextlib
import enum
import os
import random
from collections.abc import Iterator

import numpy as np
import torch

from gspo.distributed import full_tensor_of
from gspo.errors import ConfigError
from gspo.rollout.base import Generation, SamplingParams, Weights, left_pad, response_mask_from_ids
from gspo.rollout.definition import EngineSpec
from gspo.rollout.process_guard import child_pids, guard
from gspo.rollout.vllm_options import max_model_length

_DTYPES = {"auto": None, "bfloat16": "bfloat16", "float16": "float16", "float32": "float32"}
_CPU_BLOCK = 128  # vLLM's CPU attention block (tokens)


class Memory(enum.Enum):
    """What of vLLM's sleep-mode memory is mapped on the device."""

    ASLEEP = "asleep"  # weights backed up on the host, KV cache discarded
    WEIGHTS_AWAKE = "weights awake"  # weights mapped (a weight update may load them), KV cache still discarded
    AWAKE = "awake"  # everything mapped: ready to generate


class VLLMRolloutEngine:
    """A ``vllm.LLM`` behind the :class:`~gspo.rollout.base.RolloutEngine` interface."""

    seeded_per_response = False
    log_probs_match_trainer = False  # another implementation (kernels, KV layout, precision): always recompute

    def __init__(self, llm, *, pad_token_id: int, eos_token_ids: list[int], sleep_during_update: bool = False,
                 own_process: bool = False):
        self.llm = llm
        self.pad_token_id = pad_token_id
        self.eos_token_ids = list(eos_token_ids)
        self.sleep_during_update = sleep_during_update
        self.own_process = own_process  # weights cross to the engine's process as a serialized blob
        self.process_guard = None  # with own_process: the watcher that kills the engine's processes if we die
        self.memory = Memory.AWAKE

    def generate(self, prompts: list[list[int]], params: SamplingParams, group_keys: torch.Tensor | None = None,
                 return_log_probs: bool = False) -> Generation:
        from vllm import SamplingParams as VLLMSamplingParams
        from vllm import TokensPrompt

        self.resume_memory()
        greedy = not params.do_sample or params.temperature == 0
        requests = [VLLMSamplingParams(
            n=params.n, temperature=0.0 if greedy else params.temperature, top_p=params.top_p,
            top_k=params.top_k if params.top_k > 0 else 0, max_tokens=params.max_new_tokens,
            seed=None if group_keys is None or greedy else int(group_keys[i]), stop_token_ids=self.eos_token_ids,
            ignore_eos=not self.eos_token_ids,
            logprobs=0 if return_log_probs else None, detokenize=False, skip_special_tokens=False)
            for i in range(len(prompts))]
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], requests,
                                    use_tqdm=False)
        responses, log_probs = [], []
        for output in outputs:
            for sample in sorted(output.outputs, key=lambda s: s.index):
                tokens = list(sample.token_ids)
                responses.append(tokens)
                if return_log_probs:
                    log_probs.append([step[token].logprob for step, token in zip(sample.logprobs, tokens)])
        return self._to_generation(prompts, params.n, responses, log_probs if return_log_probs else None)

    def _to_generation(self, prompts: list[list[int]], n: int, responses: list[list[int]],
                       log_probs: list[list[float]] | None) -> Generation:
        prompt_ids, prompt_mask = left_pad(prompts, self.pad_token_id)
        width = max(1, max(len(r) for r in responses))
        response_ids = torch.full((len(responses), width), self.pad_token_id, dtype=torch.long)
        sampled = torch.zeros((len(responses), width), dtype=torch.float32)
        for row, tokens in enumerate(responses):
            response_ids[row, :len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            if log_probs is not None:
                sampled[row, :len(tokens)] = torch.tensor(log_probs[row], dtype=torch.float32)
        # vLLM stops at the first stop token and keeps it; the mask is the hf engine's (up to and including the
        # first EOS), and never covers padding past a response that ended otherwise (a max_model_len cut).
        response_mask = response_mask_from_ids(response_ids, self.eos_token_ids) * _length_mask(responses, width)
        return Generation(prompt_ids=prompt_ids.repeat_interleave(n, dim=0),
                          prompt_mask=prompt_mask.repeat_interleave(n, dim=0),
                          response_ids=response_ids.masked_fill(response_mask == 0, self.pad_token_id),
                          response_mask=response_mask,
                          log_probs=None if log_probs is None else sampled * response_mask)

    @torch.no_grad()
    def update_weights(self, weights: Weights) -> None:
        """Stream the policy's weights into vLLM (``reload_weights``), then drop the now stale prefix cache.
        Asleep, only the weights wake for it: the KV cache stays freed until :meth:`resume_memory`."""
        if self.memory is Memory.ASLEEP:
            self.llm.wake_up(tags=["weights"])
            self.memory = Memory.WEIGHTS_AWAKE
        if self.own_process:
            self.llm.collective_rpc("load_serialized_weights", args=(_serialized(weights),))
        else:
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": _as_loaded(weights)})
        self.llm.reset_prefix_cache()  # bookkeeping only: safe while the KV cache is still discarded

    def release_memory(self) -> None:
        """With sleep mode (``free_cache_engine`` on CUDA): sleep at level 1, also with only the weights awake
        (after a weight update: they are backed up again, the still discarded KV cache is left as it is). A no-op
        while asleep or without sleep mode."""
        if self.sleep_during_update and self.memory is not Memory.ASLEEP:
            self.llm.sleep(level=1)
            self.memory = Memory.ASLEEP

    def resume_memory(self) -> None:
        """Map back what sleep released, each tag once: the weights (unless a weight update woke them), then the
        KV cache, which lets the scheduler run again. A no-op while awake."""
        if self.memory is Memory.ASLEEP:
            self.llm.wake_up(tags=["weights"])
            self.memory = Memory.WEIGHTS_AWAKE
        if self.memory is Memory.WEIGHTS_AWAKE:
            if not self.llm.wake_up(tags=["kv_cache"]):
                raise RuntimeError("vLLM is still asleep after waking its weights and KV cache; its scheduler stays "
                                   "paused. Report this with the vLLM version, or set "
                                   "actor_rollout_ref.rollout.free_cache_engine=false to run without sleep mode.")
            self.memory = Memory.AWAKE


def _length_mask(responses: list[list[int]], width: int) -> torch.Tensor:
    """(N, W) 1 on each response's own tokens: a pad id the model really generated (not padding) stays masked in."""
    lengths = torch.tensor([len(r) for r in responses])
    return (torch.arange(width)[None, :] < lengths[:, None]).float()


def _as_loaded(weights: Weights) -> Iterator[tuple[str, torch.Tensor]]:
    for name, tensor in weights:
        yield name, tensor.detach()


def _serialized(weights: Weights) -> bytes:
    """``{name: tensor}`` as one safetensors blob (host memory); a tensor under several names (tied
    embeddings) is copied for each further name, since safetensors stores no shared tensors."""
    from safetensors.torch import save

    named, seen = {}, set()
    for name, tensor in weights:
        host = tensor.detach().to("cpu").contiguous()
        named[name] = host.clone() if id(tensor) in seen else host
        seen.add(id(tensor))
    return save(named)


# ------------------------------------------------------------------------------------------------------- building
def build_vllm_engine(spec: EngineSpec) -> VLLMRolloutEngine:
    """``rollout.name=vllm``: an engine on ``spec.device`` configured from verl's rollout keys, in-process (its
    engine core in a child process of its own with ``spec.own_process``)."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in-process: the weight push passes tensors
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")  # its INFO/WARNING lines would drown the training log
    try:
        import vllm
    except ImportError as exc:
        raise ConfigError(f"{spec.key('name')}: 'vllm' needs vLLM installed: pip install -e '.[vllm]' (CUDA), or "
                          f"bash scripts/setup_vllm_env.sh for the CPU build ({exc})") from None
    kwargs = engine_kwargs(spec)
    children = child_pids(os.getpid())
    with _process_state_kept(), _child_process_environment(spec):
        llm = vllm.LLM(**kwargs)
    engine = VLLMRolloutEngine(llm, pad_token_id=spec.pad_token_id, eos_token_ids=spec.eos_token_ids,
                               sleep_during_update=kwargs.get("enable_sleep_mode", False), own_process=spec.own_process)
    if spec.own_process:  # the engine core dies with this process, however it dies
        engine.process_guard = guard(child_pids(os.getpid()) - children)
    if spec.rollout.load_format == "dummy":  # random weights: the policy's replace them
        engine.update_weights((name, full_tensor_of(param))
                              for name, param in spec.policy().named_parameters(remove_duplicate=False))
    return engine


def engine_kwargs(spec: EngineSpec) -> dict:
    """``vllm.LLM`` arguments from the rollout keys, which :func:`~gspo.rollout.vllm_options.check_vllm` passed."""
    rollout, on_cuda = spec.rollout, spec.device.type == "cuda"
    max_model_len = max_model_length(rollout, spec.max_prompt_length, spec.max_response_length)
    chunked = on_cuda if rollout.enable_chunked_prefill is None else rollout.enable_chunked_prefill
    max_num_seqs = min(rollout.micro_batch_size if rollout.micro_batch_size > 0 else 256,
                       rollout.max_num_batched_tokens)
    dtype = _DTYPES[rollout.dtype] or ("bfloat16" if on_cuda else "float32")
    kwargs = dict(model=str(spec.model_path), skip_tokenizer_init=True, dtype=dtype, seed=0,
                  enforce_eager=rollout.enforce_eager, enable_chunked_prefill=chunked,
                  max_num_batched_tokens=rollout.max_num_batched_tokens, max_model_len=max_model_len,
                  max_num_seqs=max_num_seqs, load_format=rollout.load_format, tensor_parallel_size=1,
                  enable_prefix_caching=True, logprobs_mode="processed_logprobs", generation_config="vllm",
                  distributed_executor_backend="external_launcher" if spec.world_size > 1 and not spec.own_process
                  else "uni")
    if spec.own_process:
        kwargs["worker_extension_cls"] = "gspo.rollout.vllm_worker.SerializedWeightsLoader"
    if on_cuda:
        # The device: cuda:0 on one process; under torchrun (external_launcher) the rank's LOCAL_RANK.
        kwargs.update(gpu_memory_utilization=rollout.gpu_memory_utilization,
                      enable_sleep_mode=rollout.free_cache_engine)
    else:  # KV cache for max_num_seqs full-length sequences; vLLM's CPU default (a share of RAM) is far more
        kwargs["kv_cache_memory_bytes"] = _cpu_kv_cache_bytes(spec, max_num_seqs, max_model_len, dtype)
    return kwargs


def _cpu_kv_cache_bytes(spec: EngineSpec, num_seqs: int, max_model_len: int, dtype: str) -> int:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(spec.model_path, local_files_only=True)
    config = getattr(config, "text_config", config)
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    per_token = 2 * config.num_hidden_layers * kv_heads * head_dim * (4 if dtype == "float32" else 2)
    blocks = num_seqs * -(-max_model_len // _CPU_BLOCK) + 1
    return max(blocks * _CPU_BLOCK * per_token, 16 << 20)


@contextlib.contextmanager
def _child_process_environment(spec: EngineSpec):
    """With ``spec.own_process``: while the engine starts, the environment its child process inherits: vLLM's
    engine core in a spawned process (a forked one would inherit this process's torch.distributed state), this
    process's torch threads, and on CUDA only this rank's device. Restored afterwards."""
    if not spec.own_process:
        yield
        return
    child = {"VLLM_ENABLE_V1_MULTIPROCESSING": "1", "VLLM_WORKER_MULTIPROC_METHOD": "spawn",
             "OMP_NUM_THREADS": str(torch.get_num_threads())}
    if spec.device.type == "cuda":
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        index = spec.device.index or 0
        child["CUDA_VISIBLE_DEVICES"] = visible.split(",")[index] if visible else str(index)
    saved = {name: os.environ.get(name) for name in child}
    os.environ.update(child)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _process_state_kept():
    """vLLM's worker re-seeds the global RNGs and, on CPU, pins torch's thread count (replacing
    ``torch.set_num_threads``); the trainer's process keeps its own."""
    states = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    threads, set_num_threads = torch.get_num_threads(), torch.set_num_threads
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
        torch.set_num_threads = set_num_threads
        torch.set_num_threads(threads)
