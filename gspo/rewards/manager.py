"""Scoring a batch of responses: reward lookup, validation, error policy, overlong shaping."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from gspo.rewards.base import RewardError, RewardFn, RewardOutput, normalize_reward, preview
from gspo.rewards.registry import get_reward_fn
from gspo.rewards.shaping import check_overlong_args, overlong_penalty
from gspo.rewards.timeout import RewardTimeout, TimedReward

log = logging.getLogger(__name__)

ON_ERROR_MODES = ("raise", "zero")


@dataclass
class RewardBatch:
    """Rewards for a batch of B responses (CPU tensors).

    Attributes:
        seq_reward: (B,) float32, the reward function's score before shaping.
        seq_final_reward: (B,) float32, ``seq_reward + overlong_penalty``; what training uses.
        acc: (B,) float32, the reward's accuracy (never shaped).
        overlong_penalty: (B,) float32, <= 0; all zeros when shaping is disabled.
        num_errors: responses whose reward failed and were scored 0 (``on_error="zero"``).
        metrics: what only the reward side knows, keyed "reward/...": errors (count),
            overlong_penalty_mean, overlong_ratio (share with a non-zero penalty), and
            "reward/extra/<key>" (mean over the responses that reported that numeric
            extra). The means of the rewards themselves are the caller's to take
            from the tensors above.
        extras: per response, the numeric extras of a dict reward.
    """

    seq_reward: torch.Tensor
    seq_final_reward: torch.Tensor
    acc: torch.Tensor
    overlong_penalty: torch.Tensor
    num_errors: int
    metrics: dict[str, float]
    extras: list[dict[str, float]] = field(default_factory=list)


class RewardManager:
    """Scores responses with a custom function or the per-data-source registry.

    Args:
        custom_fn: when given, scores every response regardless of data_source.
        on_error: "raise" (a :class:`RewardError` with data_source, function,
            ground truth and response prefix, chained from the cause) or "zero"
            (score 0, acc 0, counted in ``num_errors``). A NaN/inf or non-numeric
            return value is an error too. An unknown data_source always raises:
            it is a configuration error, not a per-response failure.
        overlong_enable: add DAPO's soft overlong penalty to ``seq_final_reward``.
        overlong_buffer_len, overlong_penalty_factor, max_response_length: see
            :func:`gspo.rewards.shaping.overlong_penalty` (tokens).
        timeout_s: seconds one call of ``custom_fn`` may take (see :mod:`gspo.rewards.timeout`); a call past it
            is an error like any other (``on_error``; "raise" stops at the first one). None or <= 0: no limit,
            called in this process.
    """

    def __init__(
        self,
        custom_fn: RewardFn | None = None,
        *,
        on_error: str = "raise",
        overlong_enable: bool = False,
        overlong_buffer_len: int = 0,
        overlong_penalty_factor: float = 1.0,
        max_response_length: int | None = None,
        timeout_s: float | None = None,
    ) -> None:
        if on_error not in ON_ERROR_MODES:
            raise ValueError(f"on_error must be one of {ON_ERROR_MODES}, got {on_error!r}")
        if custom_fn is not None and not callable(custom_fn):
            raise TypeError(f"custom_fn must be callable, got {type(custom_fn).__name__}")
        if overlong_enable:
            if max_response_length is None:
                raise ValueError("max_response_length is required when overlong_enable=True")
            check_overlong_args(max_response_length, overlong_buffer_len, overlong_penalty_factor)
        if custom_fn is not None and timeout_s is not None and timeout_s > 0:
            custom_fn = TimedReward(custom_fn, timeout_s, stop_at_first_error=on_error == "raise")
        self.custom_fn = custom_fn
        self.on_error = on_error
        self.overlong_enable = overlong_enable
        self.overlong_buffer_len = overlong_buffer_len
        self.overlong_penalty_factor = overlong_penalty_factor
        self.max_response_length = max_response_length

    def score(
        self,
        responses: Sequence[str],
        response_lengths: Sequence[int] | torch.Tensor | None,
        ground_truths: Sequence[str | None],
        data_sources: Sequence[str],
        extra_infos: Sequence[dict | None],
    ) -> RewardBatch:
        """Score B responses; ``response_lengths`` is (B,) in tokens, any device (may be None without shaping)."""
        batch = len(responses)
        for arg_name, arg in (
            ("ground_truths", ground_truths),
            ("data_sources", data_sources),
            ("extra_infos", extra_infos),
        ):
            if len(arg) != batch:
                raise ValueError(f"{arg_name} has {len(arg)} entries but there are {batch} responses")
        lengths = self._lengths(response_lengths, batch)

        outputs: list[RewardOutput] = []
        num_errors = 0
        fns = self._functions(data_sources, batch)
        raw_results = _call_rewards(fns, responses, ground_truths, extra_infos)
        for i, (response, gt, source, raw) in enumerate(zip(responses, ground_truths, data_sources, raw_results)):
            fn_name = getattr(fns[i], "__qualname__", None) or repr(fns[i])
            try:
                if isinstance(raw, BaseException):
                    raise raw
                out = normalize_reward(raw, fn_name=fn_name, response_text=response)
            except Exception as e:
                if self.on_error == "raise":
                    raise RewardError(_failure_message(e, i, fn_name, source, gt, response)) from e
                if isinstance(e, RewardTimeout):
                    log.warning("reward function %r: sample %d scored 0 (reward_model.on_error=zero): %s", fn_name,
                                i, e)
                num_errors += 1
                out = RewardOutput(score=0.0, acc=0.0)
            outputs.append(out)

        seq_reward = torch.tensor([o.score for o in outputs], dtype=torch.float32)
        acc = torch.tensor([o.acc for o in outputs], dtype=torch.float32)
        if self.overlong_enable and batch:
            penalty = overlong_penalty(
                lengths,
                max_response_length=self.max_response_length,
                buffer_len=self.overlong_buffer_len,
                penalty_factor=self.overlong_penalty_factor,
            )
        else:
            penalty = torch.zeros(batch, dtype=torch.float32)
        final = seq_reward + penalty
        extras = [o.extras for o in outputs]
        return RewardBatch(
            seq_reward=seq_reward,
            seq_final_reward=final,
            acc=acc,
            overlong_penalty=penalty,
            num_errors=num_errors,
            metrics=_metrics(penalty, num_errors, extras),
            extras=extras,
        )

    def score_groups(self, responses: Sequence[str], response_lengths: Sequence[int] | torch.Tensor | None,
                     prompts: Sequence, n: int) -> RewardBatch:
        """Score ``len(prompts) * n`` responses where prompt ``i`` owns rows ``[i*n, (i+1)*n)``.

        ``prompts`` are items with ``ground_truth``, ``data_source`` and ``extra_info`` (``gspo.data.PromptItem``).
        """
        rows = [p for p in prompts for _ in range(n)]
        return self.score(responses, response_lengths, [p.ground_truth for p in rows],
                          [p.data_source for p in rows], [p.extra_info for p in rows])

    def _functions(self, data_sources: Sequence[str], batch: int) -> list[RewardFn]:
        """The reward function of each response (an unknown data_source raises: a configuration error)."""
        if self.custom_fn is not None:
            return [self.custom_fn] * batch
        by_source = {source: get_reward_fn(source) for source in dict.fromkeys(data_sources)}
        return [by_source[source] for source in data_sources]

    def _lengths(self, response_lengths: Sequence[int] | torch.Tensor | None, batch: int) -> torch.Tensor | None:
        if response_lengths is None:
            if self.overlong_enable:
                raise ValueError("response_lengths is required when overlong shaping is enabled")
            return None
        # Rewards are computed on CPU; lengths may arrive on the accelerator.
        lengths = torch.as_tensor(response_lengths).detach().to("cpu")
        if lengths.shape != (batch,):
            raise ValueError(f"response_lengths must have shape ({batch},), got {tuple(lengths.shape)}")
        return lengths


def _call_rewards(fns: list[RewardFn], responses: Sequence[str], ground_truths: Sequence[str | None],
                  extra_infos: Sequence[dict | None]) -> list:
    """Each response's raw reward value, or the exception its reward function raised for it.

    A function with a ``score_batch(responses, ground_truths, extra_infos) -> list`` attribute gets all its
    responses in one call (the math rewards verify them in parallel); an entry of that list may be an exception
    (that response's failure). An exception raised by ``score_batch`` itself propagates: it is not about one
    response (a missing dependency, say) and must not be scored 0 under ``on_error="zero"``.
    """
    results: list = [None] * len(responses)
    groups: dict[int, list[int]] = defaultdict(list)
    for i, fn in enumerate(fns):
        groups[id(fn)].append(i)
    for indices in groups.values():
        fn = fns[indices[0]]
        # Copies, so a reward function cannot mutate the dataset's extra_info.
        extras = [dict(extra_infos[i] or {}) for i in indices]
        score_batch = getattr(fn, "score_batch", None)
        if score_batch is not None:
            values = score_batch([responses[i] for i in indices], [ground_truths[i] for i in indices], extras)
            if len(values) != len(indices):
                raise RewardError(f"{fn!r}.score_batch returned {len(values)} results for {len(indices)} responses")
            for i, value in zip(indices, values):
                results[i] = value
            continue
        for i, extra in zip(indices, extras):
            try:
                results[i] = fn(responses[i], ground_truths[i], extra)
            except Exception as e:
                results[i] = e
    return results


def _failure_message(error: Exception, i: int, fn_name: str, source: str, gt: object, response: str) -> str:
    context = f"sample {i}, data_source={source!r}, ground_truth={gt!r:.200}"
    if isinstance(error, RewardError):  # invalid return value; the message already names fn and response
        return f"invalid reward ({context}): {error}"
    return (
        f"reward function {fn_name!r} raised {type(error).__name__}: {error} ({context}); "
        f"response: {preview(response)}"
    )


def _metrics(penalty: torch.Tensor, num_errors: int, extras: list[dict[str, float]]) -> dict[str, float]:
    metrics = {"reward/errors": float(num_errors)}
    if penalty.numel() == 0:
        return metrics
    metrics["reward/overlong_penalty_mean"] = penalty.mean().item()
    metrics["reward/overlong_ratio"] = (penalty != 0).float().mean().item()
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for extra in extras:
        for key, value in extra.items():
            sums[key] += value
            counts[key] += 1
    for key in sorted(sums):
        metrics[f"reward/extra/{key}"] = sums[key] / counts[key]
    return metrics
