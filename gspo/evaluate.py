"""``gspo eval --model PATH --data FILE [key=value ...]``: sample n responses per prompt, score, report pass@k.

Generation is the rollout engine ``engine`` names (the registry of ``actor_rollout_ref.rollout.name``: ``hf``, the
default, ``vllm`` or a registered one), set up by the same engine keys as in training (``dtype``,
``micro_batch_size`` and every engine's own keys, e.g. ``gpu_memory_utilization``, given bare), built and checked
as training builds it; prompts are :class:`gspo.data.PromptDataset` (the chat-template
logic of training) and scoring is :class:`gspo.rewards.RewardManager` (the reward registry by ``data_source``, or a
custom reward file), so an eval number means what the training metrics mean. Metrics, over P prompts:

    pass@1   mean ``acc`` over all P*n responses
    mean@n   mean reward ``score`` over all P*n responses (differs from pass@1 for partial-credit rewards)
    pass@k   mean over prompts of 1 - C(n-c, k) / C(n, k), c = responses with acc >= 0.5 (unbiased; Chen et al. 2021)
    maj@k    share of prompts whose majority answer over the first k responses is correct; answers are GSM8K's
             extracted numbers, math-verify equivalence classes for the math data sources (``\frac12`` and ``0.5``
             vote together), else the stripped response

Outputs in ``output_dir``: ``generations.jsonl`` (one line per prompt) and ``summary.json``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import time
from collections import Counter
from pathlib import Path
from typing import Optional, get_type_hints

import torch
import yaml

from gspo.config import CHAT_TEMPLATE_MODES, DEVICES, ConfigError, RolloutConfig, engine_settings, load_rollout_config
from gspo.rewards import extract_solution
from gspo.rewards.math import extract_final_answer, is_math_source, merge_equivalent
from gspo.rollout import EngineContext

CORRECT_ACC = 0.5  # a response counts as correct for pass@k / maj@k when its acc reaches this
GSM8K_SOURCES = ("openai/gsm8k", "gsm8k")


@dataclasses.dataclass
class EvalConfig:
    """``key=value`` settings of ``gspo eval``; lengths in tokens, batch_size in prompts."""

    n: int = 1  # responses per prompt
    k: int | None = None  # the k of pass@k and maj@k, 1 <= k <= n; None = n
    temperature: float = 0.0  # 0 = greedy decoding (then n must be 1)
    top_p: float = 1.0
    top_k: int = -1  # -1: disabled
    max_response_length: int = 1024
    max_prompt_length: int = 1024  # a longer prompt is an error: dropping it would change the denominator
    batch_size: int = 32  # prompts per generate() call, one progress-bar step (vllm: every prompt in one call)
    limit: int = 0  # evaluate only the first `limit` prompts; 0 = all
    output_dir: str | None = None  # None = <model folder's parent>/eval/<model folder>-<data file stem>
    chat_template: str = "auto"  # auto | always | never, as data.apply_chat_template
    prompt_key: str = "prompt"
    reward_path: str | None = None  # custom reward file, as custom_reward_function.path
    reward_name: str = "compute_score"
    device: str = "auto"  # auto | cpu | cuda
    seed: int = 0
    engine: str = "hf"  # rollout engine, as actor_rollout_ref.rollout.name: hf | vllm | a registered one
    cpu_threads: int = 0  # intra-op CPU threads; 0 = one per usable core (as trainer.cpu_threads)
    # Engine keys given (key -> value), as in actor_rollout_ref.rollout: dtype, micro_batch_size, and the engines'
    # own keys (gpu_memory_utilization, max_model_len, ...); the others keep the defaults of training, but
    # micro_batch_size, which defaults to 0 here (hf: one call per batch_size prompts; vllm: vLLM's own default).
    engine_overrides: dict = dataclasses.field(default_factory=dict)

    @property
    def pass_k(self) -> int:
        return self.k if self.k is not None else self.n


def parse_eval_args(overrides: list[str]) -> EvalConfig:
    """``key=value`` strings -> a checked :class:`EvalConfig`; a :class:`ConfigError` names the bad key."""
    types = {name: kind for name, kind in get_type_hints(EvalConfig).items() if name != "engine_overrides"}
    engine_keys = engine_settings()
    values, engine_values = {}, {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"argument {item!r} is not of the form key=value")
        if key in types:
            values[key] = _convert(key, raw, types[key])
        elif key in engine_keys:
            engine_values[key] = yaml.safe_load(raw) if raw.strip() else None
        else:
            near = difflib.get_close_matches(key, [*types, *engine_keys], n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ConfigError(f"unknown eval key {key!r}{hint} Valid keys: {', '.join(types)}; engine keys: "
                              f"{', '.join(engine_keys)}.")
    cfg = EvalConfig(**values, engine_overrides=engine_values)
    _check(cfg)
    return cfg


def eval_rollout_config(cfg: EvalConfig) -> RolloutConfig:
    """The rollout section ``gspo eval`` runs its engine with, checked as training checks it (errors name the bare
    eval keys)."""
    values = {"micro_batch_size": 0, **cfg.engine_overrides, "name": cfg.engine}
    return load_rollout_config(values, _engine_context(cfg))


def _engine_context(cfg: EvalConfig) -> EngineContext:
    return EngineContext(device=cfg.device, max_prompt_length=cfg.max_prompt_length,
                         max_response_length=cfg.max_response_length, key_prefix="", name_key="engine")


def _convert(key: str, raw: str, kind) -> object:
    optional = kind in (Optional[int], Optional[str])
    if optional and raw.strip().lower() in ("null", "none", ""):
        return None
    if kind in (str, Optional[str]):
        return raw  # verbatim: a path like "1e-6" or "007" stays a string
    value = yaml.safe_load(raw)
    if kind in (int, Optional[int]) and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    expected = "an integer" if kind in (int, Optional[int]) else "a number"
    raise ConfigError(f"{key}: cannot take {raw!r}; expected {expected}")


def _check(cfg: EvalConfig) -> None:
    def require(ok: bool, key: str, message: str) -> None:
        if not ok:
            raise ConfigError(f"{key}: {message}")

    require(cfg.n >= 1, "n", f"{cfg.n} must be >= 1")
    require(1 <= cfg.pass_k <= cfg.n, "k", f"{cfg.pass_k} must lie in [1, n={cfg.n}]")
    require(cfg.temperature >= 0, "temperature", f"{cfg.temperature} must be >= 0")
    require(cfg.n == 1 or cfg.temperature > 0, "temperature",
            f"n={cfg.n} responses per prompt need temperature > 0 (greedy decoding repeats one response)")
    require(0 < cfg.top_p <= 1, "top_p", f"{cfg.top_p} must lie in (0, 1]")
    require(cfg.top_k == -1 or cfg.top_k >= 1, "top_k", f"{cfg.top_k} must be -1 or >= 1")
    for key in ("max_response_length", "max_prompt_length", "batch_size"):
        require(getattr(cfg, key) >= 1, key, f"{getattr(cfg, key)} must be >= 1")
    require(cfg.cpu_threads >= 0, "cpu_threads", f"{cfg.cpu_threads} must be >= 0 (0 = one per usable core)")
    require(cfg.limit >= 0, "limit", f"{cfg.limit} must be >= 0 (0 = all prompts)")
    for key, choices in (("chat_template", CHAT_TEMPLATE_MODES), ("device", DEVICES)):
        require(getattr(cfg, key) in choices, key, f"{getattr(cfg, key)!r} is not one of {', '.join(choices)}")
    eval_rollout_config(cfg)  # the engine and its keys: a bad value fails before anything loads


# ------------------------------------------------------------------------------------------------------ metrics
def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k).

    >>> pass_at_k(4, 0, 2), pass_at_k(4, 1, 2), pass_at_k(4, 3, 2)
    (0.0, 0.5, 1.0)
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def majority_vote(answers: list[str | None], accs: list[float]) -> tuple[str | None, float]:
    """The most frequent non-None answer (ties: the earliest) and the acc of its first response.

    Unparsable responses (None) do not vote; with no votes the result is ``(None, 0.0)``.

    >>> majority_vote(["7", None, "5", "5", "7"], [1.0, 0.0, 0.0, 0.0, 1.0])
    ('7', 1.0)
    """
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None, 0.0
    best = max(counts.values())
    winner = next(a for a in answers if a is not None and counts[a] == best)
    return winner, accs[answers.index(winner)]


def extract_answer(response: str, data_source: str, extra_info: dict) -> str | None:
    """The answer that votes in maj@k: GSM8K's extracted number (the reward's method), the math rewards' final
    answer (last box / "Answer:" line), else the stripped text."""
    if data_source in GSM8K_SOURCES:
        return extract_solution(response, method=(extra_info or {}).get("method", "strict"))
    if is_math_source(data_source):
        return extract_final_answer(response)
    return response.strip()


def voting_answers(answers: list[str | None], data_source: str, k: int) -> list[str | None]:
    """``answers`` as they vote in maj@k: for the math sources, each of the first k replaced by the first
    equivalent one (math-verify), so a vote counts mathematically equal answers together."""
    if not is_math_source(data_source):
        return answers
    return merge_equivalent(answers[:k]) + answers[k:]


def score_prompt(answers: list[str | None], scores: list[float], accs: list[float], k: int) -> dict:
    """Per-prompt metrics over its n responses (the ``pass@k`` / ``maj@k`` here are 0/1 or estimates)."""
    correct = sum(a >= CORRECT_ACC for a in accs)
    majority, majority_acc = majority_vote(answers[:k], accs[:k])
    return {"num_correct": correct, "pass@k": pass_at_k(len(accs), correct, k), "majority_answer": majority,
            "maj@k": float(majority_acc >= CORRECT_ACC), "mean_score": sum(scores) / len(scores),
            "mean_acc": sum(accs) / len(accs)}


# --------------------------------------------------------------------------------------------------------- run
def default_output_dir(model_path: str, data_files: list[str]) -> Path:
    """Beside the model: ``<model folder's parent>/eval/<model folder>-<first data file stem>``, so a run's
    ``final_model`` is evaluated into its own run folder; the shipped ``embedded://`` models into ``outputs/eval``.

    >>> str(default_output_dir("runs/gsm8k/final_model", ["data/gsm8k/test.parquet"]))
    'runs/gsm8k/eval/final_model-test'
    >>> str(default_output_dir("embedded://addition", ["embedded://addition/val.jsonl"]))
    'outputs/eval/addition-val'
    """
    name = f"{Path(model_path.rstrip('/')).name}-{Path(data_files[0]).stem}"
    if model_path.startswith("embedded://"):
        return Path("outputs") / "eval" / name
    return Path(model_path.rstrip("/")).expanduser().parent / "eval" / name


def evaluate(model_path: str, data_files: list[str], cfg: EvalConfig) -> dict:
    """Generate, score and write ``generations.jsonl`` + ``summary.json``; returns the summary."""
    from tqdm.auto import tqdm

    from gspo.data import PromptDataset
    from gspo.model.loading import ModelLoadError, load_tokenizer, resolve_device
    from gspo.resources import resolve_path
    from gspo.rewards import RewardManager, load_custom_reward
    from gspo.rollout import SamplingParams, group_keys, rollout_engine_definition
    from gspo.rollout.truncation import truncated_responses

    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    try:
        tokenizer = load_tokenizer(model_path)
    except ModelLoadError as exc:  # its messages name the training key; here the flag is --model
        raise ModelLoadError(str(exc).replace("actor_rollout_ref.model.path", "--model", 1)) from None
    # Data and reward before the weights: a bad file fails in seconds, not after loading a 3B model.
    files = [resolve_path(f) for f in data_files]
    items = list(PromptDataset.from_files(files, tokenizer, prompt_key=cfg.prompt_key, apply_chat_template=
                                          cfg.chat_template, max_prompt_length=cfg.max_prompt_length))
    items = items[:cfg.limit or None]
    rewards = RewardManager(load_custom_reward(cfg.reward_path, cfg.reward_name) if cfg.reward_path else None)
    engine = build_eval_engine(model_path, tokenizer, device, cfg)
    eos_ids = engine.eos_token_ids
    params = SamplingParams(n=cfg.n, temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k,
                            do_sample=cfg.temperature > 0, max_new_tokens=cfg.max_response_length)
    # An engine with its own scheduler (vllm) batches best when it sees every prompt at once.
    per_call = max(len(items), 1) if rollout_engine_definition(cfg.engine).schedules_own_batches else cfg.batch_size
    out_dir = Path(cfg.output_dir).expanduser() if cfg.output_dir else default_output_dir(model_path, data_files)
    out_dir.mkdir(parents=True, exist_ok=True)
    records, num_truncated = [], 0
    with open(out_dir / "generations.jsonl", "w", encoding="utf-8") as sink:
        for first in tqdm(range(0, len(items), per_call), desc="eval", unit="batch", dynamic_ncols=True):
            batch = items[first:first + per_call]
            # Seeded by (seed, position in the file): with the hf engine, the same samples at any batch_size.
            keys = group_keys(cfg.seed, torch.arange(first, first + len(batch))) if params.do_sample else None
            generation = engine.generate([p.prompt_ids for p in batch], params, keys)
            texts = tokenizer.batch_decode(generation.response_ids, skip_special_tokens=True)
            scored = rewards.score_groups(texts, generation.response_lengths, batch, cfg.n)
            num_truncated += int(truncated_responses(generation.response_ids, generation.response_mask, eos_ids,
                                                     cfg.max_response_length).sum().item())
            for record in _prompt_records(batch, texts, scored, generation.response_lengths.tolist(), cfg):
                sink.write(json.dumps(record, ensure_ascii=False) + "\n")
                records.append(record)
    summary = summarize(records, cfg, num_truncated)
    summary.update(model=str(model_path), data=[str(f) for f in data_files], output_dir=str(out_dir),
                   wall_s=round(time.perf_counter() - start, 2))
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def build_eval_engine(model_path: str, tokenizer, device: torch.device, cfg: EvalConfig):
    """The engine ``cfg.engine`` names, built as training builds it; the hf engine loads the model here."""
    from functools import cache

    from gspo.model.loading import eos_token_ids, generation_config_of, load_causal_lm
    from gspo.resources import resolve_path
    from gspo.rollout import EngineSpec, build_rollout_engine

    policy = cache(lambda: load_causal_lm(model_path, device))
    folder = resolve_path(model_path)
    eos_ids = eos_token_ids(tokenizer, generation_config_of(folder))  # as training's, without loading weights
    context = _engine_context(cfg)
    return build_rollout_engine(EngineSpec(
        model_path=folder, policy=policy, pad_token_id=tokenizer.pad_token_id, eos_token_ids=eos_ids, device=device,
        rollout=eval_rollout_config(cfg), max_prompt_length=cfg.max_prompt_length,
        max_response_length=cfg.max_response_length, key_prefix=context.key_prefix, name_key=context.name_key))


def _prompt_records(batch: list, texts: list[str], scored, lengths: list[int], cfg: EvalConfig) -> list[dict]:
    """One ``generations.jsonl`` record per prompt; prompt i owns responses ``[i*n, (i+1)*n)``."""
    records = []
    for i, item in enumerate(batch):
        span = slice(i * cfg.n, (i + 1) * cfg.n)
        answers = [extract_answer(text, item.data_source, item.extra_info) for text in texts[span]]
        votes = voting_answers(answers, item.data_source, cfg.pass_k)
        scores, accs = scored.seq_reward[span].tolist(), scored.acc[span].tolist()
        records.append({"index": item.index, "data_source": item.data_source, "prompt": item.prompt_text,
                        "ground_truth": item.ground_truth, "responses": texts[span], "answers": answers,
                        "scores": scores, "accs": accs, "response_lengths": lengths[span],
                        **score_prompt(votes, scores, accs, cfg.pass_k)})
    return records


def summarize(records: list[dict], cfg: EvalConfig, num_truncated: int) -> dict:
    """Dataset-level metrics from per-prompt records (every prompt has n responses, so means are flat)."""
    num, k = max(len(records), 1), cfg.pass_k
    lengths = [length for r in records for length in r["response_lengths"]]
    summary = {"num_prompts": len(records), "n": cfg.n, "k": k, "temperature": cfg.temperature,
               "top_p": cfg.top_p, "top_k": cfg.top_k, "max_response_length": cfg.max_response_length,
               "pass@1": sum(r["mean_acc"] for r in records) / num,
               f"mean@{cfg.n}": sum(r["mean_score"] for r in records) / num}
    if k > 1:  # for k = 1 the estimator is the thresholded mean acc; pass@1 stays the plain mean acc
        summary[f"pass@{k}"] = sum(r["pass@k"] for r in records) / num
    summary[f"maj@{k}"] = sum(r["maj@k"] for r in records) / num
    summary["response_length_mean"] = sum(lengths) / max(len(lengths), 1)
    summary["truncated_ratio"] = num_truncated / max(len(lengths), 1)
    return summary


def format_summary(summary: dict) -> str:
    keys = [key for key in summary if "@" in key] + ["response_length_mean", "truncated_ratio"]
    metrics = " ".join(f"{key}={summary[key]:.4f}" for key in keys)
    return (f"{summary['num_prompts']} prompts x n={summary['n']}: {metrics}\n"
            f"wrote {summary['output_dir']}/generations.jsonl and summary.json ({summary['wall_s']:.1f} s)")
