"""Metric bookkeeping (accumulate over micro-batches / generation batches) and the metric sinks."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path


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

    Only rank 0 should construct one; other ranks log nothing.
    """

    def __init__(self, output_dir: Path, loggers: Iterable[str], *, resume_step: int = 0, sinks: list | None = None):
        output_dir.mkdir(parents=True, exist_ok=True)
        self.path = output_dir / "metrics.jsonl"
        self._drop_steps_after(resume_step)
        self._file = self.path.open("a", encoding="utf-8")
        self._tensorboard = None
        if "tensorboard" in loggers:
            from torch.utils.tensorboard import SummaryWriter  # optional dependency: gspo[tensorboard]

            self._tensorboard = SummaryWriter(log_dir=str(output_dir / "tensorboard"))
        self.sinks = sinks or []  # wandb / mlflow (gspo.trainer.sinks): log(step, metrics), close()

    def _drop_steps_after(self, step: int) -> None:
        """A resumed run redoes the steps after its checkpoint: forget what the killed run logged for them."""
        if not self.path.is_file():
            return
        lines = self.path.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
        if len(kept) != len(lines):
            self.path.write_text("".join(kept), encoding="utf-8")

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self._file.write(json.dumps({"step": step, **metrics}, sort_keys=True) + "\n")
        self._file.flush()
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
