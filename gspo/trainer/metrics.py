"""Metric bookkeeping (accumulate over micro-batches / generation batches) and the metric sinks."""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)


class MetricAccumulator:
    """Weighted means of scalar metrics, except the names in ``max_names`` / ``min_names`` (reduced by max / min).

    The reduction is declared, never guessed from a name: a reward function's extra ``foo_max`` is averaged.
    """

    def __init__(self, *, max_names: Iterable[str] = (), min_names: Iterable[str] = ()) -> None:
        self._values: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self.max_names, self.min_names = frozenset(max_names), frozenset(min_names)

    def add(self, metrics: dict[str, float], weight: float = 1.0) -> None:
        for name, value in metrics.items():
            self._values[name].append((float(value), float(weight)))

    def like(self) -> MetricAccumulator:
        """An empty accumulator with the same reductions."""
        return MetricAccumulator(max_names=self.max_names, min_names=self.min_names)

    def merge(self, others: Iterable[MetricAccumulator]) -> MetricAccumulator:
        """This accumulator plus the (value, weight) pairs of ``others`` (e.g. gathered from other ranks)."""
        for other in others:
            for name, pairs in other._values.items():
                self._values[name].extend(pairs)
        return self

    def reduce(self) -> dict[str, float]:
        out = {}
        for name, pairs in self._values.items():
            values = [v for v, _ in pairs]
            if name in self.max_names:
                out[name] = max(values)
            elif name in self.min_names:
                out[name] = min(values)
            else:
                total_weight = sum(w for _, w in pairs)
                out[name] = sum(v * w for v, w in pairs) / total_weight if total_weight > 0 else 0.0
        return out


class MetricsLogger:
    """Writes one JSON object per step to ``metrics.jsonl`` and, if asked, TensorBoard scalars.

    Only rank 0 should construct one; other ranks log nothing. ``resume_step``: the step of the checkpoint the run
    resumed from (rows after it are redone, so they are dropped); None for a run that starts from scratch (every
    row goes). A torn last line (a kill mid-write) is dropped with a warning. See :mod:`gspo.trainer.run_folder`
    for the commit order that makes every step's row appear exactly once.
    """

    def __init__(self, output_dir: Path, loggers: Iterable[str], *, resume_step: int | None = None,
                 sinks: list | None = None):
        output_dir.mkdir(parents=True, exist_ok=True)
        self.path = output_dir / "metrics.jsonl"
        repair_metrics_file(self.path, resume_step)
        self._file = self.path.open("a", encoding="utf-8")
        self._tensorboard = None
        if "tensorboard" in loggers:
            from torch.utils.tensorboard import SummaryWriter  # optional dependency: gspo[tensorboard]

            self._tensorboard = SummaryWriter(log_dir=str(output_dir / "tensorboard"))
        self.sinks = sinks or []  # wandb / mlflow (gspo.trainer.sinks): log(step, metrics), close()

    def log(self, step: int, metrics: dict[str, float]) -> None:
        # One write of the whole line, then fsync: the row is on disk before the step's checkpoint can commit.
        self._file.write(json.dumps({"step": step, **metrics}, sort_keys=True) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        if self._tensorboard is not None:
            for name, value in metrics.items():
                self._tensorboard.add_scalar(name, value, step)
        for sink in self.sinks:
            sink.log(step, metrics)

    def close(self) -> None:
        self._file.close()
        if self._tensorboard is not None:
            self._tensorboard.close()
        for sink in self.sinks:
            sink.close()


def repair_metrics_file(path: Path, resume_step: int | None) -> None:
    """Keep one row per step up to ``resume_step`` (None: none), in step order; rewrite atomically if that changes.

    Rows after ``resume_step`` were logged by a run that died before their checkpoint committed: they are redone.
    Lines that do not parse (a torn last line after a kill) are dropped with a warning naming the line.
    """
    if not path.is_file():
        return
    text = path.read_text(encoding="utf-8", errors="replace")
    rows: dict[int, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            step = int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):
            log.warning("%s:%d: dropping an unreadable row (torn by a kill?): %.80s", path, number, line)
            continue
        if resume_step is not None and step <= resume_step:
            rows[step] = line  # a repeated step keeps its last row
    kept = "".join(rows[step] + "\n" for step in sorted(rows))
    if kept != text:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(kept, encoding="utf-8")
        os.replace(tmp, path)


def summary_line(step: int, metrics: dict[str, float]) -> str:
    """The one-line console summary of a training step."""
    parts = [f"step {step}"]
    for label, key, fmt in (("acc_all", "reward/all/acc_mean", ".3f"), ("acc_kept", "reward/kept/acc_mean", ".3f"),
                            ("val_acc", "val/acc_mean", ".3f"), ("gen_batches", "train/num_gen_batches", ".0f"),
                            ("filtered", "train/filtered_prompts_ratio", ".2f"),
                            ("clip", "actor/pg_clipfrac", ".4f"), ("len", "response_length/mean", ".1f"),
                            ("t", "timing/step", ".2f")):
        if key in metrics:
            parts.append(f"{label}={metrics[key]:{fmt}}")
    return " ".join(parts)
