"""The shared ``--quick`` settings: seconds-long smoke runs of the benchmarks (run by tests/benchmarks)."""

from __future__ import annotations

from pathlib import Path


def tiny_val_file(folder: Path, rows: int = 4) -> Path:
    """The first ``rows`` embedded validation prompts, so a quick run's validation takes a fraction of a second."""
    from gspo.resources import resolve_path

    lines = resolve_path("embedded://addition/val.jsonl").read_text().splitlines()[:rows]
    path = folder / "val_quick.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def quick_overrides(folder: Path) -> list[str]:
    """`gspo train` overrides for a 1-step run on the embedded task: 2 prompts x 2 responses, 4 validation prompts."""
    return ["trainer.total_training_steps=1", "data.train_batch_size=2", "data.gen_batch_size=2",
            "actor_rollout_ref.rollout.n=2", "actor_rollout_ref.actor.ppo_mini_batch_size=2",
            "algorithm.filter_groups.enable=false", f"data.val_files=[{tiny_val_file(folder)}]",
            "trainer.device=cpu"]
