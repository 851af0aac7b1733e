"""DAPO dynamic sampling, in one place: generate -> score -> filter -> accumulate until the train batch is full.

:func:`collect_train_batch` is the loop, over two callables (draw prompt indices, generate and score them), so it
runs without a model; :class:`~gspo.trainer.sampling_state.DynamicSamplingState` is what carries over from one
training step to the next; the per-group keep rule itself is :func:`gspo.algos.informative_row_mask` (DAPO,
arXiv:2503.14476, Sec. 3.2).

Filter metrics (``algorithm.filter_groups.metric``):

- ``seq_reward``: the reward function's score, before overlong shaping;
- ``seq_final_reward``: the reward the advantages use, after overlong shaping;
- ``acc``: the reward's ``acc`` (its score when it returns a plain number). Filter on ``acc`` when the score is
  shaped, so a group whose answers are all right but of different lengths still counts as solved.

Dynamic sampling that wastes little. Three switches under ``algorithm.filter_groups``, each off by default
(verl's behaviour):

- ``keep_surplus``: kept groups beyond ``train_batch_size`` wait for the next step instead of being dropped; they
  are used first, at most ``max_surplus_age`` steps after they were generated, and never twice.
- ``adaptive_gen_batch_size``: each generation batch is sized from the running keep ratio so that one batch
  usually fills what the train batch still needs.
- ``prefilter``: a prompt whose last ``min_constant_visits`` groups were all-equal (always solved, or always
  failed) is skipped before generation; each skip is re-admitted with probability ``readmit_prob`` so no prompt
  is lost for good (``readmit_decay``: with ``readmit_prob ** (streak - min_constant_visits + 1)``, GRESO's
  exponential back-off, arXiv 2506.02177); ``failed_readmit_prob`` gives prompts whose last group all failed their
  own constant rate, as GRESO keeps separate rates for easy and hard prompts. Skipped prompts are replaced by
  further draws, up to one pass over the data, so a generation batch still holds the number of prompts its sizing
  asked for. A batch whose draws were all skipped counts toward ``max_num_gen_batches`` though nothing was
  generated, and one after which no prompt can ever be re-admitted ends the run at once. With
  ``probe_responses`` = k > 0 a prompt the prefilter would skip is probed instead: k responses, and the other
  n - k only when one of the k scores unlike the prompt's last all-equal group (then it is a full group, kept or
  dropped as any other); a probe that agrees is dropped and the streak grows. The check costs k / n of a group,
  and a failed prompt the policy has started to solve is caught on its next visit with probability about its pass
  rate (k = 1), where a re-admission catches it only as often as it is drawn.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

from gspo.algos import (
    contiguous_row_order,
    count_groups,
    groups_in_order,
    informative_row_mask,
    relabel_groups,
    rows_of_first_groups,
)
from gspo.config import FilterGroupsConfig
from gspo.rollout.truncation import truncated_responses
from gspo.trainer.batch import RolloutBatch
from gspo.trainer.metrics import MetricAccumulator
from gspo.trainer.parallel import merge_rank_reward_metrics
from gspo.trainer.sampling_state import DynamicSamplingState

DrawPrompts = Callable[[int], list[int]]  # how many -> that many prompt indices (the sampler's next ones)


class GenerateAndScore(Protocol):
    def __call__(self, prompt_indices: list[int], num_responses: int | None = None
                 ) -> tuple[RolloutBatch, dict[str, float]]:
        """Scored groups of ``num_responses`` (default: rollout.n) responses for the prompts, in their order,
        with the reward function's metrics; group ids never repeat within a run."""
        ...


class DynamicSamplingError(RuntimeError):
    """The train batch cannot fill: the generation-batch cap was reached, or the prefilter skips every prompt."""


def select_informative_groups(batch: RolloutBatch, metric: str) -> RolloutBatch:
    """Rows of the informative groups: those whose ``metric`` (a RolloutBatch field name) varies."""
    return batch.select(informative_row_mask(getattr(batch, metric), batch.group_ids))


def split_groups(batch: RolloutBatch, num_groups: int) -> tuple[RolloutBatch, RolloutBatch]:
    """(rows of the first ``num_groups`` prompt groups in order, rows of the rest): whole groups only."""
    chosen = rows_of_first_groups(batch.group_ids, num_groups)
    return batch.select(chosen), batch.select(~chosen)


@dataclass
class GenerationStats:
    """What every generation batch of one training step produced, so no metric is lost across batches.

    The one place where the means of the generated responses' rewards (``reward/all/*``) are computed; the reward
    function's own metrics (errors, overlong shaping, extras) are averaged over the batches as they come.
    """

    eos_token_ids: list[int]
    max_response_length: int
    num_gen_batches: int = 0
    num_groups: int = 0
    num_kept_groups: int = 0
    _sums: dict[str, float] = field(default_factory=dict)
    _num_sequences: int = 0
    _max_length: int = 0
    _num_clipped: int = 0
    _num_reward_errors: int = 0
    _num_prefiltered: int = 0
    _num_probed: int = 0
    _num_probes_completed: int = 0
    _surplus_groups: int = 0
    _surplus_age_sum: float = 0.0
    _reward_metrics: MetricAccumulator = field(default_factory=MetricAccumulator)

    def add_surplus(self, surplus: RolloutBatch, step: int) -> None:
        """Groups carried over from earlier steps count as kept, not as generated."""
        num_groups = count_groups(surplus.group_ids)
        self.num_kept_groups += num_groups
        self._surplus_groups += num_groups
        self._surplus_age_sum += (step - surplus.generation_step).float().mean().item() * num_groups

    def add_prefiltered(self, num_skipped: int) -> None:
        self._num_prefiltered += num_skipped

    def add_probed(self, num_probed: int, num_completed: int) -> None:
        self._num_probed += num_probed
        self._num_probes_completed += num_completed

    def add_skipped_batch(self) -> None:
        """A generation batch whose every draw the prefilter skipped: nothing generated, but it counts."""
        self.num_gen_batches += 1

    def add(self, generated: RolloutBatch, kept: RolloutBatch, reward_metrics: dict[str, float]) -> None:
        """Record one generation batch, the groups kept from it, and its reward-function metrics."""
        self.num_gen_batches += 1
        self._reward_metrics.add(reward_metrics, weight=generated.num_sequences)
        self._num_reward_errors += int(reward_metrics.get("reward/errors", 0))
        self.num_groups += count_groups(generated.group_ids)
        self.num_kept_groups += count_groups(kept.group_ids)
        self._num_sequences += generated.num_sequences
        for name in ("seq_reward", "seq_final_reward", "acc"):
            self._sums[name] = self._sums.get(name, 0.0) + getattr(generated, name).sum().item()
        lengths = generated.response_lengths
        self._sums["length"] = self._sums.get("length", 0.0) + lengths.sum().item()
        self._max_length = max(self._max_length, int(lengths.max().item()))
        self._num_clipped += int(truncated_responses(generated.response_ids, generated.response_mask,
                                                     self.eos_token_ids, self.max_response_length).sum().item())

    def cap_error(self, needed: int, cfg: FilterGroupsConfig) -> DynamicSamplingError:
        """The ``max_num_gen_batches`` cap is reached with fewer than ``needed`` groups kept."""
        return DynamicSamplingError(
            f"{self._kept_line(needed)}. Remedies: raise algorithm.filter_groups.max_num_gen_batches (0 = unlimited), "
            f"raise data.gen_batch_size, use data the policy neither always solves nor always fails, or filter on "
            f"a different algorithm.filter_groups.metric (now {cfg.metric!r}).{self._prefilter_note(cfg)}"
            f"{self._reward_error_note()}")

    def everything_skipped_error(self, needed: int, cfg: FilterGroupsConfig) -> DynamicSamplingError:
        """The prefilter skips every prompt of the data and can re-admit none of them."""
        prefilter = cfg.prefilter
        return DynamicSamplingError(
            f"{self._kept_line(needed)}: the prefilter skips every prompt, and none can come back (each was "
            f"all-equal on its last algorithm.filter_groups.prefilter.min_constant_visits="
            f"{prefilter.min_constant_visits} visits; algorithm.filter_groups.prefilter.readmit_prob="
            f"{prefilter.readmit_prob}, failed_readmit_prob={prefilter.failed_readmit_prob}). Raise "
            f"algorithm.filter_groups.prefilter.readmit_prob above 0, set algorithm.filter_groups.prefilter."
            f"probe_responses > 0, or set algorithm.filter_groups.prefilter.enable=false.{self._reward_error_note()}")

    def _kept_line(self, needed: int) -> str:
        return (f"dynamic sampling kept {self.num_kept_groups} of {self.num_groups} prompt groups in "
                f"{self.num_gen_batches} generation batches, fewer than data.train_batch_size={needed}")

    def _prefilter_note(self, cfg: FilterGroupsConfig) -> str:
        if not self._num_prefiltered:
            return ""
        return (f" The prefilter skipped {self._num_prefiltered} drawn prompts (all-equal on their last "
                f"algorithm.filter_groups.prefilter.min_constant_visits={cfg.prefilter.min_constant_visits} visits); "
                f"raise algorithm.filter_groups.prefilter.readmit_prob (now {cfg.prefilter.readmit_prob}) to "
                f"generate more of them.")

    def _reward_error_note(self) -> str:
        if not self._num_reward_errors:
            return ""
        return (f" {self._num_reward_errors} of {self._num_sequences} responses had reward errors (raised or past "
                f"reward_model.timeout_s) and were scored 0 under reward_model.on_error=zero: fix the reward "
                f"function first, or set reward_model.on_error=raise to see the first failure.")

    def metrics(self) -> dict[str, float]:
        n = max(self._num_sequences, 1)
        reward_metrics = {**self._reward_metrics.reduce(), "reward/errors": float(self._num_reward_errors)}
        counts = {"train/num_gen_batches": float(self.num_gen_batches),
                  "train/generated_prompts": float(self.num_groups),
                  "train/kept_prompts": float(self.num_kept_groups),
                  "train/prefiltered_prompts": float(self._num_prefiltered),
                  "train/probed_prompts": float(self._num_probed),
                  "train/probes_completed": float(self._num_probes_completed),
                  "train/surplus_groups_used": float(self._surplus_groups),
                  "train/surplus_age_mean": self._surplus_age_sum / max(self._surplus_groups, 1),
                  "train/generated_tokens": self._sums.get("length", 0.0)}
        if self.num_groups == 0:
            # Filled from surplus alone: nothing was generated, so there is no filtered ratio, reward of the
            # generated responses or response length (logging 0 or 1 would skew the curves and their means).
            return {**reward_metrics, **counts}
        return {**reward_metrics, **counts,
                "train/filtered_prompts_ratio": 1.0 - (self.num_kept_groups - self._surplus_groups) / self.num_groups,
                "reward/all/score_mean": self._sums.get("seq_reward", 0.0) / n,
                "reward/all/final_reward_mean": self._sums.get("seq_final_reward", 0.0) / n,
                "reward/all/acc_mean": self._sums.get("acc", 0.0) / n,
                "response_length/mean": self._sums.get("length", 0.0) / n,
                "response_length/max": float(self._max_length),
                "response_length/clip_ratio": self._num_clipped / n}


def trained_batch_metrics(batch: RolloutBatch) -> dict[str, float]:
    """Reward means of the groups that are actually trained on (after filtering and trimming)."""
    return {"reward/kept/score_mean": batch.seq_reward.mean().item(),
            "reward/kept/final_reward_mean": batch.seq_final_reward.mean().item(),
            "reward/kept/acc_mean": batch.acc.mean().item(),
            "reward/kept/advantage_abs_mean": batch.advantages.abs().mean().item()}


def collect_train_batch(num_groups: int, cfg: FilterGroupsConfig, state: DynamicSamplingState, *, step: int,
                        draw_prompts: DrawPrompts, generate_and_score: GenerateAndScore, stats: GenerationStats,
                        pad_token_id: int) -> tuple[RolloutBatch, dict[str, float]]:
    """Generation batches until ``num_groups`` informative prompt groups are kept (DAPO dynamic sampling).

    Surplus groups carried from earlier steps go first (none grows stale); each generation batch draws
    ``state.gen_batch_size`` prompts, drops those the prefilter skips, generates and scores the rest, and keeps
    the groups whose ``cfg.metric`` varies (all of them when ``cfg.enable`` is false). Whole groups beyond
    ``num_groups`` are stored as surplus (``keep_surplus``) or dropped. Raises :class:`DynamicSamplingError` after
    ``cfg.max_num_gen_batches`` batches (0: unlimited), or once the prefilter can let no prompt through. Returns
    the train batch (groups in generation order) and the step's generation metrics (``stats.metrics()``).
    """
    kept: list[RolloutBatch] = []
    surplus = state.take_surplus(step)
    if surplus is not None:
        stats.add_surplus(surplus, step)
        kept.append(surplus)
    while stats.num_kept_groups < num_groups:
        if cfg.enable and 0 < cfg.max_num_gen_batches <= stats.num_gen_batches:
            raise stats.cap_error(num_groups, cfg)
        kept_now = _generation_batch(num_groups - stats.num_kept_groups, cfg, state, draw_prompts,
                                     generate_and_score, stats, pad_token_id)
        if kept_now is not None:
            kept.append(kept_now)
        elif not state.may_admit_any():
            raise stats.everything_skipped_error(num_groups, cfg)
    train_batch, leftover = split_groups(RolloutBatch.concat(kept, pad_token_id), num_groups)
    state.store_surplus(leftover)
    assert count_groups(train_batch.group_ids) == num_groups
    return train_batch, stats.metrics()


def _generation_batch(groups_needed: int, cfg: FilterGroupsConfig, state: DynamicSamplingState,
                      draw_prompts: DrawPrompts, generate_and_score: GenerateAndScore, stats: GenerationStats,
                      pad_token_id: int) -> RolloutBatch | None:
    """Draw, prefilter, generate, score and filter one generation batch, recorded in ``stats``; its kept groups, or
    None when the prefilter skipped every draw and there was nothing to probe (nothing generated)."""
    prompts, skipped = _admitted_prompts(groups_needed, state, draw_prompts, stats)
    probing = bool(skipped) and cfg.prefilter.probe_responses > 0
    if not prompts and not probing:
        stats.add_skipped_batch()
        return None
    parts: list[tuple[RolloutBatch, RolloutBatch, dict[str, float]]] = []  # (generated, kept, reward metrics)
    if prompts:
        batch, reward_metrics = generate_and_score(prompts)
        if cfg.enable:
            state.observe(batch, cfg.metric)
        parts.append((batch, select_informative_groups(batch, cfg.metric) if cfg.enable else batch, reward_metrics))
    if probing:
        parts.append(_probe(skipped, cfg, state, stats, generate_and_score, pad_token_id))
    generated = RolloutBatch.concat([part[0] for part in parts], pad_token_id)
    kept = RolloutBatch.concat([part[1] for part in parts], pad_token_id)
    reward_metrics = parts[0][2] if len(parts) == 1 else merge_rank_reward_metrics(
        [(metrics, batch.num_sequences) for batch, _, metrics in parts])
    stats.add(generated, kept, reward_metrics)
    return kept


def _admitted_prompts(groups_needed: int, state: DynamicSamplingState, draw_prompts: DrawPrompts,
                      stats: GenerationStats) -> tuple[list[int], list[int]]:
    """The next generation batch's prompt indices, sized and prefiltered by the dynamic-sampling state, and the
    prompts the prefilter skipped (in draw order).

    Prompts the prefilter skips are replaced by further draws until the batch has its size, for at most one pass
    over the data's worth of draws; then whatever was admitted goes, possibly nothing.
    """
    wanted = state.gen_batch_size(groups_needed)
    admitted: list[int] = []
    skipped: list[int] = []
    drawn = 0
    while len(admitted) < wanted and drawn < state.num_prompts:
        prompts = draw_prompts(wanted - len(admitted))
        drawn += len(prompts)
        new, not_now = state.admit(prompts)
        stats.add_prefiltered(len(not_now))
        admitted.extend(new)
        skipped.extend(not_now)
    return admitted, skipped


def _probe(skipped: list[int], cfg: FilterGroupsConfig, state: DynamicSamplingState, stats: GenerationStats,
           generate_and_score: GenerateAndScore, pad_token_id: int
           ) -> tuple[RolloutBatch, RolloutBatch, dict[str, float]]:
    """Probe the prompts the prefilter skipped: ``prefilter.probe_responses`` responses each; a probe that scores
    unlike its prompt's last all-equal group is completed to a full group (same group id, the other responses
    sampled now), one that agrees extends the prompt's streak and is dropped.

    Returns (every row generated: agreeing probes and completed groups, the informative completed groups, the
    reward metrics over every row generated).
    """
    num_probe_responses = cfg.prefilter.probe_responses
    probes, metrics = generate_and_score(skipped, num_probe_responses)
    changed = state.changed_probe_rows(probes, cfg.metric)
    agreeing, to_complete = probes.select(~changed), probes.select(changed)
    state.observe_agreeing_probes(sorted(set(agreeing.prompt_index.tolist())))
    stats.add_probed(len(skipped), count_groups(to_complete.group_ids))
    if not to_complete.num_sequences:
        return probes, to_complete, metrics
    probe_groups = groups_in_order(to_complete.group_ids)
    prompt_of_group = dict(zip(to_complete.group_ids.tolist(), to_complete.prompt_index.tolist()))
    rest, rest_metrics = generate_and_score([prompt_of_group[g] for g in probe_groups.tolist()],
                                            state.responses_per_prompt - num_probe_responses)
    rest = replace(rest, group_ids=relabel_groups(rest.group_ids, probe_groups))
    completed = RolloutBatch.concat([to_complete, rest], pad_token_id)
    completed = completed.select(contiguous_row_order(completed.group_ids))
    state.observe(completed, cfg.metric, update_keep_ratio=False)
    return (RolloutBatch.concat([agreeing, completed], pad_token_id), select_informative_groups(completed, cfg.metric),
            merge_rank_reward_metrics([(metrics, probes.num_sequences), (rest_metrics, rest.num_sequences)]))
