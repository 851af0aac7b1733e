"""Bytes the ranks exchange per training step, against batch size and response length, on 2 gloo ranks.

Two exchanges grow with the batch: gathering each rank's generated and scored rows
(:meth:`gspo.trainer.generation.GroupGenerator.generate_and_score`), and the rollout/trainer mismatch and
importance-weight metrics of the update (:class:`gspo.trainer.update.PolicyUpdate`). Both run here on synthetic
rows (no model: generation and scoring are stubbed), with the collectives under ``gspo.distributed`` counted:
every ``torch.distributed`` call a :class:`~gspo.distributed.DistContext` collective makes goes through a
counter that adds what one rank receives (tensor all-gathers: world_size x the tensor; all-reduces: the tensor;
object gathers and broadcasts: the pickled objects).

Prints one JSON line per (prompts, response length) with rank 0's bytes for each exchange (``*_bytes``: all,
``*_pickled_bytes``: the part that went through pickled-object collectives). Whichever ``gspo`` is
importable is measured, so running it once with an earlier tree on ``PYTHONPATH`` gives the before numbers:

    PYTHONPATH=. python benchmarks/comm_bytes.py [--prompts 8 32 128] [--response-lengths 256 1024] [--n 8]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import tempfile
from types import SimpleNamespace

import torch
import torch.distributed
import torch.multiprocessing as mp

PROMPT_LENGTH = 64


class CountingCollectives:
    """Stands in for ``torch.distributed`` inside :mod:`gspo.distributed`: the same calls, with the bytes one rank
    receives added to ``received``, those of pickled objects also to ``pickled``."""

    def __init__(self):
        self.received = 0
        self.pickled = 0

    def __getattr__(self, name):
        return getattr(torch.distributed, name)

    def all_gather(self, outputs, tensor, *args, **kwargs):
        self.received += len(outputs) * tensor.numel() * tensor.element_size()
        return torch.distributed.all_gather(outputs, tensor, *args, **kwargs)

    def all_reduce(self, tensor, *args, **kwargs):
        self.received += tensor.numel() * tensor.element_size()
        return torch.distributed.all_reduce(tensor, *args, **kwargs)

    def all_gather_object(self, outputs, obj, *args, **kwargs):
        result = torch.distributed.all_gather_object(outputs, obj, *args, **kwargs)
        self._add_pickled(sum(len(pickle.dumps(part)) for part in outputs))
        return result

    def broadcast_object_list(self, objects, *args, **kwargs):
        result = torch.distributed.broadcast_object_list(objects, *args, **kwargs)
        self._add_pickled(len(pickle.dumps(objects)))
        return result

    def _add_pickled(self, num_bytes: int) -> None:
        self.received += num_bytes
        self.pickled += num_bytes

    def snapshot(self) -> tuple[int, int]:
        return self.received, self.pickled

    def since(self, snapshot: tuple[int, int]) -> dict[str, int]:
        """{"bytes", "pickled_bytes"} received after ``snapshot``."""
        return {"bytes": self.received - snapshot[0], "pickled_bytes": self.pickled - snapshot[1]}


def synthetic_rows(prompts: int, n: int, response_length: int, seed: int):
    """``prompts`` x ``n`` scored rows with responses of random length up to ``response_length`` tokens."""
    from gspo.trainer.batch import RolloutBatch

    generator = torch.Generator().manual_seed(seed)
    rows = prompts * n
    lengths = torch.randint(1, response_length + 1, (rows,), generator=generator)
    response_mask = (torch.arange(response_length) < lengths[:, None]).float()
    return RolloutBatch(
        prompt_ids=torch.randint(0, 32000, (rows, PROMPT_LENGTH), generator=generator),
        prompt_mask=torch.ones(rows, PROMPT_LENGTH, dtype=torch.long),
        response_ids=torch.randint(0, 32000, (rows, response_length), generator=generator) * response_mask.long(),
        response_mask=response_mask,
        group_ids=torch.arange(prompts).repeat_interleave(n), prompt_index=torch.arange(prompts).repeat_interleave(n),
        generation_step=torch.zeros(rows, dtype=torch.long),
        rollout_log_probs=-torch.rand(rows, response_length, generator=generator) * response_mask)


def generation_bytes(dist_context, counter: CountingCollectives, prompts: int, n: int,
                     response_length: int) -> dict[str, int]:
    """Bytes received while every rank's share of ``prompts`` prompt groups is gathered onto every rank."""
    from gspo.rollout import SamplingParams
    from gspo.trainer.generation import GroupGenerator

    class StubbedGenerator(GroupGenerator):
        def generate(self, prompts, group_ids, params, *, step):
            return synthetic_rows(len(prompts), params.n, response_length, seed=int(group_ids[0]))

        def score(self, batch, prompts):
            batch.seq_reward = batch.seq_final_reward = batch.acc = torch.rand(batch.num_sequences)
            return {"reward/errors": 0.0}

    engine = SimpleNamespace(resume_memory=lambda: None, release_memory=lambda: None, eos_token_ids=[0])
    generator = StubbedGenerator(engine=engine, policy=None, tokenizer=SimpleNamespace(pad_token_id=0), rewards=None,
                                 device=torch.device("cpu"), dist=dist_context, seed=0)
    before = counter.snapshot()
    batch, _ = generator.generate_and_score(list(range(prompts)), SamplingParams(n=n, max_new_tokens=response_length),
                                            torch.arange(prompts), step=1)
    assert batch.num_sequences == prompts * n
    return counter.since(before)


def metric_bytes(dist_context, counter: CountingCollectives, prompts: int, n: int,
                 response_length: int) -> dict[str, int]:
    """Bytes received while the mismatch and importance-weight metrics of this rank's share of the rows are
    computed over every rank's rows."""
    from gspo.config import ActorConfig, RolloutCorrectionConfig
    from gspo.trainer.update import PolicyUpdate
    from gspo.trainer.update_context import UpdateContext

    start, stop = dist_context.share_bounds(prompts)
    local = synthetic_rows(stop - start, n, response_length, seed=start)
    local.old_log_probs = local.rollout_log_probs + 0.01 * local.response_mask
    context = UpdateContext(model=None, optimizer=None, actor=ActorConfig(), responses_per_prompt=n, temperature=1.0,
                            max_response_length=response_length, dist=dist_context,
                            rollout_correction=RolloutCorrectionConfig(rollout_is="geometric"))
    before = counter.snapshot()
    metrics = PolicyUpdate(context)._rollout_mismatch(local)
    assert "rollout_corr/rollout_is_mean" in metrics
    return counter.since(before)


def _rank(rank: int, store: str, grid: list[tuple[int, int]], n: int, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    import gspo.distributed
    from gspo.distributed import DistContext

    counter = CountingCollectives()
    gspo.distributed.dist = counter
    dist_context = DistContext(rank=rank, world_size=2)
    rows = []
    for prompts, response_length in grid:
        gather = generation_bytes(dist_context, counter, prompts, n, response_length)
        metrics = metric_bytes(dist_context, counter, prompts, n, response_length)
        rows.append({"prompts": prompts, "n": n, "rows": prompts * n, "response_length": response_length,
                     "generation_gather_bytes": gather["bytes"], "generation_pickled_bytes": gather["pickled_bytes"],
                     "metric_bytes": metrics["bytes"], "metric_pickled_bytes": metrics["pickled_bytes"]})
    if rank == 0:
        with open(out, "w") as f:
            json.dump(rows, f)
    torch.distributed.barrier()  # neither rank tears its connections down while the other still uses them
    torch.distributed.destroy_process_group()


def measure(grid: list[tuple[int, int]], n: int = 8) -> list[dict]:
    """Rank 0's bytes received for each (prompts, response length) of ``grid``, on 2 gloo ranks."""
    with tempfile.TemporaryDirectory() as folder:
        store, out = os.path.join(folder, "store"), os.path.join(folder, "rows.json")
        mp.spawn(_rank, args=(store, grid, n, out), nprocs=2)
        with open(out) as f:
            return json.load(f)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--response-lengths", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--n", type=int, default=8)
    args = parser.parse_args()
    import gspo

    grid = [(p, r) for p in args.prompts for r in args.response_lengths]
    for row in measure(grid, args.n):
        print(json.dumps({**row, "gspo": os.path.dirname(os.path.dirname(os.path.abspath(gspo.__file__))),
                          "machine": f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}"}))


if __name__ == "__main__":
    main()
