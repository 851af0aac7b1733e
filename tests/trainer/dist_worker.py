"""Run by tests/trainer/test_distributed.py, under torchrun or as one process: train, and record the kept groups.

``python dist_worker.py OUT.json [--preset NAME] key=value ...`` writes {"kept": [[prompt index per trained row]
per step]}.
"""

from __future__ import annotations

import json
import sys


def main(out: str, overrides: list[str]) -> None:
    from gspo.config import load_config
    from gspo.trainer import Trainer

    preset = "auto"
    if overrides[:1] == ["--preset"]:
        preset, overrides = overrides[1], overrides[2:]
    trainer = Trainer(load_config(None, overrides, preset=preset))
    kept: list[list[int]] = []
    produce = trainer.producer.produce

    def recording(step):
        batch, metrics = produce(step)
        kept.append(batch.prompt_index.tolist())
        return batch, metrics

    trainer.producer.produce = recording
    trainer.fit()
    if trainer.is_main:
        with open(out, "w") as handle:
            json.dump({"kept": kept, "world_size": trainer.dist.world_size}, handle)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
