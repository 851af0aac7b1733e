"""GPU acceptance: whether this code trains on a CUDA machine, in one command of under 10 minutes on one
H200-class GPU. Prints one JSON line per check and a summary line; exits 1 when any check failed.

    python benchmarks/gpu_acceptance.py                       # every check (pip install -e '.[vllm]' first)
    python benchmarks/gpu_acceptance.py --peak-tflops 989     # MFU against this bf16 peak (else looked up by name)
    python benchmarks/gpu_acceptance.py --checks lora_bf16,verl_gspo_line
    python benchmarks/gpu_acceptance.py --dry-run             # the CPU plan (automatic without CUDA)

Checks, in order: ``bf16_step`` (benchmarks/gpu_step.py's ~0.5B model, the update's MFU), ``fsdp2_nccl``,
``vllm_cycles`` (three sleep / push / wake / generate cycles), ``lora_bf16``, ``recipe_3b_shapes`` and
``verl_gspo_line``; docs/gpu_acceptance.md says what each measures and what passing means. Each runs in its own
process (its own CUDA context, so memory readings are its own, and a crash fails that check alone) within a share
of the overall time limit. A dry run skips the checks that need CUDA ("status": "skipped", "reason": "needs CUDA")
and runs the others on the CPU with tiny shapes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
ROOT = BENCHMARKS.parent
sys.path[:0] = [str(BENCHMARKS), str(ROOT)]

# check -> (module:function, needs CUDA, its time limit on a GPU in seconds)
CHECKS = {
    "bf16_step": ("_acceptance_training:check_bf16_step", True, 180),
    "fsdp2_nccl": ("_acceptance_devices:check_fsdp2_nccl", True, 90),
    "vllm_cycles": ("_acceptance_devices:check_vllm_cycles", True, 150),
    "lora_bf16": ("_acceptance_training:check_lora_bf16", False, 90),
    "recipe_3b_shapes": ("_acceptance_training:check_recipe_3b_shapes", False, 180),
    "verl_gspo_line": ("_acceptance_training:check_verl_gspo_line", False, 150),
}
TOTAL_LIMIT_S = 570  # every check together, under the 10 minutes promised
CPU_CHECK_LIMIT_S = 300  # one check of a dry run (tiny shapes; the CPU may be shared)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true",
                        help="the CPU plan even where CUDA is present: checks that need it are skipped")
    parser.add_argument("--checks", default=",".join(CHECKS), help=f"comma-separated subset of {', '.join(CHECKS)}")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the GPU's dense bf16 peak in TFLOP/s for the MFU (default: looked up by device name)")
    parser.add_argument("--time-limit-s", type=float, default=TOTAL_LIMIT_S, help="for every check together")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)  # internal: run one check here
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    parser.add_argument("--folder", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.selected = [name for name in args.checks.split(",") if name]
    unknown = [name for name in args.selected if name not in CHECKS]
    if unknown:
        parser.error(f"--checks: unknown {', '.join(unknown)}; choose from {', '.join(CHECKS)}")
    if args.peak_tflops is not None and args.peak_tflops <= 0:
        parser.error("--peak-tflops must be > 0")
    return args


def run_child(args: argparse.Namespace) -> int:
    """Run check ``args.child`` in this process and write its verdict (JSON) to ``args.result``."""
    import importlib

    from _acceptance_assets import CheckContext

    module, _, function = CHECKS[args.child][0].partition(":")
    check = getattr(importlib.import_module(module), function)
    folder = Path(args.folder)
    folder.mkdir(parents=True, exist_ok=True)
    verdict = check(CheckContext(folder=folder, device=args.device, peak_tflops=args.peak_tflops))
    Path(args.result).write_text(json.dumps(verdict.as_dict()))
    return 0


def run_check(name: str, scratch: Path, device: str, limit_s: float, args: argparse.Namespace) -> dict:
    """One check in its own process: its JSON line (status pass / fail, seconds, what it measured)."""
    result = scratch / f"{name}.json"
    command = [sys.executable, __file__, "--child", name, "--device", device, "--folder", str(scratch / name),
               "--result", str(result), *(["--peak-tflops", str(args.peak_tflops)] if args.peak_tflops else [])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    # Its own process group, so that a check past its time is stopped with everything it started (gpu_step.py's
    # engine processes, torchrun's ranks) before the next check takes the GPU.
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        stderr = proc.communicate(timeout=limit_s)[1]
        error = None if proc.returncode == 0 else f"exit code {proc.returncode}: {_last_lines(stderr)}"
    except subprocess.TimeoutExpired:
        error = f"timed out after {limit_s:.0f} s"
    finally:
        _stop_group(proc)
    row = {"check": name, "device": device, "seconds": round(time.perf_counter() - start, 1)}
    if error is not None or not result.is_file():
        return {**row, "status": "fail", "error": error or "the check wrote no result"}
    verdict = json.loads(result.read_text())
    return {**row, "status": "fail" if verdict["problems"] else "pass", **verdict}


def _stop_group(proc: subprocess.Popen) -> None:
    """Kill whatever of the check's process group is still running and reap the check."""
    with contextlib.suppress(ProcessLookupError):  # else the check and everything it started are gone
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()


def _last_lines(text: str, count: int = 3) -> str:
    return " | ".join(text.strip().splitlines()[-count:])


def device_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name() if device == "cuda" else "cpu"


def main(argv: list[str] | None = None) -> int:
    """0 when no check failed, 1 otherwise; 2 on bad arguments."""
    args = parse_args(argv)
    if args.child:
        return run_child(args)
    import torch

    cuda = torch.cuda.is_available() and not args.dry_run
    device = "cuda" if cuda else "cpu"
    skip_reason = "needs CUDA" + (" (--dry-run)" if args.dry_run else " (torch.cuda.is_available() is False)")
    deadline = time.monotonic() + args.time_limit_s
    rows = []
    with tempfile.TemporaryDirectory(prefix="gspo_acceptance_") as tmp:
        for name in args.selected:
            _, needs_cuda, gpu_limit_s = CHECKS[name]
            left = deadline - time.monotonic()
            if needs_cuda and not cuda:
                row = {"check": name, "status": "skipped", "reason": skip_reason}
            elif left < 5:
                row = {"check": name, "status": "fail", "error": f"not run: --time-limit-s {args.time_limit_s:.0f} "
                                                                 f"was spent by the checks before it"}
            else:
                row = run_check(name, Path(tmp), device, min(gpu_limit_s if cuda else CPU_CHECK_LIMIT_S, left), args)
            rows.append(row)
            print(json.dumps(row), flush=True)
    by_status = {status: [row["check"] for row in rows if row["status"] == status]
                 for status in ("pass", "fail", "skipped")}
    print(json.dumps({"summary": "fail" if by_status["fail"] else "pass", "dry_run": not cuda,
                      "device": device_name(device), "passed": by_status["pass"], "failed": by_status["fail"],
                      "skipped": by_status["skipped"],
                      "seconds": round(args.time_limit_s - (deadline - time.monotonic()), 1)}), flush=True)
    return 1 if by_status["fail"] else 0


if __name__ == "__main__":  # vLLM's engine may start helper processes that re-import this file
    sys.exit(main())
