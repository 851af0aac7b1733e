"""The embedded default: `gspo train` with no arguments learns addition on CPU."""

from __future__ import annotations

import json

from transformers import AutoModelForCausalLM, AutoTokenizer

from gspo.config import load_config
from gspo.trainer import Trainer
from tests.test_config import SEED_OVERRIDES


def _val_curve(run_dir) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [row["val/acc_mean"] for row in rows if "val/acc_mean" in row]


def test_default_config_learns_within_20_steps(tmp_path):
    # benchmarks/default_run.py measures the full default (150 steps); 20 steps already show the climb.
    cfg = load_config(None, [f"trainer.default_local_dir={tmp_path}", "trainer.total_training_steps=20",
                             "trainer.test_freq=20", "trainer.logger=[]"])
    Trainer(cfg).fit()
    start, end = _val_curve(tmp_path)
    assert 0.2 <= start <= 0.5  # the shipped warm start is partly right
    assert end - start >= 0.10, (start, end)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "final_model")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "final_model")
    out = model.generate(tokenizer("12+30=", return_tensors="pt").input_ids, max_new_tokens=5, do_sample=False,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    assert tokenizer.decode(out[0, 6:], skip_special_tokens=True).isdigit()


def test_seed_override_line_trains_on_the_embedded_task(tmp_path):
    cfg = load_config(None, [*SEED_OVERRIDES, f"trainer.default_local_dir={tmp_path}", "trainer.logger=[]",
                             "trainer.val_before_train=false", "trainer.test_freq=-1"])
    Trainer(cfg).fit()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == list(range(1, 11))
    assert all(row["train/num_gen_batches"] >= 1 and row["train/kept_prompts"] >= 16 for row in rows)
    # train_batch_size 16 = ppo_mini_batch_size 16: one on-policy update per step, so every ratio is exactly 1.
    assert all(row["actor/seq_importance_ratio"] == 1.0 and row["actor/pg_clipfrac"] == 0.0 for row in rows)
