"""Math reward throughput: answers/s scoring a rollout batch through RewardManager with the math-verify pool.

Builds batches of ``--prompts`` x ``--n`` responses (default 48 x 16 = 768, a DAPO-sized step) with random
ground truths from MATH-style templates (integers, fractions, radicals, pi, intervals, sets, polynomials) and
responses that end in the exact answer (40 %), an equivalent form (20 %), a wrong answer (30 %) or no answer
(10 %, a cut response), after ~1,000 characters of reasoning. Every repeat draws new answers, so the workers'
parse caches help only as much as they would across training steps. Mixes:

    math         the template mix above (data_source HuggingFaceH4/MATH-500)
    dapo         integer answers on an "Answer:" line (math_dapo): mostly settled without math-verify
    distinct     every answer a different radical expression (no cache, no shortcut): the worst case
    pathological the math mix with one answer in 96 (8 of 768) that takes math-verify's parser ~10 CPU-s: each is
                 stopped at the deadline and scored as a reward error

Prints one JSON line per mix: wall seconds (median over repeats), answers/s, CPU seconds of the trainer process and
the workers together (on a shared machine wall time measures the load; ``cpu_s`` / workers is the idle-machine wall
time when the work spreads evenly), errors, workers killed; first a line with the pool's start-up time.

    python benchmarks/math_reward.py [--prompts 48] [--n 16] [--repeats 3] [--workers N] [--timeout-s 2]
    python benchmarks/math_reward.py --quick     # 4 x 8 responses, 1 repeat: a smoke test of this script
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time

FILLER = ("We expand both sides and collect terms. Substituting the constraint gives a quadratic whose "
          "discriminant is a perfect square, so the roots are rational. ") * 7
SLOW = "(" * 40 + "1" + ")" * 40
PATHOLOGICAL_EVERY = 96  # one answer in 96: 8 in a 768-response batch


def _template(rng: random.Random) -> tuple[str, list[str], str]:
    """(ground truth, equivalent forms, a wrong answer) of one random MATH-style answer."""
    a, b, k = rng.randint(1, 40), rng.randint(2, 40), rng.randint(2, 9)
    kind = rng.choice(["int", "frac", "sqrt", "pi", "interval", "set", "poly"])
    if kind == "int":
        return str(a * b), [f"{a * b}.0", f"{a * b}"], str(a * b + 1)
    if kind == "frac":
        return rf"\frac{{{a}}}{{{b}}}", [rf"\dfrac{{{a}}}{{{b}}}", f"{a}/{b}", rf"\frac{{{2 * a}}}{{{2 * b}}}"], \
            rf"\frac{{{a + 1}}}{{{b}}}"
    if kind == "sqrt":
        m = rng.choice([2, 3, 5, 6, 7, 10, 11])
        return rf"{k}\sqrt{{{m}}}", [rf"\sqrt{{{k * k * m}}}"], rf"{k + 1}\sqrt{{{m}}}"
    if kind == "pi":
        return rf"\frac{{{a}\pi}}{{{b}}}", [rf"\frac{{{a}}}{{{b}}}\pi"], rf"\frac{{{a}\pi}}{{{b + 1}}}"
    if kind == "interval":
        return f"[{a}, {a + b})", [f"[{a},{a + b})"], f"({a}, {a + b}]"
    if kind == "set":
        return rf"\{{{a}, {a + b}\}}", [rf"\{{{a + b}, {a}\}}"], rf"\{{{a}, {a + b + 1}\}}"
    return f"(x+{a})^2", [f"x^2+{2 * a}x+{a * a}"], f"x^2+{a * a}"


def make_batch(mix: str, prompts: int, n: int, seed: int) -> tuple[list[str], list[str], list[str]]:
    """(responses, ground truths, data sources) of prompts * n responses."""
    rng = random.Random(seed)
    responses, gts = [], []
    for p in range(prompts):
        if mix == "dapo":
            value = rng.randint(1, 10_000)
            gt, forms, wrong = str(value), [str(value)], str(value + rng.randint(1, 9))
        else:
            gt, forms, wrong = _template(rng)
        for i in range(n):
            if mix == "distinct":
                answer = rf"\frac{{{p * n + i + 1}\sqrt{{{rng.choice([2, 3, 5])}}}}}{{{rng.randint(2, 99)}}}"
            else:
                roll = rng.random()
                answer = gt if roll < 0.4 else rng.choice(forms) if roll < 0.6 else wrong if roll < 0.9 else None
            if mix == "pathological" and (p * n + i) % PATHOLOGICAL_EVERY == 0:
                answer = SLOW
            if answer is None:
                text = FILLER + r"so the answer is \boxed{" + gt[: len(gt) // 2]  # cut mid-box
            elif mix == "dapo":
                text = FILLER + f"\nAnswer: {answer}"
            else:
                text = FILLER + rf"Therefore the answer is $\boxed{{{answer}}}$."
            responses.append(text)
            gts.append(gt)
    source = "math_dapo" if mix == "dapo" else "HuggingFaceH4/MATH-500"
    return responses, gts, [source] * len(responses)


def workers_cpu_s(pool) -> float:
    """CPU seconds (user + system) used so far by the pool's live workers (Linux /proc; 0 elsewhere)."""
    total = 0.0
    for process in pool.processes:
        try:
            with open(f"/proc/{process.pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=48)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None, help="verifier processes (default: this process's "
                        "share of the cores, as reward_model.math_workers=0)")
    parser.add_argument("--timeout-s", type=float, default=None, help="per-answer deadline, CPU s (default 2)")
    parser.add_argument("--mixes", nargs="+", default=["math", "dapo", "distinct", "pathological"])
    parser.add_argument("--quick", action="store_true", help="4 x 8 responses, 1 repeat, 1 s deadline")
    args = parser.parse_args()
    if args.quick:
        args.prompts, args.n, args.repeats = 4, 8, 1
        args.timeout_s = args.timeout_s or 1.0

    from gspo.rewards import RewardManager
    from gspo.rewards.math import VerifierPool, set_shared_pool
    from gspo.rewards.math.pool import DEFAULT_TIMEOUT_S
    from gspo.rewards.workers import default_num_workers

    workers, timeout_s = args.workers or default_num_workers(), args.timeout_s or DEFAULT_TIMEOUT_S
    start = time.perf_counter()
    pool = VerifierPool(workers, timeout_s)
    pool.verify([("1", "1")])  # waits until every worker is up
    set_shared_pool(pool)
    print(json.dumps({"pool_start_s": round(time.perf_counter() - start, 3), "workers": workers,
                      "timeout_s": timeout_s, "cpus": os.cpu_count()}), flush=True)
    manager = RewardManager(on_error="zero")
    for mix in args.mixes:
        walls, cpus, errors, accs, killed = [], [], [], [], pool.num_killed
        for repeat in range(args.repeats):
            responses, gts, sources = make_batch(mix, args.prompts, args.n, seed=1000 * repeat + len(mix))
            tick, cpu = time.perf_counter(), time.process_time() + workers_cpu_s(pool)
            scored = manager.score(responses, None, gts, sources, [None] * len(responses))
            walls.append(time.perf_counter() - tick)
            # a killed worker takes its CPU count with it: no total then
            cpus.append(None if pool.num_killed > killed else time.process_time() + workers_cpu_s(pool) - cpu)
            errors.append(scored.num_errors)
            accs.append(scored.acc.mean().item())
        wall = statistics.median(walls)
        print(json.dumps({"mix": mix, "responses": len(responses), "wall_s": round(wall, 3),
                          "answers_per_s": round(len(responses) / wall, 1), "walls_s": [round(w, 3) for w in walls],
                          # CPU seconds (trainer + workers): what the batch costs on an idle machine, whatever the load
                          "cpu_s": None if None in cpus else round(statistics.median(cpus), 3),
                          "errors": errors, "acc_mean": round(statistics.mean(accs), 3),
                          "workers_killed": pool.num_killed - killed}), flush=True)
    pool.close()


if __name__ == "__main__":
    main()
