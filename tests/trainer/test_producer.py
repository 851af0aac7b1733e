"""The seam between producing a train batch and updating on it: any BatchProducer can feed the trainer."""

from __future__ import annotations

import copy
import json

import torch

from gspo.trainer import RolloutBatch, Trainer


class ReplayProducer:
    """Hands out one recorded train batch and records what the trainer tells it."""

    def __init__(self, batch: RolloutBatch, metrics: dict[str, float]):
        self.batch, self.metrics = batch, metrics
        self.calls: list[str] = []

    def produce(self, step: int) -> tuple[RolloutBatch, dict[str, float]]:
        self.calls.append(f"produce({step})")
        return copy.deepcopy(self.batch), dict(self.metrics)

    def before_update(self) -> None:
        self.calls.append("before_update")

    def weights_changed(self) -> None:
        self.calls.append("weights_changed")

    def update_metrics(self) -> dict[str, float]:
        return {}

    def state_dict(self) -> tuple[dict, dict[str, torch.Tensor]]:
        return {"replayed": len(self.calls)}, {}

    def load_state_dict(self, state: dict, tensors: dict[str, torch.Tensor]) -> None:
        raise AssertionError("not resumed in this test")


def test_a_replayed_batch_gives_the_update_the_synchronous_producer_gives(make_config, tmp_path):
    overrides = ("algorithm.filter_groups.enable=false", "data.train_batch_size=8", "actor_rollout_ref.rollout.n=8",
                 "actor_rollout_ref.actor.ppo_mini_batch_size=4", "actor_rollout_ref.actor.optim.lr=5e-2")
    straight = Trainer(make_config(*overrides))
    expected = straight.train_step()

    replayed = Trainer(make_config(*overrides, f"trainer.default_local_dir={tmp_path / 'replayed'}"))
    producer = ReplayProducer(*replayed.producer.produce(0))
    replayed.producer = producer
    replayed.engine.generate = None  # the update never generates
    metrics = replayed.train_step()

    assert producer.calls == ["produce(0)", "before_update", "weights_changed"]
    for (name, value), other in zip(straight.model.named_parameters(), replayed.model.parameters()):
        assert torch.equal(value, other), name
    for name in ("actor/pg_loss", "actor/pg_clipfrac", "actor/grad_norm", "actor/lr", "train/trained_tokens"):
        assert metrics[name] == expected[name], name
    replayed.global_step += 1
    checkpoint = replayed.save_checkpoint()
    assert json.loads((checkpoint / "trainer_state.json").read_text())["replayed"] == 3  # the producer's state
