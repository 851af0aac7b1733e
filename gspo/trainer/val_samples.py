"""``trainer.log_val_generations``: a few validation samples per validation, on the console and in a file.

The first N validation prompts (the same ones every time, so their answers can be compared across steps) with
their response and score, printed after the step's summary line and appended to ``RUN_DIR/val_generations.jsonl``
(one JSON object per sample: step, prompt, response, score, acc, ground_truth). Rank 0 only.
"""

from __future__ import annotations

import json
from pathlib import Path

from tqdm.auto import tqdm


class ValidationSamples:
    def __init__(self, output_dir: Path, count: int) -> None:
        self.path = output_dir / "val_generations.jsonl"
        self.count = count

    def write(self, step: int, prompts: list, batch, tokenizer) -> list[dict]:
        """Log the first ``count`` samples of a validation batch (``batch`` rows in prompt order, n per prompt)."""
        if self.count <= 0 or not prompts:
            return []
        n = batch.num_sequences // len(prompts)
        rows = list(range(min(self.count, batch.num_sequences)))
        texts = tokenizer.batch_decode(batch.response_ids[rows], skip_special_tokens=True)
        samples = [{"step": step, "prompt": prompts[row // n].prompt_text, "response": text,
                    "score": float(batch.seq_reward[row]), "acc": float(batch.acc[row]),
                    "ground_truth": prompts[row // n].ground_truth} for row, text in zip(rows, texts)]
        with self.path.open("a", encoding="utf-8") as sink:
            for sample in samples:
                sink.write(json.dumps(sample, ensure_ascii=False) + "\n")
        for sample in samples:
            tqdm.write(f"[val sample, step {step}] score={sample['score']:.3f} prompt={sample['prompt']!r} "
                       f"response={sample['response']!r} ground_truth={sample['ground_truth']!r}")
        return samples
