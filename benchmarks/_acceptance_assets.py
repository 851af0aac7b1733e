"""What the GPU acceptance checks build for themselves (nothing is downloaded): small random Qwen2 folders, the
addition prompts, a reward that splits groups, and the verdict each check returns."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

# A Qwen2 small enough to build in a second and, on CUDA, big enough for the kernels vLLM and FlashAttention pick
# (head_dim 64); on CPU the smallest that runs.
ADDITION_MODEL_DIMS = {
    "cuda": dict(hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2),
    "cpu": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2),
}


@dataclass
class CheckContext:
    """What a check is given: its scratch folder, the device it runs on, the bf16 peak for MFU (TFLOP/s)."""

    folder: Path
    device: str  # "cuda" or "cpu" (a dry run)
    peak_tflops: float | None = None

    @property
    def on_cuda(self) -> bool:
        return self.device == "cuda"


@dataclass
class Verdict:
    """What a check measured, and each of its pass conditions that did not hold (none: the check passes)."""

    measured: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def expect(self, condition: bool, problem: str) -> bool:
        if not condition:
            self.problems.append(problem)
        return condition

    def as_dict(self) -> dict:
        return {**self.measured, "problems": self.problems}


def is_finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def build_addition_model(folder: Path, device: str, dtype: str = "float32", **overrides) -> Path:
    """A random Qwen2 (``ADDITION_MODEL_DIMS[device]``, ``overrides`` on top) with the embedded character
    tokenizer, saved in ``dtype`` (``"bfloat16"``: a bf16 checkpoint, as real ones are)."""
    import torch
    from transformers import Qwen2ForCausalLM

    from gspo.tasks.addition import build_addition_model_config, build_addition_tokenizer

    tokenizer = build_addition_tokenizer()
    config = build_addition_model_config(len(tokenizer), **{**ADDITION_MODEL_DIMS[device], **overrides})
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).to(getattr(torch, dtype)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_addition_data(folder: Path, num_train: int = 64) -> tuple[Path, Path]:
    """``num_train`` train and 8 val addition prompts (JSONL, data_source addition): one-digit terms for up to 64
    train prompts, larger terms beyond."""
    folder.mkdir(parents=True, exist_ok=True)
    side = 10 if num_train <= 64 else math.isqrt(num_train + 8) + 1
    rows = [{"prompt": f"{a}+{b}=", "ground_truth": str(a + b), "data_source": "addition"}
            for a in range(side) for b in range(side)]
    train, val = folder / "train.jsonl", folder / "val.jsonl"
    train.write_text("".join(json.dumps(row) + "\n" for row in rows[:num_train]))
    val.write_text("".join(json.dumps(row) + "\n" for row in rows[num_train:num_train + 8]))
    return train, val


def write_parity_reward(folder: Path) -> Path:
    """A reward a random policy earns about half the time (odd response length), so groups are not all equal and
    dynamic sampling keeps them."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "parity_reward.py"
    path.write_text("def compute_score(response_text, ground_truth, extra_info):\n"
                    "    return float(len(response_text) % 2)\n")
    return path


def read_metrics(run_dir: Path) -> list[dict]:
    """The run's metrics.jsonl rows ([] when there is none)."""
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def training_rows(rows: list[dict]) -> list[dict]:
    """The rows of training steps (step 0 is the validation before training)."""
    return [row for row in rows if row.get("step", 0) > 0]


def expect_finite_updates(verdict: Verdict, rows: list[dict], steps: int) -> None:
    """``steps`` training rows, each with a finite policy loss and gradient norm."""
    trained = training_rows(rows)
    verdict.expect([row["step"] for row in trained] == list(range(1, steps + 1)),
                   f"metrics.jsonl has steps {[row['step'] for row in trained]}, expected 1..{steps}")
    for row in trained:
        verdict.expect(is_finite(row.get("actor/pg_loss")) and is_finite(row.get("actor/grad_norm")),
                       f"step {row['step']}: pg_loss {row.get('actor/pg_loss')}, "
                       f"grad_norm {row.get('actor/grad_norm')} (expected finite)")
